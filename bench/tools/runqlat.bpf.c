// Benchmark tool: run-queue latency as a log2 histogram (tp_btf, no events).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define SLOTS 26

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 10240);
    __type(key, __u32);
    __type(value, __u64);
} start SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} hist_slots SEC(".maps");

static __always_inline int enqueue(__u32 pid)
{
    __u64 ts = bpf_ktime_get_ns();
    bpf_map_update_elem(&start, &pid, &ts, BPF_ANY);
    return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_wakeup, struct task_struct *p)
{
    return enqueue(BPF_CORE_READ(p, pid));
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
    __u32 pid = BPF_CORE_READ(next, pid);
    __u64 *tsp = bpf_map_lookup_elem(&start, &pid);
    if (!tsp)
        return 0;
    __u64 delta = (bpf_ktime_get_ns() - *tsp) / 1000;
    bpf_map_delete_elem(&start, &pid);
    __u32 slot = 0;
    while (delta > 1 && slot < SLOTS - 1) {
        delta >>= 1;
        slot++;
    }
    __u64 *c = bpf_map_lookup_elem(&hist_slots, &slot);
    if (c)
        __sync_fetch_and_add(c, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
