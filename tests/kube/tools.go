//go:build tools

// Package tools names the programs this module exists to build, so that go.mod and go.sum pin
// them: scripts/kube-testenv.sh builds each with `go build -trimpath -ldflags=-s PACKAGE`.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
