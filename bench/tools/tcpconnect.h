/* One outgoing IPv4 TCP connection attempt. */
#ifndef TCPCONNECT_H
#define TCPCONNECT_H
struct event {
    unsigned int saddr;
    unsigned int daddr;
    unsigned short dport;
    unsigned short lport;
    int pid;
    char comm[16];
};
#endif
