#!/usr/bin/env python3
"""`apiary run` / `update` / `package` benchmark. Prints:
  - decoded events per second, end to end: `apiary run -o json` on one CPU decoding the ring
    buffer events a getppid() loop on the other CPU triggers, and how many were lost;
  - `apiary update` wall time (whole CLI process, old and new code alternating);
  - the size of a package for a typical tool.
The decoder's own ceiling (no kernel) is printed by `cargo bench -p apiary-core --bench decode`.
Run as root from the repository root: python3 bench/run.py [--events 2000000]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APIARY = os.path.join(ROOT, "target/release/apiary")
OUT = os.path.join(ROOT, "target/bench")


def build():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    arch = os.uname().machine
    for name in ["events", "minimal", "minimal_v2"]:
        subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
                        "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
                        os.path.join(ROOT, f"tests/fixtures/bpf/{name}.bpf.c"), "-o", os.path.join(OUT, f"{name}.bpf.o")],
                       check=True)
    subprocess.run(["cc", "-O2", "-o", os.path.join(OUT, "getppid_loop"), os.path.join(ROOT, "bench/getppid_loop.c")], check=True)


def events_per_second(n):
    # The producer must exist before the run starts (its pid is the filter): start it stopped.
    prod = subprocess.Popen(["sh", "-c", f"kill -STOP $$; exec taskset -c 1 {OUT}/getppid_loop {n}"])
    time.sleep(0.1)
    run = subprocess.Popen(["taskset", "-c", "0", APIARY, "run", os.path.join(OUT, "events.bpf.o"), "-o", "json",
                            "--set", f"target_tgid={prod.pid}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in run.stderr:
        if line.startswith("running"):
            break
    t0 = time.perf_counter()
    os.kill(prod.pid, 18)  # SIGCONT
    prod.wait()
    produced_s = time.perf_counter() - t0
    time.sleep(0.5)  # let the consumer drain
    run.send_signal(2)
    err = run.stderr.read()
    run.wait()
    m = re.search(r"(\d+) event\(s\)", err)
    got = int(m.group(1)) if m else 0
    return got, produced_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    build()
    got, secs = events_per_second(a.events)
    print(f"events decoded to JSON lines: {got} of {a.events} triggered in {secs:.2f} s "
          f"-> {got / secs / 1e6:.2f} M events/s end to end ({a.events - got} lost or filtered)")

    state = tempfile.mkdtemp(prefix="apiary-bench-")
    bpffs = f"/sys/fs/bpf/apiary-bench-{os.getpid()}"
    env = dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=bpffs)
    try:
        out = subprocess.run([APIARY, "-o", "json", "load", "file", "--path", os.path.join(OUT, "minimal.bpf.o"),
                              "tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"], env=env, check=True,
                             capture_output=True, text=True).stdout
        pid = re.search(r'"id": (\d+)', out).group(1)
        times, inner = [], []
        for i in range(20):
            obj = "minimal_v2.bpf.o" if i % 2 == 0 else "minimal.bpf.o"
            t0 = time.perf_counter()
            r = subprocess.run([APIARY, "-o", "json", "update", pid, "--path", os.path.join(OUT, obj)], env=env,
                               check=True, capture_output=True, text=True).stdout
            times.append(time.perf_counter() - t0)
            inner.append(float(re.search(r'"millis": ([0-9.]+)', r).group(1)))
        print(f"apiary update (tracepoint, attach-new-then-detach-old): {statistics.median(times) * 1000:.1f} ms median "
              f"end to end, {statistics.median(inner):.1f} ms inside the lock")
        subprocess.run([APIARY, "unload", "--force", pid], env=env, check=True, capture_output=True)
    finally:
        shutil.rmtree(bpffs, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)

    for name in ["events", "minimal"]:
        pkg = os.path.join(OUT, f"{name}.package.json")
        subprocess.run([APIARY, "package", os.path.join(OUT, f"{name}.bpf.o"), "-o", pkg], check=True, capture_output=True)
        print(f"package of {name}.bpf.o: {os.path.getsize(pkg)} bytes "
              f"(object {os.path.getsize(os.path.join(OUT, name + '.bpf.o'))} bytes)")


if __name__ == "__main__":
    main()
