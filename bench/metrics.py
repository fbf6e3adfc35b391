#!/usr/bin/env python3
"""Cost of a metrics scrape for 1,000 map entries. Prints, for `apiary run --metrics` (the
declared maps and the run's own counters) and for the daemon's whole /metrics with the same
object loaded with its declarations:
  - the scrape's wall time (mean, median, p95 over N scrapes, sequential, over HTTP),
  - the size of the exposition and its number of samples.
The map: a hash map filled with 1,000 keys (id, pid, comm), two counters each (bench/metrics/).
Run as root from the repository root: python3 bench/metrics.py [--scrapes 200] [--entries 1000]
APIARY_BIN=target/debug/apiary uses that binary instead of building a release one.
"""
import argparse, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "bench/metrics/flows.bpf.c")


def apiary():
    if os.environ.get("APIARY_BIN"):
        return os.path.abspath(os.environ["APIARY_BIN"])
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target/release/apiary")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def target(n):
    """A process that calls getppid() n times once it reads a line."""
    return subprocess.Popen(
        [sys.executable, "-c",
         f"import os,sys; sys.stdin.readline(); [os.getppid() for _ in range({n})]; sys.stdin.readline()"],
        stdin=subprocess.PIPE, text=True)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        return r.read()


def measure(port, n, entries, name):
    # Until every entry is there (the target's calls are done).
    deadline = time.time() + 30
    while True:
        body = scrape(port).decode()
        if body.count("bench_packets_total{") >= entries or time.time() > deadline:
            break
        time.sleep(0.1)
    samples = sum(1 for l in body.splitlines() if l and not l.startswith("#"))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        scrape(port)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p95 = times[int(len(times) * 0.95) - 1]
    print(f"{name}: {body.count('bench_packets_total{')} map entries, {samples} samples, "
          f"{len(body)} bytes; scrape mean {statistics.mean(times):.2f} ms, "
          f"median {statistics.median(times):.2f} ms, p95 {p95:.2f} ms ({n} scrapes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--entries", type=int, default=1000)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    bin_ = apiary()
    tmp = tempfile.mkdtemp(prefix="apiary-bench-metrics-")
    env = dict(os.environ, APIARY_STATE_DIR=os.path.join(tmp, "state"),
               APIARY_BPFFS=f"/sys/fs/bpf/{os.path.basename(tmp)}",
               APIARY_CACHE_DIR=os.path.join(tmp, "cache"))
    env.pop("APIARY_ENDPOINT", None)

    # 1. apiary run --metrics (the source is built first; its .metrics.yaml goes with it).
    t = target(a.entries)
    port = free_port()
    run = subprocess.Popen([bin_, "run", SRC, "--set", f"target_tgid={t.pid}", "--metrics", f"127.0.0.1:{port}"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in run.stderr:
        if line.startswith("running"):
            break
    else:
        sys.exit("apiary run failed: " + run.stderr.read())
    t.stdin.write("go\n"); t.stdin.flush()
    try:
        measure(port, a.scrapes, a.entries, "apiary run --metrics")
    finally:
        t.stdin.write("done\n"); t.stdin.flush(); t.wait()
        run.send_signal(2)
        run.wait()

    # 2. The daemon: the built object loaded with its declarations, the whole endpoint.
    out = os.path.join(tmp, "out")
    subprocess.run([bin_, "build", SRC, "-o", out], env=env, check=True, stderr=subprocess.DEVNULL)
    sock = os.path.join(tmp, "apiary.sock")
    mport = free_port()
    d = subprocess.Popen([bin_, "serve", "--socket", sock, "--metrics", f"127.0.0.1:{mport}", "--log", "warn"],
                         env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        t = target(a.entries)
        subprocess.run([bin_, "--endpoint", f"unix://{sock}", "load", "file", "--path",
                        os.path.join(out, "flows.bpf.o"), "--set", f"target_tgid={t.pid}",
                        "--metrics-config", os.path.join(ROOT, "bench/metrics/flows.metrics.yaml"),
                        "tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        t.stdin.write("go\n"); t.stdin.flush()
        measure(mport, a.scrapes, a.entries, "apiary serve /metrics (whole endpoint)")
        t.stdin.write("done\n"); t.stdin.flush(); t.wait()
    finally:
        d.terminate()
        d.wait()
        # The daemon keeps its programs pinned when it stops: removing the pins detaches and
        # unloads the benchmark's program.
        subprocess.run(["rm", "-rf", env["APIARY_BPFFS"], tmp])


if __name__ == "__main__":
    main()
