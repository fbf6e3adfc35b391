/* One exec: who ran what, with the first arguments (eunomia's header convention). */
#ifndef EXECSNOOP_H
#define EXECSNOOP_H
#define ARGS_SIZE 256
struct event {
    int pid;
    int ppid;
    unsigned int uid;
    int args_count;
    unsigned int args_size;
    char comm[16];
    char args[ARGS_SIZE];
};
#endif
