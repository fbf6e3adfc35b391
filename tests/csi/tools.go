//go:build tools

// Keeps csi-sanity's command package in this module's build list, so `go build
// github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity` here builds it at the pinned version.
package tools

import _ "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
