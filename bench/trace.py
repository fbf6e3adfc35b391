#!/usr/bin/env python3
"""`apiary trace` benchmark. Prints:
  - decoded events per second from one node's agent to the client over TCP with mutual TLS:
    a TraceJob running the `events` fixture (one ring-buffer event per getppid() of a producer
    the bench starts), `apiary trace run node/NAME OBJ -o json` reading them as JSON lines;
  - the same through a local daemon's unix socket (`apiary --endpoint unix://... trace run`);
  - the time from `apiary trace run node/NAME -e ...` to its first line of output, and the same
    for a local daemon.
Needs root, bpftrace, and the test control plane (scripts/kube-testenv.sh up; it reads
KUBECONFIG / APIARY_KUBECTL, as printed by `scripts/kube-testenv.sh env`). The simulated node is
a Node object and an agent process, as in the tests.
Run from the repository root: python3 bench/trace.py [--events 2000000] [--apiary PATH]
(default PATH: target/debug/apiary, built here; a release build is faster).
"""
import argparse, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target/bench-trace")


def build(apiary):
    if apiary == os.path.join(ROOT, "target/debug/apiary"):
        subprocess.run(["cargo", "build", "-q", "-p", "apiary-cli", "--bin", "apiary"], cwd=ROOT, check=True)
    os.makedirs(OUT, exist_ok=True)
    arch = os.uname().machine
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
                    "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c",
                    os.path.join(ROOT, "tests/fixtures/bpf/events.bpf.c"), "-o", os.path.join(OUT, "events.bpf.o")],
                   check=True)
    subprocess.run(["cc", "-O2", "-o", os.path.join(OUT, "getppid_loop"), os.path.join(ROOT, "bench/getppid_loop.c")],
                   check=True)


def pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with the openssl CLI."""
    def ossl(*a):
        subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
         "-out", "ca.pem", "-days", "1", "-subj", "/CN=bench CA")
    for name, ext in [("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")]:
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(cond, secs, what):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def stream_events(cmd, n, env):
    """Start a producer stopped, run `cmd` (with the producer's pid filled in), release the
    producer once the run reports "running", count JSON event lines until n arrived or the
    stream went quiet. Returns (events, seconds from release to the last event)."""
    prod = subprocess.Popen(["sh", "-c", f"kill -STOP $$; exec {OUT}/getppid_loop {n}"])
    time.sleep(0.1)
    run = subprocess.Popen([c.replace("{PID}", str(prod.pid)) for c in cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env)
    buf = b""
    # "running" arrives on stdout for a job (it is part of the node's output), on stderr through
    # a daemon: look at both.
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(run.stdout, selectors.EVENT_READ)
    sel.register(run.stderr, selectors.EVENT_READ)
    seen = b""
    while b"running" not in seen:
        for key, _ in sel.select(timeout=30):
            chunk = os.read(key.fileobj.fileno(), 65536)
            if not chunk:
                sys.exit(f"the run ended early: {seen[-2000:]!r}")
            seen += chunk
    sel.unregister(run.stderr)
    got = 0
    t0 = time.perf_counter()
    last = t0
    os.kill(prod.pid, signal.SIGCONT)
    fd = run.stdout.fileno()
    while got < n:
        if not sel.select(timeout=3):
            break
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        got += chunk.count(b'"pid"')
        last = time.perf_counter()
    prod.wait()
    run.send_signal(signal.SIGINT)
    try:
        run.wait(timeout=30)
    except subprocess.TimeoutExpired:
        run.kill()
    return got, last - t0


def first_line(cmd, env, reps=5):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        for line in p.stdout:
            if b"first" in line:
                times.append(time.perf_counter() - t0)
                break
        p.send_signal(signal.SIGINT)
        p.wait()
    return statistics.median(times) if times else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--apiary", default=os.path.join(ROOT, "target/debug/apiary"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root")
    kubeconfig, kubectl = os.environ.get("KUBECONFIG"), os.environ.get("APIARY_KUBECTL")
    if not kubeconfig or not kubectl:
        sys.exit('no control plane: scripts/kube-testenv.sh up; eval "$(scripts/kube-testenv.sh env)"')
    apiary = a.apiary
    build(apiary)
    tmp = tempfile.mkdtemp(prefix="apiary-bench-trace-")
    pki(tmp)
    node = f"bench-trace-{os.getpid()}"
    kc = lambda *args, **kw: subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], check=True,
                                            capture_output=True, text=True, **kw)
    subprocess.run([apiary, "k8s", "install", "--kubeconfig", kubeconfig], check=True, capture_output=True)
    kc("apply", "-f", "-", input=f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n")
    port = free_port()
    state = os.path.join(tmp, "state")
    env = dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=f"/sys/fs/bpf/apiary-bench-{os.getpid()}")
    env.pop("APIARY_ENDPOINT", None)
    sock = os.path.join(tmp, "agent.sock")
    agent = subprocess.Popen([apiary, "agent", "--node-name", node, "--kubeconfig", kubeconfig, "--socket", sock,
                              "--listen", f"127.0.0.1:{port}", "--tls-cert", f"{tmp}/server.pem",
                              "--tls-key", f"{tmp}/server.key", "--client-ca", f"{tmp}/ca.pem"],
                             env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "agent.log"), "w"))
    client = [apiary, "--client-cert", f"{tmp}/client.pem", "--client-key", f"{tmp}/client.key",
              "--server-ca", f"{tmp}/ca.pem"]
    try:
        wait_for(lambda: "127.0.0.1" in kc("get", "node", node, "-o",
                                           "jsonpath={.metadata.annotations.apiary\\.io/agent-endpoint}").stdout,
                 30, "the agent")
        obj = os.path.join(OUT, "events.bpf.o")
        got, secs = stream_events(client + ["trace", "run", f"node/{node}", obj, "--set", "target_tgid={PID}",
                                            "-o", "json", "--kubeconfig", kubeconfig], a.events, env)
        print(f"agent -> client over TCP+mTLS: {got} of {a.events} events in {secs:.2f} s "
              f"-> {got / secs / 1e3:.0f}k decoded events/s")
        got, secs = stream_events([apiary, "--endpoint", f"unix://{sock}", "trace", "run", obj, "--set",
                                   "target_tgid={PID}", "-o", "json"], a.events, env)
        print(f"daemon -> client over the unix socket: {got} of {a.events} events in {secs:.2f} s "
              f"-> {got / secs / 1e3:.0f}k decoded events/s")
        script = 'BEGIN { printf("first\\n"); }'
        t = first_line(client + ["trace", "run", f"node/{node}", "-e", script, "--kubeconfig", kubeconfig], env)
        print(f"`trace run node/NAME -e` to its first output line: {t * 1000:.0f} ms median of 5")
        t = first_line([apiary, "--endpoint", f"unix://{sock}", "trace", "run", "-e", script], env)
        print(f"`--endpoint unix:// trace run -e` to its first output line: {t * 1000:.0f} ms median of 5")
        t = first_line([apiary, "trace", "run", "-e", script], env)
        print(f"in-process `trace run -e` to its first output line: {t * 1000:.0f} ms median of 5 (bpftrace's own start)")
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
        # This node's jobs only: the control plane may be shared.
        mine = kc("get", "tracejobs", "-o",
                  f'jsonpath={{range .items[?(@.spec.nodeName=="{node}")]}}{{.metadata.name}}{{"\\n"}}{{end}}').stdout
        for j in mine.split():
            subprocess.run([kubectl, "--kubeconfig", kubeconfig, "delete", "tracejob", j, "--wait=false"],
                           capture_output=True)
        subprocess.run([kubectl, "--kubeconfig", kubeconfig, "delete", "node", node, "--wait=false"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
