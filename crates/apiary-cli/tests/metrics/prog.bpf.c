/* The program of tests/metrics.rs: on getppid() from the target process, counts calls per
 * process (hash map keyed by pid/comm), the log2 of each call's sequence number (array
 * indexed by slot), all calls in a per-CPU array, and sends each call as a ring buffer event
 * whose struct is declared in prog.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "prog.h"

#define MAX_SLOTS 16

struct proc_key {
    __u32 pid;
    char comm[16];
};

struct call_stats {
    __u64 calls;
    __u64 depth;
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, struct proc_key);
    __type(value, struct call_stats);
} counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, MAX_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} hist SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} totals SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} events SEC(".maps");

const volatile __u32 target_tgid = 0;

static __always_inline __u32 log2_u64(__u64 v)
{
    __u32 r = 0;
    while (v > 1 && r < 63) {
        v >>= 1;
        r++;
    }
    return r;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid != target_tgid)
        return 0;
    struct proc_key k = {};
    k.pid = tgid;
    bpf_get_current_comm(k.comm, sizeof(k.comm));
    struct call_stats zero = {}, *v;
    bpf_map_update_elem(&counts, &k, &zero, BPF_NOEXIST);
    v = bpf_map_lookup_elem(&counts, &k);
    if (!v)
        return 0;
    __u64 seq = __sync_fetch_and_add(&v->calls, 1) + 1;
    v->depth = seq % 4;
    __u32 slot = log2_u64(seq);
    if (slot >= MAX_SLOTS)
        slot = MAX_SLOTS - 1;
    __u64 *h = bpf_map_lookup_elem(&hist, &slot);
    if (h)
        __sync_fetch_and_add(h, 1);
    __u32 zero_key = 0;
    __u64 *t = bpf_map_lookup_elem(&totals, &zero_key);
    if (t)
        *t += 1;
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = tgid;
    e->seq = seq;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    bpf_ringbuf_submit(e, 0);
    return 0;
}

/* A second program that uses only one of the maps: the daemon still exports all of the
 * object's maps once (the target never calls getpid()). */
SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
        return 0;
    __u32 zero_key = 0;
    __u64 *t = bpf_map_lookup_elem(&totals, &zero_key);
    if (t)
        *t += 1;
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
