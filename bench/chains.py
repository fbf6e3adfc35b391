#!/usr/bin/env python3
"""Chain benchmark through the CLI: wall time of `apiary attach` when it adds the Nth program to
an XDP chain on a veth (N = 1, 10, 64): compose + verify + load the dispatcher, swap it onto the
link, record. Per-packet costs come from `cargo bench -p apiary-kernel --bench chain`.
Run as root from the repository root: python3 bench/chains.py
"""
import json, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APIARY = os.path.join(ROOT, "target/release/apiary")
OUT = os.path.join(ROOT, "target/bench")


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    arch = os.uname().machine
    obj = os.path.join(OUT, "chain_basic.bpf.o")
    sh("clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
       "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c", os.path.join(ROOT, "tests/fixtures/bpf/chain_basic.bpf.c"), "-o", obj)
    ns = f"apiary-bench-{os.getpid()}"
    state = tempfile.mkdtemp(prefix="apiary-bench-")
    bpffs = f"/sys/fs/bpf/apiary-bench-{os.getpid()}"
    env = dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=bpffs)
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "add", "bva", "type", "veth", "peer", "name", "bvb")
        sh("ip", "-n", ns, "link", "set", "bva", "up")
        sh("ip", "-n", ns, "link", "set", "bvb", "up")
        times = {}
        for n in range(1, 65):
            out = subprocess.run([APIARY, "-o", "json", "load", "file", "--path", obj, "--programs", "xdp:xdp_count_pass"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            pid = str(json.loads(out)[0]["id"])
            t0 = time.perf_counter()
            subprocess.run([APIARY, "attach", pid, "xdp", "--iface", "bvb", "--netns", ns, "--priority", str(n)],
                           env=env, check=True, capture_output=True)
            times[n] = (time.perf_counter() - t0) * 1000
        for n in (1, 10, 64):
            print(f"apiary attach adding program {n:2} to an XDP chain: {times[n]:6.1f} ms (whole CLI process)")
    finally:
        out = subprocess.run([APIARY, "-o", "json", "list", "programs"], env=env, capture_output=True, text=True).stdout
        try:
            ids = [str(p["id"]) for p in json.loads(out)]
        except ValueError:
            ids = []
        if ids:
            subprocess.run([APIARY, "unload", "--force", *ids], env=env, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(bpffs, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
