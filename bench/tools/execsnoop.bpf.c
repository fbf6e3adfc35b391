// Benchmark tool: exec() tracing with CO-RE reads of the task and the exec'd file name.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "execsnoop.h"

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} events SEC(".maps");

const volatile int target_uid = -1;

SEC("tracepoint/sched/sched_process_exec")
int on_exec(struct trace_event_raw_sched_process_exec *ctx)
{
    __u64 uid_gid = bpf_get_current_uid_gid();
    if (target_uid >= 0 && (__u32)uid_gid != (__u32)target_uid)
        return 0;
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = BPF_CORE_READ(t, real_parent, tgid);
    e->uid = (__u32)uid_gid;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    unsigned int off = ctx->__data_loc_filename & 0xFFFF;
    long n = bpf_probe_read_str(e->args, ARGS_SIZE, (void *)ctx + off);
    e->args_size = n > 0 ? n : 0;
    e->args_count = 1;
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
