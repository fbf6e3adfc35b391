#!/bin/sh
# A real Kubernetes control plane for the tests: etcd and kube-apiserver on 127.0.0.1, built from
# the Go module in tests/kube (versions pinned in its go.mod), with a generated CA, client
# certificates and RBAC on. No kubelet, scheduler or controller-manager runs: tests create Node
# objects themselves (`node`), and nothing garbage-collects owner references or empties
# terminating namespaces.
#
#   kube-testenv.sh build                 build the binaries into the cache unless they are there
#   kube-testenv.sh up    [--dir DIR]     build if missing, start etcd and kube-apiserver, wait for
#                                         /readyz, write DIR/kubeconfig (admin); a no-op when up
#   kube-testenv.sh env   [--dir DIR]     print export lines: KUBECONFIG, APIARY_KUBECTL (kubectl's
#                                         path), APIARY_KUBE_SERVER (the URL), APIARY_KUBE_DIR
#   kube-testenv.sh down  [--dir DIR]     stop both, remove DIR; a no-op when not up
#   kube-testenv.sh restart-apiserver [--dir DIR]
#                                         stop kube-apiserver as a node would (SIGTERM, SIGKILL
#                                         after 5 s) and start it again on the same port and etcd
#   kube-testenv.sh node NAME [label=value...] [--ip ADDR] [--dir DIR]
#                                         create or update a Node object (labels, InternalIP)
#   kube-testenv.sh user NAME [GROUP...] [--dir DIR]
#                                         a client certificate for user NAME (no rights until RBAC
#                                         grants some); prints the path of its kubeconfig
#
# DIR defaults to $APIARY_KUBE_DIR, else /tmp/apiary-kube; give each parallel user its own.
# The binaries are cached in ${APIARY_KUBE_CACHE:-$HOME/.cache/apiary/kube}/K8S-ETCD/bin. Logs
# are DIR/etcd.log and DIR/kube-apiserver.log; a failed start prints their tails.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=$ROOT/tests/kube

say() { echo "==> $*" >&2; }
die() { echo "kube-testenv: $*" >&2; exit 1; }

# The versions come from go.mod, so that bumping them there changes the cache key.
module_version() {
    awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$MODULE/go.mod"
}
K8S_VERSION=$(module_version k8s.io/kubernetes)
ETCD_VERSION=$(module_version go.etcd.io/etcd/server/v3)
[ -n "$K8S_VERSION" ] && [ -n "$ETCD_VERSION" ] || die "no k8s.io/kubernetes or etcd version in $MODULE/go.mod"
CACHE=${APIARY_KUBE_CACHE:-${HOME:-/root}/.cache/apiary/kube}/$K8S_VERSION-$ETCD_VERSION
BIN=$CACHE/bin
KUBECTL=$BIN/kubectl

go_bin() {
    command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true
}

have_binaries() {
    [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ]
}

build() {
    have_binaries && return 0
    mkdir -p "$CACHE"
    # Test processes may ask at the same time: one builds, the others wait and find it built.
    exec 8>"$CACHE/.lock"
    flock 8
    if ! have_binaries; then
        go=$(go_bin)
        [ -n "$go" ] || die "go not found: Go 1.26 builds the test control plane (tests/kube)"
        say "building etcd $ETCD_VERSION, kube-apiserver and kubectl $K8S_VERSION into $BIN (from nothing: 3 to 8 minutes on 2 cores)"
        rm -rf "$CACHE/build.tmp"
        mkdir -p "$CACHE/build.tmp"
        started=$(date +%s)
        # One invocation, so the three share compiled packages and build in parallel.
        (cd "$MODULE" && "$go" build -trimpath -ldflags=-s -o "$CACHE/build.tmp/" \
            go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
        # etcd's main package is the module root, so go names the binary after its path: server.
        mv "$CACHE/build.tmp/server" "$CACHE/build.tmp/etcd"
        rm -rf "$BIN"
        mv "$CACHE/build.tmp" "$BIN"
        say "built in $(($(date +%s) - started)) s"
    fi
    exec 8>&-
}

# ---- state directory -------------------------------------------------------------------------

DIR=${APIARY_KUBE_DIR:-/tmp/apiary-kube}
ARGS=""
parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --dir) [ $# -ge 2 ] || die "--dir needs a directory"; DIR=$2; shift 2 ;;
            --dir=*) DIR=${1#--dir=}; shift ;;
            *) ARGS="$ARGS $(quote "$1")"; shift ;;
        esac
    done
    case $DIR in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
    DIR=${DIR%/}
}
# Single-quotes a word for a later `eval set --`.
quote() { printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"; }

# A pid from DIR's pidfile, only while that process is still ours: its command line names DIR
# (pids are reused, and `down` must never kill a stranger).
live_pid() {
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && running "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

is_up() {
    live_pid etcd >/dev/null && live_pid kube-apiserver >/dev/null && [ -f "$DIR/kubeconfig" ] &&
        "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1
}

# SIGKILL, not a graceful stop: the state is thrown away next, and a graceful stop takes each
# server two seconds or more.
stop() {
    name=$1
    pid=$(live_pid "$name") || { rm -f "$DIR/$name.pid"; return 0; }
    kill -9 "$pid" 2>/dev/null || true
    i=0
    while running "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    rm -f "$DIR/$name.pid"
}

# Alive and not a zombie: a server started by an earlier `up` is reparented to pid 1, which may
# take seconds to reap it.
running() {
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

restart_apiserver() {
    pid=$(live_pid kube-apiserver) || die "no kube-apiserver runs for $DIR"
    started=$(date +%s%N)
    # SIGTERM: it stops listening and drains; with watches open the drain can take a minute, so
    # after 5 s it is killed (as a node's runtime would after its grace period).
    kill -TERM "$pid"
    i=0
    while running "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    running "$pid" && kill -9 "$pid" 2>/dev/null
    i=0
    while running "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    running "$pid" && die "kube-apiserver $pid did not stop"
    rm -f "$DIR/kube-apiserver.pid"
    mv "$DIR/kube-apiserver.log" "$DIR/kube-apiserver.log.1"
    start_apiserver || { log_tails; die "kube-apiserver did not start again"; }
    ms=$((($(date +%s%N) - started) / 1000000))
    say "kube-apiserver restarted in $((ms / 1000)).$(printf %03d $((ms % 1000))) s: $(cat "$DIR/server")"
}

down() {
    [ -d "$DIR" ] || return 0
    stop kube-apiserver
    stop etcd
    rm -rf "$DIR"
}

# ---- certificates ----------------------------------------------------------------------------

# A P-256 key and a certificate signed by the test CA: name, subject, extendedKeyUsage, SANs.
issue() {
    cert=$1 subject=$2 usage=$3 san=${4:-}
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$cert.key" 2>/dev/null
    openssl req -new -key "$PKI/$cert.key" -subj "$subject" -out "$PKI/$cert.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [ -z "$san" ] || echo "subjectAltName=$san"
    } >"$PKI/$cert.ext"
    openssl x509 -req -in "$PKI/$cert.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
        -days 30 -extfile "$PKI/$cert.ext" -out "$PKI/$cert.crt" 2>/dev/null
    rm -f "$PKI/$cert.csr" "$PKI/$cert.ext"
}

make_pki() {
    PKI=$DIR/pki
    mkdir -p "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=apiary-test-ca" -days 30 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$PKI/ca.crt" 2>/dev/null
    # etcd dials its own client port too (its HTTP gateway), presenting this certificate.
    issue etcd "/CN=etcd" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
    issue apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
    # The in-cluster names and the service range's first address too, as a real apiserver has.
    issue apiserver "/CN=kube-apiserver" serverAuth \
        "IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue admin "/O=system:masters/CN=apiary-admin" clientAuth
    # The service-account token signing pair.
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# A self-contained kubeconfig (certificates embedded) for one client certificate.
write_kubeconfig() {
    out=$1 cert=$2 server=$3
    b64() { base64 -w0 <"$1"; }
    cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: apiary-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$DIR/pki/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(b64 "$DIR/pki/$cert.crt")
    client-key-data: $(b64 "$DIR/pki/$cert.key")
contexts:
- name: apiary-test
  context:
    cluster: apiary-test
    user: $cert
current-context: apiary-test
EOF
    mv "$out.tmp" "$out"
}

# ---- start -----------------------------------------------------------------------------------

# Three free TCP ports on 127.0.0.1, held together while chosen so that they differ.
free_ports() {
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    "$py" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
'
}

log_tails() {
    for log in etcd kube-apiserver; do
        [ -f "$DIR/$log.log" ] || continue
        echo "---- last lines of $DIR/$log.log" >&2
        tail -n 25 "$DIR/$log.log" >&2
    done
}

# Waits until `check` passes, failing early when the process behind pidfile NAME has died.
wait_for() {
    name=$1 what=$2 timeout=$3
    shift 3
    i=0
    while ! "$@" >/dev/null 2>&1; do
        live_pid "$name" >/dev/null || { echo "kube-testenv: $name exited before $what" >&2; return 1; }
        [ $i -lt $((timeout * 10)) ] || { echo "kube-testenv: no $what after ${timeout} s" >&2; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
}

etcd_listening() {
    # etcd logs this line once its client listener serves.
    grep -q '"serving client traffic securely"' "$DIR/etcd.log"
}

start_once() {
    rm -rf "$DIR"
    mkdir -p "$DIR"
    make_pki
    set -- $(free_ports)
    etcd_port=$1 peer_port=$2 api_port=$3
    server=https://127.0.0.1:$api_port
    # etcd: TLS with client certificates for its clients; its peer URL is plain http on 127.0.0.1,
    # since a single member has no peers. No fsync: test data, and the disk is shared.
    "$BIN/etcd" --name apiary-test --data-dir "$DIR/etcd" \
        --listen-client-urls "https://127.0.0.1:$etcd_port" --advertise-client-urls "https://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "apiary-test=http://127.0.0.1:$peer_port" --initial-cluster-state new \
        --cert-file "$DIR/pki/etcd.crt" --key-file "$DIR/pki/etcd.key" \
        --trusted-ca-file "$DIR/pki/ca.crt" --client-cert-auth \
        --unsafe-no-fsync --log-outputs stderr \
        </dev/null >"$DIR/etcd.log" 2>&1 8>&- 9>&- &
    echo $! >"$DIR/etcd.pid"
    wait_for etcd "etcd serving" 30 etcd_listening || return 1
    echo "$etcd_port $api_port" >"$DIR/ports"
    write_kubeconfig "$DIR/kubeconfig" admin "$server"
    echo "$server" >"$DIR/server"
    start_apiserver
}

# kube-apiserver on the ports of DIR/ports, against DIR's etcd.
start_apiserver() {
    read -r etcd_port api_port <"$DIR/ports"
    # The ServiceAccount admission plugin wants each namespace's default ServiceAccount, which only
    # the controller-manager (not run) creates. The endpoint reconciler would publish the apiserver
    # in the kubernetes Service's Endpoints, which refuse a loopback address.
    "$BIN/kube-apiserver" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --etcd-servers "https://127.0.0.1:$etcd_port" --etcd-cafile "$DIR/pki/ca.crt" \
        --etcd-certfile "$DIR/pki/apiserver-etcd-client.crt" --etcd-keyfile "$DIR/pki/apiserver-etcd-client.key" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --cert-dir "$DIR/pki" --client-ca-file "$DIR/pki/ca.crt" \
        --authorization-mode RBAC \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
        --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none \
        --profiling=false \
        </dev/null >"$DIR/kube-apiserver.log" 2>&1 8>&- 9>&- &
    echo $! >"$DIR/kube-apiserver.pid"
    wait_for kube-apiserver "/readyz" 90 "$KUBECTL" --kubeconfig "$DIR/kubeconfig" get --raw /readyz
}

up() {
    build
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock 9
    if is_up; then
        say "already up: $(cat "$DIR/server") ($DIR)"
        exec 9>&-
        return 0
    fi
    down
    started=$(date +%s%N)
    # A port picked free can be taken before the server binds it: try again with new ones.
    tries=0
    until start_once; do
        tries=$((tries + 1))
        if [ $tries -ge 3 ] || ! grep -qi "address already in use" "$DIR"/*.log 2>/dev/null; then
            log_tails
            down
            exec 9>&-
            die "the control plane did not start"
        fi
        say "a port was taken; starting again"
        down
    done
    ms=$((($(date +%s%N) - started) / 1000000))
    say "up in $((ms / 1000)).$(printf %03d $((ms % 1000))) s: $(cat "$DIR/server") ($DIR)"
    exec 9>&-
}

print_env() {
    [ -f "$DIR/kubeconfig" ] && [ -f "$DIR/server" ] || die "not up (no $DIR/kubeconfig): run up first"
    echo "export KUBECONFIG=$DIR/kubeconfig"
    echo "export APIARY_KUBECTL=$KUBECTL"
    echo "export APIARY_KUBE_SERVER=$(cat "$DIR/server")"
    echo "export APIARY_KUBE_DIR=$DIR"
}

# ---- objects for tests -----------------------------------------------------------------------

node() {
    [ $# -ge 1 ] || die "usage: node NAME [label=value...] [--ip ADDR]"
    name=$1
    shift
    ip="" labels="    kubernetes.io/hostname: \"$name\""
    while [ $# -gt 0 ]; do
        case $1 in
            --ip) [ $# -ge 2 ] || die "--ip needs an address"; ip=$2; shift 2 ;;
            --ip=*) ip=${1#--ip=}; shift ;;
            *=*) labels="$labels
    \"${1%%=*}\": \"${1#*=}\""; shift ;;
            *) die "node: '$1' is neither label=value nor --ip ADDR" ;;
        esac
    done
    [ -f "$DIR/kubeconfig" ] || die "not up (no $DIR/kubeconfig): run up first"
    k() { "$KUBECTL" --kubeconfig "$DIR/kubeconfig" "$@"; }
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: "$name"
  labels:
$labels
EOF
    # Status is a subresource: what a kubelet would report, here Ready and the addresses.
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    addresses="{\"type\":\"Hostname\",\"address\":\"$name\"}"
    [ -z "$ip" ] || addresses="{\"type\":\"InternalIP\",\"address\":\"$ip\"},$addresses"
    k patch node "$name" --subresource=status --type=merge -p "{\"status\":{
        \"addresses\":[$addresses],
        \"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"ApiaryTestNode\",
            \"message\":\"simulated by kube-testenv.sh; no kubelet runs\",
            \"lastHeartbeatTime\":\"$now\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
    echo "node/$name"
}

user() {
    [ $# -ge 1 ] || die "usage: user NAME [GROUP...]"
    name=$1
    shift
    subject=""
    for group in "$@"; do subject="$subject/O=$group"; done
    [ -f "$DIR/server" ] || die "not up (no $DIR/server): run up first"
    PKI=$DIR/pki
    mkdir -p "$DIR/users"
    issue "user-$name" "$subject/CN=$name" clientAuth
    write_kubeconfig "$DIR/users/$name.kubeconfig" "user-$name" "$(cat "$DIR/server")"
    echo "$DIR/users/$name.kubeconfig"
}

[ $# -ge 1 ] || die "usage: $0 build|up|env|down|node|user|restart-apiserver [--dir DIR]"
cmd=$1
shift
parse_args "$@"
eval set -- "$ARGS"
case $cmd in
    build) build ;;
    up) up ;;
    env) print_env ;;
    down)
        [ -d "$DIR" ] || exit 0
        exec 9>"$DIR.lock"
        flock 9
        down
        ;;
    node) node "$@" ;;
    user) user "$@" ;;
    restart-apiserver)
        exec 9>"$DIR.lock"
        flock 9
        restart_apiserver
        ;;
    *) die "unknown command '$cmd': build|up|env|down|node|user|restart-apiserver" ;;
esac
