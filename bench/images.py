#!/usr/bin/env python3
"""Image benchmark: `apiary load image` of a small bytecode image from a registry started on
127.0.0.1 (Debian's docker-registry), with a pull every time (Always) and from the cache
(IfNotPresent). Library-level figures (pull, push, sign, verify): `cargo bench -p apiary-oci`.
Run as root from the repository root: python3 bench/images.py
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APIARY = os.path.join(ROOT, "target/release/apiary")


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "apiary-cli"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="apiary-bench-")
    arch = os.uname().machine
    obj = os.path.join(work, "minimal.bpf.o")
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
                    "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
                    os.path.join(ROOT, "tests/fixtures/bpf/minimal.bpf.c"), "-o", obj], check=True)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(work, "registry.yml"), "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work}/storage\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["docker-registry", "serve", os.path.join(work, "registry.yml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, APIARY_STATE_DIR=os.path.join(work, "state"), APIARY_BPFFS=f"/sys/fs/bpf/apiary-bench-{os.getpid()}")
    image = f"127.0.0.1:{port}/bench/minimal:v1"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        subprocess.run([APIARY, "image", "build", "--bytecode", obj, "-t", image, "--push", "--tls-verify=false"],
                       env=env, check=True, capture_output=True)
        timings = {"Always": [], "IfNotPresent": []}
        for _ in range(15):
            for policy in timings:
                t0 = time.perf_counter()
                out = subprocess.run([APIARY, "-o", "json", "load", "image", "--image-url", image, "--tls-verify=false",
                                      "--pull-policy", policy], env=env, check=True, capture_output=True, text=True).stdout
                timings[policy].append(time.perf_counter() - t0)
                subprocess.run([APIARY, "unload", str(json.loads(out)[0]["id"])], env=env, check=True, capture_output=True)
        for policy, xs in timings.items():
            print(f"apiary load image, --pull-policy {policy:12}: {statistics.median(xs) * 1000:6.1f} ms median (whole CLI process)")
    finally:
        reg.kill()
        shutil.rmtree(env["APIARY_BPFFS"], ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
