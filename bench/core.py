#!/usr/bin/env python3
"""Core benchmark (issue: load/attach/list). Prints:
  - median wall time of `apiary load ... + attach` of a tracepoint program, as one command and as
    two, against a minimal C libbpf loader doing the same work (load, attach, pin);
  - median wall time of `apiary list programs` with 1,000 managed programs;
  - peak RSS (GNU time) of a CO-RE object's first load and cached load, a trivial load+attach and
    the list. Both apiary and the loader are started the same way (subprocess), and timed alike.
Run as root from the repository root: python3 bench/core.py [--programs 1000] [--runs 30]
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APIARY = os.path.join(ROOT, "target/release/apiary")
OBJ = os.path.join(ROOT, "target/examples/count_getppid.bpf.o")
# A CO-RE object (reads task_struct fields): libbpf parses the kernel's whole BTF for it on every
# load; apiary, having loaded it before, gives libbpf the CO-RE cache's minimal BTF instead.
CORE_OBJ = os.path.join(ROOT, "target/examples/core.bpf.o")


def run(cmd, env=None, check=True):
    """Run a command (untimed bookkeeping); return (seconds, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True)
    if check and p.returncode != 0:
        sys.exit(f"{cmd} failed: {p.stderr.decode()}")
    return time.perf_counter() - t0, p.stdout


def spawn_timed(cmd, env=None):
    """Run a command the same way for apiary and the loader (posix_spawn through Popen);
    return its wall time in seconds."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{cmd} failed with status {p.returncode}")
    return dt


def max_rss_kb(cmd, env):
    """The command's peak RSS, from GNU time. (Not from this script's wait4: Linux carries the
    RSS of the image a child replaced at exec into its ru_maxrss, and this Python process is
    larger than apiary, so every figure would be Python's.)"""
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"{cmd} failed: {p.stderr}")
    return int(p.stderr.strip().splitlines()[-1])


def apiary_rss(cmd, env):
    """Run one apiary command, timed."""
    return spawn_timed(cmd, env)


def median_ms(xs):
    return statistics.median(xs) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    os.makedirs(os.path.dirname(OBJ), exist_ok=True)
    arch = os.uname().machine
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
                    "-c", os.path.join(ROOT, "examples/count_getppid.bpf.c"), "-o", OBJ], check=True)
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
                    "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
                    os.path.join(ROOT, "tests/fixtures/bpf/core.bpf.c"), "-o", CORE_OBJ], check=True)
    loader = os.path.join(ROOT, "target/release/minimal_loader")
    subprocess.run(["cc", "-O2", "-o", loader, os.path.join(ROOT, "bench/minimal_loader.c"), "-lbpf"], check=True)

    state = tempfile.mkdtemp(prefix="apiary-bench-")
    bpffs = f"/sys/fs/bpf/apiary-bench-{os.getpid()}"
    env = dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=bpffs)
    try:
        # Warm the page cache for both binaries and the object.
        apiary_rss([APIARY, "list", "programs"], env)
        one, two, base = [], [], []
        for i in range(a.runs):
            one.append(apiary_rss([APIARY, "-o", "json", "load", "file", "--path", OBJ, "tracepoint",
                                   "--tracepoint", "syscalls/sys_enter_getppid"], env))
            _, out = run([APIARY, "-o", "json", "list", "programs"], env)
            ids = [str(p["id"]) for p in json.loads(out)]
            run([APIARY, "unload", "--force", *ids], env)

            t_load = apiary_rss([APIARY, "load", "file", "--path", OBJ], env)
            _, out = run([APIARY, "-o", "json", "list", "programs"], env)
            pid = str(json.loads(out)[0]["id"])
            t_attach = apiary_rss([APIARY, "attach", pid, "tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"], env)
            two.append(t_load + t_attach)
            run([APIARY, "unload", "--force", pid], env)

            pin = f"/sys/fs/bpf/minimal-bench-{os.getpid()}-{i}"
            os.makedirs(pin)
            base.append(spawn_timed([loader, OBJ, "count_getppid", "syscalls", "sys_enter_getppid", pin]))
            shutil.rmtree(pin)
        b = median_ms(base)
        print(f"load+attach, minimal libbpf loader (C):     {b:7.2f} ms median of {a.runs}")
        print(f"load+attach, apiary one command:            {median_ms(one):7.2f} ms  ({median_ms(one)/b:.2f}x the loader)")
        print(f"load then attach, apiary two commands:      {median_ms(two):7.2f} ms  ({median_ms(two)/b:.2f}x the loader)")

        # CO-RE, loaded before: the first load made the cache entry.
        core_one, core_base = [], []
        for i in range(a.runs + 1):
            t = apiary_rss([APIARY, "-o", "json", "load", "file", "--path", CORE_OBJ, "tracepoint",
                            "--tracepoint", "syscalls/sys_enter_getppid"], env)
            if i > 0:
                core_one.append(t)
            _, out = run([APIARY, "-o", "json", "list", "programs"], env)
            ids = [str(p["id"]) for p in json.loads(out)]
            run([APIARY, "unload", "--force", *ids], env)
            pin = f"/sys/fs/bpf/minimal-core-bench-{os.getpid()}-{i}"
            os.makedirs(pin)
            core_base.append(spawn_timed([loader, CORE_OBJ, "core_getppid", "syscalls", "sys_enter_getppid", pin]))
            shutil.rmtree(pin)
        cb = median_ms(core_base)
        print(f"CO-RE load+attach, minimal libbpf loader:   {cb:7.2f} ms median of {len(core_base)}")
        print(f"CO-RE load+attach, apiary one command:      {median_ms(core_one):7.2f} ms  ({median_ms(core_one)/cb:.2f}x the loader; loaded before: CO-RE cache)")

        t0 = time.perf_counter()
        for _ in range(a.programs):
            apiary_rss([APIARY, "load", "file", "--path", OBJ, "-m", "bench=list"], env)
        print(f"loading {a.programs} programs took {time.perf_counter()-t0:.1f} s ({(time.perf_counter()-t0)/a.programs*1000:.1f} ms each)")
        lj = [apiary_rss([APIARY, "-o", "json", "list", "programs"], env) for _ in range(20)]
        lt = [apiary_rss([APIARY, "list", "programs"], env) for _ in range(20)]
        print(f"list programs, {a.programs} managed, JSON:    {median_ms(lj):7.2f} ms median of 20")
        print(f"list programs, {a.programs} managed, table:   {median_ms(lt):7.2f} ms median of 20")
        rss_list = max_rss_kb([APIARY, "list", "programs"], env)
        # The CO-RE object's first load on this kernel (it makes the cache entry), then from it.
        core_state = tempfile.mkdtemp(prefix="apiary-bench-core-")
        core_env = dict(env, APIARY_STATE_DIR=core_state)
        rss_core = [max_rss_kb([APIARY, "load", "file", "--path", CORE_OBJ], core_env) for _ in range(2)]
        _, out = run([APIARY, "-o", "json", "list", "programs"], core_env)
        run([APIARY, "unload", "--force", *[str(p["id"]) for p in json.loads(out)]], core_env)
        shutil.rmtree(core_state, ignore_errors=True)
        rss_trivial = max_rss_kb([APIARY, "load", "file", "--path", OBJ, "tracepoint", "--tracepoint",
                                  "syscalls/sys_enter_getppid"], env)
        print(f"peak RSS: CO-RE first load / from the cache: {rss_core[0]/1024:6.2f} / {rss_core[1]/1024:.2f} MB")
        print(f"peak RSS: trivial load+attach / list {a.programs}: {rss_trivial/1024:6.2f} / {rss_list/1024:.2f} MB")
    finally:
        _, out = run([APIARY, "-o", "json", "list", "programs"], env, check=False)
        try:
            ids = [str(p["id"]) for p in json.loads(out)]
        except ValueError:
            ids = []
        for k in range(0, len(ids), 200):
            run([APIARY, "unload", "--force", *ids[k:k + 200]], env, check=False)
        shutil.rmtree(bpffs, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
