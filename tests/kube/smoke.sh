#!/bin/sh
# Proves the test control plane of scripts/kube-testenv.sh works before any test relies on it:
# a Node created through the API reads back with its labels and InternalIP, and RBAC is enforced
# for a user certificate without rights until a ClusterRole binding grants them.
# Needs KUBECONFIG and APIARY_KUBECTL from `kube-testenv.sh env`; APIARY_KUBE_DIR names the
# state directory (the default of kube-testenv.sh otherwise).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TESTENV="$ROOT/scripts/kube-testenv.sh"
: "${KUBECONFIG:?run kube-testenv.sh env first}" "${APIARY_KUBECTL:?run kube-testenv.sh env first}"
: "${APIARY_KUBE_SERVER:?run kube-testenv.sh env first}"
DIR=${APIARY_KUBE_DIR:-/tmp/apiary-kube}
k() { "$APIARY_KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

passed=0 failed=0
check() {
    what=$1 want=$2 got=$3
    if [ "$got" = "$want" ]; then
        passed=$((passed + 1))
        echo "ok: $what"
    else
        failed=$((failed + 1))
        echo "FAILED: $what: wanted '$want', got '$got'"
    fi
}

# "Forbidden" when the command fails with the apiserver's RBAC refusal, else what happened.
refusal() {
    if out=$("$@" 2>&1); then echo "allowed: $out"; return; fi
    case $out in *"is forbidden: User \"$SMOKE_USER\" cannot"*) echo Forbidden ;; *) echo "failed otherwise: $out" ;; esac
}

NODE=apiary-smoke-node
SMOKE_USER=apiary-smoke-user
ROLE=apiary-smoke-node-reader
SMOKE_SA=apiary-smoke-sa
cleanup() {
    k delete clusterrolebinding "$ROLE" --ignore-not-found >/dev/null 2>&1 || true
    k delete clusterrole "$ROLE" --ignore-not-found >/dev/null 2>&1 || true
    k delete node "$NODE" --ignore-not-found >/dev/null 2>&1 || true
    k delete serviceaccount "$SMOKE_SA" --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# A simulated node: the object a kubelet would register, labels and status written by the helper.
sh "$TESTENV" node "$NODE" apiary.io/smoke=yes zone=a --ip 10.200.0.1 --dir "$DIR" >/dev/null
check "node label read back" yes "$(k get node "$NODE" -o jsonpath='{.metadata.labels.apiary\.io/smoke}')"
check "node InternalIP read back" 10.200.0.1 \
    "$(k get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
check "node selected by label" "node/$NODE" "$(k get nodes -l apiary.io/smoke=yes,zone=a -o name)"

# RBAC: a user with a certificate the CA signed but no binding may do nothing.
user_kubeconfig=$(sh "$TESTENV" user "$SMOKE_USER" --dir "$DIR")
u() { "$APIARY_KUBECTL" --kubeconfig "$user_kubeconfig" "$@"; }
check "whoami is the certificate's user" "$SMOKE_USER" "$(u auth whoami -o jsonpath='{.status.userInfo.username}')"
check "no binding: may not get nodes" no "$(u auth can-i get nodes 2>/dev/null || true)"
check "no binding: reading a node refused" Forbidden "$(refusal u get node "$NODE")"

k create clusterrole "$ROLE" --verb=get,list,watch --resource=nodes >/dev/null
k create clusterrolebinding "$ROLE" --clusterrole="$ROLE" --user="$SMOKE_USER" >/dev/null
check "bound: may get nodes" yes "$(u auth can-i get nodes 2>/dev/null || true)"
check "bound: reads the node" "node/$NODE" "$(u get node "$NODE" -o name 2>/dev/null || true)"
check "bound: may still not delete nodes" no "$(u auth can-i delete nodes 2>/dev/null || true)"
check "bound: may still not read secrets" no "$(u auth can-i get secrets -A 2>/dev/null || true)"
check "bound: deleting the node refused" Forbidden "$(refusal u delete node "$NODE")"

# Service-account tokens: the apiserver signs them with the generated key pair and accepts them back
# (what an in-cluster agent authenticates with).
k create serviceaccount "$SMOKE_SA" >/dev/null
token=$(k create token "$SMOKE_SA" --duration 10m)
check "a service-account token authenticates" "system:serviceaccount:default:$SMOKE_SA" \
    "$("$APIARY_KUBECTL" --kubeconfig /dev/null --server "$APIARY_KUBE_SERVER" --certificate-authority "$DIR/pki/ca.crt" \
        --token "$token" auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1)"
check "admin may do anything" yes "$(k auth can-i '*' '*' 2>/dev/null || true)"

echo "kube-smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
