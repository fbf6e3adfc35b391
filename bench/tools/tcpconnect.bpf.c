// Benchmark tool: IPv4 connect() tracing with kprobes, a per-thread socket map and a perf array.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcpconnect.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct sock *);
} sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
    __uint(key_size, sizeof(__u32));
    __uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(enter_connect, struct sock *sk)
{
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    bpf_map_update_elem(&sockets, &tid, &sk, BPF_ANY);
    return 0;
}

SEC("kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(exit_connect, int ret)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    struct sock **skp = bpf_map_lookup_elem(&sockets, &tid);
    if (!skp)
        return 0;
    struct sock *sk = *skp;
    bpf_map_delete_elem(&sockets, &tid);
    if (ret)
        return 0;
    struct event e = {};
    e.pid = id >> 32;
    e.saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
    e.daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
    e.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
    e.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
    bpf_get_current_comm(e.comm, sizeof(e.comm));
    bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
