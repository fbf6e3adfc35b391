#!/usr/bin/env python3
"""Profile which functions apiary runs, for the release binary's code layout.

The release link places the functions named in crates/apiary-cli/layout.order first and in that
order (lld's --symbol-ordering-file; see crates/apiary-cli/build.rs), so that the code a daemon
and a command run shares a few hundred pages instead of being spread over the binary's 13 MB of
text: the kernel maps a file's pages 64 kB around each page fault (fault-around), so scattered
code costs resident memory far beyond what runs.

How: with read-ahead off for the binary's block device and the page cache dropped, every text
page a process touches faults on its own, and `bpftrace` records each fault's address. Processes
run with address randomisation off (`setarch -R`), so an address minus the fixed PIE base is the
function's address in the binary's symbol table. Each touched page contributes the functions on
it (a page's other functions may have run without a fault of their own).

The workload: the daemon starting, idling and serving a client's list/load/attach/get/unload;
then one-shot commands (load+attach, list, unload, reconcile, a CO-RE load) in-process and as a
client. Needs root, bpftrace and a release build. Run from the repository root after changes
that move much code:  python3 bench/layout.py   (then rebuild with `cargo build --release`).
"""
import bisect, os, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/apiary")
OUT = os.path.join(ROOT, "crates/apiary-cli/layout.order")
PIE_BASE = 0x555555554000  # where the kernel loads a PIE with randomisation off (x86_64)


def device_readahead(path):
    """The sysfs read_ahead_kb file of the block device holding `path`."""
    dev = os.stat(path).st_dev
    sysdev = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    real = os.path.realpath(sysdev)
    for cand in [real, os.path.dirname(real)]:
        f = os.path.join(cand, "queue/read_ahead_kb")
        if os.path.exists(f):
            return f
    sys.exit(f"no read_ahead_kb for {path}'s device ({real})")


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def text_symbols(binary):
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    syms, seen = [], set()
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tTwW" and int(p[1], 16) > 0 and p[3] not in seen:
            seen.add(p[3])
            syms.append((int(p[0], 16), int(p[1], 16), p[3]))
    syms.sort()
    return syms


def text_range(binary):
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        p = line.replace("[ ", "[").split()
        if len(p) > 5 and p[1] == ".text":
            start = int(p[3], 16)
            return start, start + int(p[5], 16)
    sys.exit("no .text section")


def resident_text_pages(pid):
    """The binary's executable pages resident in `pid` (from /proc/PID/pagemap), as page numbers
    of the binary's addresses."""
    out = []
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6 and f[1] == "r-xp" and f[5].endswith("/apiary"):
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            with open(f"/proc/{pid}/pagemap", "rb") as pm:
                pm.seek(lo // 4096 * 8)
                data = pm.read((hi - lo) // 4096 * 8)
            for i in range((hi - lo) // 4096):
                if int.from_bytes(data[i * 8:i * 8 + 8], "little") >> 63:
                    out.append(((lo - PIE_BASE) >> 12) + i)
    return out


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    for tool in ["bpftrace", "setarch", "nm", "readelf", "clang"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed")
    work = tempfile.mkdtemp(prefix="apiary-layout-")
    prof = os.path.join(work, "a", "apiary")   # the binary profiled
    helper = os.path.join(work, "b", "apiary")  # the daemon serving the client commands
    for p in [prof, helper]:
        os.makedirs(os.path.dirname(p))
        shutil.copy2(BIN, p)
    arch = os.uname().machine
    obj = os.path.join(work, "count_getppid.bpf.o")
    core = os.path.join(work, "core.bpf.o")
    cflags = ["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu"]
    subprocess.run(cflags + ["-c", os.path.join(ROOT, "examples/count_getppid.bpf.c"), "-o", obj], check=True)
    subprocess.run(cflags + ["-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
                             os.path.join(ROOT, "tests/fixtures/bpf/core.bpf.c"), "-o", core], check=True)

    ra_file = device_readahead(prof)
    ra_saved = open(ra_file).read().strip()
    bpffs = f"/sys/fs/bpf/apiary-layout-{os.getpid()}"
    env = dict(os.environ, APIARY_STATE_DIR=os.path.join(work, "state"), APIARY_BPFFS=bpffs)
    trace = os.path.join(work, "faults.txt")
    pids = []  # profiled processes, in the order they ran
    bt = None
    daemons = []
    try:
        with open(ra_file, "w") as f:
            f.write("0")
        # Each text page's first fault per process, kept in a map (a burst of printed events
        # can overflow bpftrace's buffers and lose some), printed when bpftrace stops.
        lo_text, hi_text = text_range(prof)
        script = ('tracepoint:exceptions:page_fault_user /comm == "apiary" && '
                  f'args->address >= {PIE_BASE + lo_text} && args->address < {PIE_BASE + hi_text}/ '
                  '{ $page = args->address >> 12; if (@first[pid, $page] == 0) { @first[pid, $page] = nsecs; } '
                  '$ip = args->ip >> 12; if (@first[pid, $ip] == 0) { @first[pid, $ip] = nsecs; } }')
        bt = subprocess.Popen(["bpftrace", "-e", script], stdout=open(trace, "w"),
                              stderr=subprocess.DEVNULL, env=dict(os.environ, BPFTRACE_MAP_KEYS_MAX="200000"))
        time.sleep(5)  # bpftrace compiles and attaches

        def profiled(args, extra_env=None):
            drop_caches()
            p = subprocess.Popen(["setarch", "-R", prof, *args], env=dict(env, **(extra_env or {})),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            pids.append(p.pid)
            out, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"apiary {' '.join(args)} failed: {err}")
            return out

        def plain(binary, args, run_env):
            return subprocess.run([binary, *args], env=run_env, capture_output=True, text=True,
                                  check=True).stdout

        def serve(binary, state, sock, wrap):
            run_env = dict(env, APIARY_STATE_DIR=state)
            d = subprocess.Popen([*wrap, binary, "serve", "--socket", sock], env=run_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            daemons.append(d)
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            return d

        def client_session(endpoint_binary, sock):
            ep = ["--endpoint", f"unix://{sock}"]
            plain(endpoint_binary, ep + ["list", "programs"], env)
            out = plain(endpoint_binary, ep + ["-o", "json", "load", "file", "--path", obj, "tracepoint",
                                              "--tracepoint", "syscalls/sys_enter_getppid"], env)
            pid = out.split('"id":')[1].split(",")[0].strip()
            plain(endpoint_binary, ep + ["get", "program", pid], env)
            plain(endpoint_binary, ep + ["list", "links"], env)
            plain(endpoint_binary, ep + ["unload", "--force", pid], env)

        # The daemon: start, idle, serve a client (the helper copy), stop.
        drop_caches()
        d = serve(prof, os.path.join(work, "dstate"), os.path.join(work, "a.sock"), ["setarch", "-R"])
        pids.append(d.pid)
        time.sleep(1.5)
        client_session(helper, os.path.join(work, "a.sock"))
        time.sleep(0.5)
        resident = resident_text_pages(d.pid)
        d.send_signal(signal.SIGTERM)
        d.wait(timeout=10)

        # One-shot commands in this process.
        out = profiled(["-o", "json", "load", "file", "--path", obj, "tracepoint", "--tracepoint",
                        "syscalls/sys_enter_getppid"])
        first = out.split('"id":')[1].split(",")[0].strip()
        profiled(["list", "programs"])
        profiled(["-o", "json", "list", "programs"])
        profiled(["get", "program", first])
        profiled(["load", "file", "--path", core, "tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"])
        profiled(["reconcile"])
        profiled(["unload", "--force", *[l.split()[0] for l in plain(prof, ["list", "programs"], env).splitlines()[1:]]])
        # The same as a client of a daemon.
        h = serve(helper, os.path.join(work, "hstate"), os.path.join(work, "b.sock"), [])
        ep = ["--endpoint", f"unix://{os.path.join(work, 'b.sock')}"]
        profiled(ep + ["list", "programs"])
        out = profiled(ep + ["-o", "json", "load", "file", "--path", obj, "tracepoint", "--tracepoint",
                             "syscalls/sys_enter_getppid"])
        profiled(ep + ["unload", "--force", out.split('"id":')[1].split(",")[0].strip()])
        h.send_signal(signal.SIGTERM)
        h.wait(timeout=10)
        time.sleep(0.5)
    finally:
        if bt is not None:
            bt.send_signal(signal.SIGINT)
            try:
                bt.wait(timeout=20)
            except subprocess.TimeoutExpired:
                bt.kill()
        for d in daemons:
            if d.poll() is None:
                d.kill()
        with open(ra_file, "w") as f:
            f.write(ra_saved)
        shutil.rmtree(bpffs, ignore_errors=True)

    syms = text_symbols(prof)
    starts = [s[0] for s in syms]
    # bpftrace prints the map as `@first[PID, PAGE]: NSECS`.
    firsts = {p: [] for p in pids}
    for line in open(trace):
        if not line.startswith("@first["):
            continue
        key, _, when = line[len("@first["):].partition("]:")
        pid, page = (int(x) for x in key.split(","))
        if pid in firsts:
            firsts[pid].append((int(when), (page << 12) - PIE_BASE >> 12))
    pages = {p: [pg for _, pg in sorted(firsts[p])] for p in pids}
    # The daemon's resident text pages besides those it faulted on: a fault brings a few pages
    # around it into the page cache even with read-ahead off, and those map without a fault of
    # their own.
    daemon = pids[0]
    pages[daemon] += sorted(set(resident) - set(pages[daemon]))
    order, placed, all_pages = [], set(), set()
    for pid in pids:
        for pg in pages[pid]:
            all_pages.add(pg)
            lo, hi = pg << 12, (pg + 1) << 12
            i = max(bisect.bisect_right(starts, lo) - 1, 0)
            while i < len(syms) and syms[i][0] < hi:
                a, size, name = syms[i]
                if a + size > lo and name not in placed:
                    placed.add(name)
                    order.append(name)
                i += 1
    if not all_pages:
        sys.exit("no faults recorded (bpftrace?)")
    lo_text, hi_text = text_range(prof)
    size = sum(s[1] for s in syms if s[2] in placed)
    with open(OUT, "w") as f:
        f.write("\n".join(order) + "\n")
    print(f"{len(pids)} processes, {len(all_pages)} distinct text pages touched "
          f"({len(all_pages) * 4} kB of {(hi_text - lo_text) // 1024} kB); "
          f"{len(order)} functions ({size // 1024} kB) written to {os.path.relpath(OUT, ROOT)}")
    print(f"the daemon: {len(pages[daemon])} pages ({len(pages[daemon]) * 4} kB) touched or resident")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
