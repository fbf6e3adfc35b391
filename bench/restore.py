#!/usr/bin/env python3
"""Restore benchmark (issue: fast restore): N CO-RE tracepoint programs, each attached, plus a
64-program XDP chain on a veth, then every pin under apiary's bpffs directory is removed (what a
reboot does to bpffs) and `apiary reconcile` is timed until all of them are loaded, attached and
chained again. Prints the wall time, the time per program, and checks the restored counts.
Run as root from the repository root: python3 bench/restore.py [--programs 1000] [--chain 64]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APIARY = os.path.join(ROOT, "target/release/apiary")
OUT = os.path.join(ROOT, "target/bench")


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def apiary(env, *args, stderr=None):
    p = subprocess.run([APIARY, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"apiary {' '.join(args)} failed: {p.stderr}")
    if stderr is not None:
        stderr.append(p.stderr)
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=1000)
    ap.add_argument("--chain", type=int, default=64)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    arch = os.uname().machine
    objs = {}
    for name in ["core", "chain_basic"]:
        objs[name] = os.path.join(OUT, f"{name}.bpf.o")
        sh("clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
           "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
           os.path.join(ROOT, f"tests/fixtures/bpf/{name}.bpf.c"), "-o", objs[name])
    ns = f"apiary-restore-{os.getpid()}"
    state = tempfile.mkdtemp(prefix="apiary-restore-")
    bpffs = f"/sys/fs/bpf/apiary-restore-{os.getpid()}"
    env = dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=bpffs)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "rva", "type", "veth", "peer", "name", "rvb")
        sh("ip", "-n", ns, "link", "set", "rva", "up")
        sh("ip", "-n", ns, "link", "set", "rvb", "up")
        # The kernel runs at most 64 programs per tracepoint: spread them over the syscalls'.
        tps = sorted(e for e in os.listdir("/sys/kernel/tracing/events/syscalls")
                     if e.startswith("sys_enter_"))
        t0 = time.perf_counter()
        for i in range(a.programs):
            apiary(env, "load", "file", "--path", objs["core"], "tracepoint", "--tracepoint",
                   f"syscalls/{tps[i % len(tps)]}")
        for n in range(1, a.chain + 1):
            out = apiary(env, "-o", "json", "load", "file", "--path", objs["chain_basic"],
                         "--programs", "xdp:xdp_count_pass")
            pid = str(json.loads(out)[0]["id"])
            apiary(env, "attach", pid, "xdp", "--iface", "rvb", "--netns", ns, "--priority", str(n))
        setup = time.perf_counter() - t0
        links = len(json.loads(apiary(env, "-o", "json", "list", "links")))

        print(f"setup: {a.programs + a.chain} programs and {links} links loaded and attached in {setup:.1f} s")
        # What a reboot does to bpffs: every pin is gone, and with them the kernel objects. Twice:
        # one restore thread, then one per CPU (the default).
        for threads in ["1", ""]:
            shutil.rmtree(bpffs)
            t0 = time.perf_counter()
            err = []
            run_env = dict(env, APIARY_TIMING="1", APIARY_RESTORE_THREADS=threads)
            report = json.loads(apiary(run_env, "-o", "json", "reconcile", stderr=err))
            took = time.perf_counter() - t0
            restored = len(report.get("restored_programs", []))
            relinked = len(report.get("reattached_links", []))
            chains = len(report.get("rebuilt_chains", []))
            failures = report.get("failures", [])
            progs = a.programs + a.chain
            label = "1 thread" if threads else f"{os.cpu_count()} CPUs"
            print(f"reconcile after the pins were wiped ({label}): {took:.2f} s for {restored} programs, "
                  f"{relinked} links, {chains} chains ({took / max(progs, 1) * 1000:.2f} ms per program)")
            print("  " + "".join(l for l in err[0].splitlines(True) if l.startswith("timing:")).strip())
            if failures or restored != progs:
                sys.exit(f"restore incomplete: {restored}/{progs} programs, failures: {failures[:5]}")
        again = json.loads(apiary(env, "-o", "json", "reconcile"))
        print(f"a second reconcile finds nothing to do: {not again.get('restored_programs')}")
    finally:
        ids = []
        try:
            ids = [str(p["id"]) for p in json.loads(apiary(env, "-o", "json", "list", "programs"))]
        except SystemExit:
            pass
        for k in range(0, len(ids), 200):
            subprocess.run([APIARY, "unload", "--force", *ids[k:k + 200]], env=env, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(bpffs, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
