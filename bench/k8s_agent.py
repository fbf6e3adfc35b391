#!/usr/bin/env python3
"""Node agent benchmark against a real kube-apiserver (scripts/kube-testenv.sh, own directory):
three simulated nodes (a Node object, a network namespace with four veth pairs, an `apiary agent`
each); time from `kubectl apply` of a ClusterBpfApplication with 10 links per node (XDP x4 and a
second XDP chain member x4 on four interfaces, TC, tracepoint) until all three state objects
report Success with 10 links attached, and back to nothing after `kubectl delete`; then the
agents' idle resident memory (the agent process and its loader worker).
Run as root from the repository root: python3 bench/k8s_agent.py [ROUNDS]
APIARY_BIN picks the binary (default target/release/apiary, else target/debug/apiary).
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target/bench")
KDIR = f"/tmp/apiary-bench-kube-{os.getpid()}"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def binary():
    if os.environ.get("APIARY_BIN"):
        return os.environ["APIARY_BIN"]
    for p in ("target/release/apiary", "target/debug/apiary"):
        if os.path.exists(os.path.join(ROOT, p)):
            return os.path.join(ROOT, p)
    sys.exit("build apiary first (cargo build -p apiary-cli)")


def app_yaml(name, obj):
    ifs = [f"v{i}" for i in range(4)]
    sel = "{interfaces: [" + ", ".join(ifs) + "]}"
    return f"""apiVersion: apiary.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: {name}
spec:
  nodeSelector: {{matchLabels: {{apiary-bench: "yes"}}}}
  byteCode: {{path: {obj}}}
  programs:
  - name: xdp_count
    type: XDP
    xdp:
      links:
      - interfaceSelector: {sel}
        priority: 10
  - name: xdp_second
    type: XDP
    xdp:
      links:
      - interfaceSelector: {sel}
        priority: 20
  - name: tc_count
    type: TC
    tc:
      links:
      - interfaceSelector: {{interfaces: [v0]}}
        direction: Ingress
        priority: 10
  - name: tp_getppid
    type: TracePoint
    tracepoint:
      links:
      - name: syscalls/sys_enter_getppid
"""


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    apiary = binary()
    os.makedirs(OUT, exist_ok=True)
    arch = os.uname().machine
    obj = os.path.join(OUT, "k8s_app.bpf.o")
    sh("clang", "-target", "bpf", "-O2", "-g", "-mcpu=v3", f"-I/usr/include/{arch}-linux-gnu",
       "-I", os.path.join(ROOT, "tests/fixtures/bpf"), "-c", os.path.join(ROOT, "tests/fixtures/bpf/k8s_app.bpf.c"), "-o", obj)
    testenv = os.path.join(ROOT, "scripts/kube-testenv.sh")
    sh(testenv, "up", "--dir", KDIR)
    env_lines = sh(testenv, "env", "--dir", KDIR)
    kenv = dict(l.replace("export ", "", 1).split("=", 1) for l in env_lines.splitlines() if l.startswith("export "))
    kubeconfig, kubectl = kenv["KUBECONFIG"], kenv["APIARY_KUBECTL"]

    def k(*args, stdin=None):
        return subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], input=stdin, check=True,
                              capture_output=True, text=True).stdout

    nodes, agents, dirs = [], [], []
    try:
        sh(apiary, "k8s", "install", "--kubeconfig", kubeconfig)
        for n in range(3):
            name, ns = f"bench-node-{n}", f"apiary-bench-{os.getpid()}-{n}"
            sh("ip", "netns", "add", ns)
            nodes.append((name, ns))
            for i in range(4):
                sh("ip", "-n", ns, "link", "add", f"v{i}", "type", "veth", "peer", "name", f"p{i}")
                sh("ip", "-n", ns, "link", "set", f"v{i}", "up")
                sh("ip", "-n", ns, "link", "set", f"p{i}", "up")
            k("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{apiary-bench: \"yes\"}}\n")
            state = tempfile.mkdtemp(prefix="apiary-bench-")
            bpffs = f"/sys/fs/bpf/apiary-bench-{os.getpid()}-{n}"
            dirs.append((state, bpffs))
            log = open(os.path.join(state, "agent.log"), "w")
            agents.append(subprocess.Popen(
                [apiary, "agent", "--node-name", name, "--netns", ns, "--kubeconfig", kubeconfig,
                 "--socket", os.path.join(state, "apiary.sock")],
                env=dict(os.environ, APIARY_STATE_DIR=state, APIARY_BPFFS=bpffs),
                stdout=subprocess.DEVNULL, stderr=log))
        for state, _ in dirs:
            while not os.path.exists(os.path.join(state, "apiary.sock")):
                time.sleep(0.02)

        def states(app):
            v = json.loads(k("get", "clusterbpfapplicationstates", "-l", f"apiary.io/application={app}", "-o", "json"))
            return v["items"]

        def all_attached(app):
            items = states(app)
            if len(items) != 3:
                return False
            for s in items:
                st = s.get("status", {})
                c = (st.get("conditions") or [{}])[0]
                links = [l for p in st.get("programs", []) for l in p.get("links", []) if l.get("linkStatus") == "Attached"]
                if c.get("type") != "Success" or len(links) != 10:
                    return False
            return True

        up, down = [], []
        for r in range(rounds):
            app = f"bench-{r}"
            yaml = app_yaml(app, obj)
            t0 = time.monotonic()
            k("apply", "-f", "-", stdin=yaml)
            while not all_attached(app):
                if time.monotonic() - t0 > 60:
                    sys.exit(f"round {r}: not converged in 60 s: {json.dumps(states(app))[:2000]}")
                time.sleep(0.02)
            up.append(time.monotonic() - t0)
            t0 = time.monotonic()
            k("delete", "clusterbpfapplication", app, "--wait=false")
            while True:
                gone = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "clusterbpfapplication", app],
                                      capture_output=True).returncode != 0
                if gone:
                    break
                if time.monotonic() - t0 > 60:
                    sys.exit(f"round {r}: not deleted in 60 s")
                time.sleep(0.02)
            down.append(time.monotonic() - t0)
        # Idle memory with an application loaded everywhere, after the agents settled.
        k("apply", "-f", "-", stdin=app_yaml("bench-idle", obj))
        while not all_attached("bench-idle"):
            time.sleep(0.05)
        time.sleep(5)
        rss = []
        for a in agents:
            workers = sum(rss_kb(c) for c in children(a.pid))
            rss.append((rss_kb(a.pid), workers))
        print(f"binary: {apiary}")
        print(f"kubectl apply -> 3 nodes x 10 links attached (state objects Success): "
              f"median {statistics.median(up)*1000:.0f} ms, min {min(up)*1000:.0f}, max {max(up)*1000:.0f} ({rounds} rounds; "
              f"includes one kubectl get per poll)")
        print(f"kubectl delete -> unloaded on 3 nodes, finalizers released, object gone: "
              f"median {statistics.median(down)*1000:.0f} ms, min {min(down)*1000:.0f}, max {max(down)*1000:.0f}")
        for (name, _), (agent, worker) in zip(nodes, rss):
            print(f"idle RSS {name}: agent {agent/1024:.1f} MiB, loader worker {worker/1024:.1f} MiB")
        k("patch", "clusterbpfapplication", "bench-idle", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    finally:
        for a in agents:
            a.kill()
            a.wait()
        for state, bpffs in dirs:
            # Whatever the agents left loaded goes with its pins (no process holds it now).
            shutil.rmtree(bpffs, ignore_errors=True)
            shutil.rmtree(state, ignore_errors=True)
        for _, ns in nodes:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run([testenv, "down", "--dir", KDIR], capture_output=True)
        if os.path.exists(KDIR + ".lock"):
            os.remove(KDIR + ".lock")


if __name__ == "__main__":
    main()
