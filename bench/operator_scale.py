#!/usr/bin/env python3
"""Operator scale benchmark against a real kube-apiserver (scripts/kube-testenv.sh, own
directory): N Node objects (default 200), an agent Lease and a state object per node, all
written through the API by this script (the agents simulated), and one `apiary operator`.
Measures the time from the last write to a correct application status (N/N ready), from one
state turning to Error to the status naming it, and from a Node's deletion to its state object
being removed and the status counting N-1; then the operator's resident memory (VmRSS, VmHWM).
Run from the repository root: python3 bench/operator_scale.py [N]
APIARY_BIN picks the binary (default target/release/apiary, else target/debug/apiary).
"""
import concurrent.futures, datetime, http.client, json, os, ssl, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target/bench")
KDIR = f"/tmp/apiary-bench-opscale-{os.getpid()}"
APP = "bench-scale"
LABEL = "apiary-bench-scale"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def binary():
    if os.environ.get("APIARY_BIN"):
        return os.environ["APIARY_BIN"]
    for p in ("target/release/apiary", "target/debug/apiary"):
        if os.path.exists(os.path.join(ROOT, p)):
            return os.path.join(ROOT, p)
    sys.exit("build apiary first (cargo build -p apiary-cli)")


class Api:
    """A tiny REST client with the test control plane's admin certificate."""

    def __init__(self, server):
        u = server.removeprefix("https://")
        self.host, port = u.split(":")
        self.port = int(port)
        ctx = ssl.create_default_context(cafile=f"{KDIR}/pki/ca.crt")
        ctx.load_cert_chain(f"{KDIR}/pki/admin.crt", f"{KDIR}/pki/admin.key")
        self.ctx = ctx

    def call(self, method, path, body=None, ctype="application/json"):
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        data = json.dumps(body) if body is not None else None
        c.request(method, path, body=data, headers={"Content-Type": ctype})
        r = c.getresponse()
        text = r.read()
        c.close()
        if r.status >= 300 and r.status != 404:
            raise RuntimeError(f"{method} {path}: {r.status} {text[:300]!r}")
        return json.loads(text) if text else None

    def exists(self, path):
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status == 200


def now_micro():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_sec():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_status(ok, message):
    word = "Success" if ok else "Error"
    return {
        "status": {
            "updateCount": 1,
            "appLoadStatus": "LoadSuccess" if ok else "LoadError",
            "conditions": [
                {
                    "type": word,
                    "status": "True",
                    "reason": word,
                    "message": message,
                    "lastTransitionTime": now_sec(),
                }
            ],
        }
    }


STATES = "/apis/apiary.io/v1alpha1/clusterbpfapplicationstates"
APPS = "/apis/apiary.io/v1alpha1/clusterbpfapplications"


def make_node(api, i):
    name = f"scale-{i:04d}"
    api.call(
        "POST",
        "/api/v1/nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {LABEL: "yes"}}},
    )
    api.call(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": f"apiary-agent-{name}", "labels": {"apiary.io/agent-node": name}},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 3600, "renewTime": now_micro()},
        },
    )
    sname = f"{APP}-{name}"
    api.call(
        "POST",
        STATES,
        {
            "apiVersion": "apiary.io/v1alpha1",
            "kind": "ClusterBpfApplicationState",
            "metadata": {
                "name": sname,
                "labels": {"apiary.io/application": APP, "apiary.io/node": name},
            },
            "spec": {"node": name, "application": APP},
        },
    )
    api.call(
        "PATCH",
        f"{STATES}/{sname}/status",
        state_status(True, "1 program(s) loaded, 1 link(s) attached"),
        "application/merge-patch+json",
    )


def wait_status(api, pred, limit=60.0):
    """Seconds until the application's status satisfies pred (polled every 10 ms)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        a = api.call("GET", f"{APPS}/{APP}") or {}
        if pred(a.get("status") or {}):
            return time.monotonic() - t0
        time.sleep(0.01)
    raise RuntimeError(f"status not reached in {limit}s: {a.get('status')}")


def mem_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(line.split()[1])
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    apiary = binary()
    env = dict(os.environ, APIARY_KUBE_DIR=KDIR)
    sh("sh", "scripts/kube-testenv.sh", "up", "--dir", KDIR, env=env, cwd=ROOT)
    op = None
    try:
        kubeconfig = f"{KDIR}/kubeconfig"
        server = open(f"{KDIR}/server").read().strip()
        api = Api(server)
        sh(apiary, "k8s", "install", "--kubeconfig", kubeconfig)
        log = open(f"{KDIR}/operator.log", "w")
        op = subprocess.Popen(
            [apiary, "operator", "--kubeconfig", kubeconfig, "--lease-namespace", "default",
             "--identity", "bench"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
        api.call(
            "POST",
            APPS,
            {
                "apiVersion": "apiary.io/v1alpha1",
                "kind": "ClusterBpfApplication",
                "metadata": {"name": APP},
                "spec": {
                    "nodeSelector": {"matchLabels": {LABEL: "yes"}},
                    "byteCode": {"path": "/opt/none.o"},
                    "programs": [{"name": "p", "type": "XDP", "xdp": {"links": [
                        {"interfaceSelector": {"primaryNodeInterface": True}, "priority": 5}]}}],
                },
            },
        )
        wait_status(api, lambda s: s.get("ready") == "0/0", 30)
        idle = mem_kb(op.pid)
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: make_node(api, i), range(n)))
        write_s = time.monotonic() - t0
        ready = wait_status(
            api,
            lambda s: s.get("ready") == f"{n}/{n}"
            and (s.get("conditions") or [{}])[0].get("type") == "Success",
        )
        # One node turns to Error.
        bad = f"{APP}-scale-0007"
        api.call("PATCH", f"{STATES}/{bad}/status", state_status(False, "interface eth9 not found"),
                 "application/merge-patch+json")
        error = wait_status(
            api,
            lambda s: s.get("ready") == f"{n - 1}/{n}"
            and "scale-0007: interface eth9 not found" in (s.get("conditions") or [{}])[0].get("message", ""),
        )
        # A Node is deleted: its state object goes, the status counts the others.
        api.call("DELETE", "/api/v1/nodes/scale-0007")
        t1 = time.monotonic()
        gone = wait_status(api, lambda s: s.get("ready") == f"{n - 1}/{n - 1}")
        while api.exists(f"{STATES}/{bad}"):
            if time.monotonic() - t1 > 30:
                raise RuntimeError("the deleted node's state object stays")
            time.sleep(0.01)
        cleaned = time.monotonic() - t1
        loaded = mem_kb(op.pid)
        res = {
            "nodes": n,
            "write_all_s": round(write_s, 2),
            "last_write_to_ready_status_s": round(ready, 3),
            "state_error_to_status_s": round(error, 3),
            "node_deleted_to_status_s": round(gone, 3),
            "node_deleted_to_state_removed_s": round(cleaned, 3),
            "operator_rss_idle_kb": idle.get("VmRSS"),
            "operator_rss_kb": loaded.get("VmRSS"),
            "operator_rss_peak_kb": loaded.get("VmHWM"),
            "binary": os.path.relpath(apiary, ROOT),
        }
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "operator_scale.json"), "w") as f:
            json.dump(res, f, indent=2)
        print(json.dumps(res, indent=2))
    finally:
        if op:
            op.kill()
            op.wait()
        subprocess.run(["sh", "scripts/kube-testenv.sh", "down", "--dir", KDIR], cwd=ROOT, env=env,
                       capture_output=True)


if __name__ == "__main__":
    main()
