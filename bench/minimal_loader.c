/* The baseline for bench/core.py: the least a libbpf program does to load, attach and keep a
 * tracepoint program (open, load, attach, pin program, maps and link), then exit. */
#include <bpf/libbpf.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s OBJ PROG CATEGORY NAME PIN_DIR\n", argv[0]);
		return 2;
	}
	char path[512];
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj))
		return 1;
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, argv[2]);
	if (!prog)
		return 1;
	struct bpf_link *link = bpf_program__attach_tracepoint(prog, argv[3], argv[4]);
	if (!link)
		return 1;
	snprintf(path, sizeof path, "%s/prog", argv[5]);
	if (bpf_program__pin(prog, path))
		return 1;
	snprintf(path, sizeof path, "%s/maps", argv[5]);
	if (bpf_object__pin_maps(obj, path))
		return 1;
	snprintf(path, sizeof path, "%s/link", argv[5]);
	if (bpf_link__pin(link, path))
		return 1;
	return 0;
}
