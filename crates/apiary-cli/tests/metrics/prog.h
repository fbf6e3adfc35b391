#ifndef PROG_H
#define PROG_H
struct event {
    unsigned int pid;
    unsigned int seq;
    char comm[16];
};
#endif
