// Fixture for apiary-core's elf.rs/btf.rs unit tests. Rebuild with:
//   clang -target bpf -O2 -g -I/usr/include/x86_64-linux-gnu -c inspect.bpf.c -o inspect.bpf.o
// Deliberately free of bpf_helpers.h / vmlinux.h so it builds with a bare clang.

#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

enum state { STATE_IDLE = 0, STATE_RUNNING = 1, STATE_DONE = 7 };

struct inner {
	u32 a;
	unsigned short b;
};

struct event {
	u32 pid;
	int delta;
	enum state st;
	char comm[16];
	struct inner in;
	u64 counts[3];
	unsigned int flag : 1;
	unsigned int level : 3;
	_Bool ok;
};

struct key {
	u32 pid;
	u32 cpu;
};

struct {
	__uint(type, 27); /* BPF_MAP_TYPE_RINGBUF */
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, 1); /* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 1024);
	__type(key, struct key);
	__type(value, struct event);
	__uint(pinning, 1);
} counts SEC(".maps");

const volatile u32 target_pid = 42;
const volatile char prefix[8] = "abc";
u64 hits = 7;
enum state cur_state = STATE_RUNNING;
u64 total;
struct event scratch;

extern int LINUX_KERNEL_VERSION __attribute__((section(".kconfig"), weak));

char LICENSE[] SEC("license") = "GPL";

static __attribute__((noinline)) int helper(int x)
{
	return x * 3 + (int)target_pid;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int handle_exec(void *ctx)
{
	hits++;
	total += helper((int)hits);
	if (LINUX_KERNEL_VERSION > 0)
		total++;
	scratch.pid = target_pid;
	cur_state = STATE_DONE;
	return prefix[0];
}

SEC("kprobe/do_exit")
int handle_exit(void *ctx)
{
	return 0;
}

SEC("kprobe/do_exit")
int handle_exit2(void *ctx)
{
	total = 0;
	return 1;
}

SEC("xdp")
int xdp_pass(void *ctx)
{
	return 2;
}
