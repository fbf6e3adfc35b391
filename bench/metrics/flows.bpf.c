/* The program of bench/metrics.py: every getppid() of the target process adds a new key to a
 * hash map of 1,024 (so N calls fill N entries), with two counters per entry, and counts the
 * call in a log2 histogram. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct bench_flow_key {
    __u32 id;
    __u32 pid;
    char comm[16];
};

struct bench_flow_stats {
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct bench_flow_key);
    __type(value, struct bench_flow_stats);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 27);
    __type(key, __u32);
    __type(value, __u64);
} sizes SEC(".maps");

const volatile __u32 target_tgid = 0;
__u32 next_id = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid != target_tgid)
        return 0;
    struct bench_flow_key k = {};
    k.id = __sync_fetch_and_add(&next_id, 1);
    k.pid = tgid;
    bpf_get_current_comm(k.comm, sizeof(k.comm));
    struct bench_flow_stats s = { .packets = k.id + 1, .bytes = (k.id + 1) * 1500 };
    bpf_map_update_elem(&flows, &k, &s, BPF_ANY);
    __u32 slot = 0;
    for (__u64 v = k.id + 1; v > 1 && slot < 26; v >>= 1)
        slot++;
    __u64 *c = bpf_map_lookup_elem(&sizes, &slot);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
