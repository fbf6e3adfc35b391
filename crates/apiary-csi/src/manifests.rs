//! The Kubernetes objects the plugin needs, for `apiary k8s manifests`: the CSIDriver object
//! and the node-driver-registrar sidecar that announces the plugin's socket to the kubelet.

use crate::DRIVER_NAME;
use serde_json::{json, Value};

/// The kubelet's plugin registration and pods directories on a standard node.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";

/// The CSIDriver object: inline (ephemeral) volumes only, no attach step, the pod's details
/// passed on mount (its namespace picks a namespaced application), and the fsGroup handed to
/// the plugin (`File`: the plugin applies it, since it reports VOLUME_MOUNT_GROUP).
pub fn csi_driver() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": { "name": DRIVER_NAME },
        "spec": {
            "attachRequired": false,
            "podInfoOnMount": true,
            "volumeLifecycleModes": ["Ephemeral"],
            "fsGroupPolicy": "File",
        },
    })
}

/// Where the plugin's socket is on the node, as the kubelet sees it (the plugin container
/// mounts this directory and serves `unix://<it>/csi.sock`).
pub fn plugin_dir() -> String {
    format!("{KUBELET_DIR}/plugins/{DRIVER_NAME}")
}

/// The node-driver-registrar container for the agent's DaemonSet pod. It expects volumes
/// `plugin-dir` (hostPath `plugin_dir()`, mounted at /csi in the registrar and at the same
/// path in the plugin) and `registration-dir` (hostPath /var/lib/kubelet/plugins_registry).
pub fn registrar_container(image: &str) -> Value {
    json!({
        "name": "node-driver-registrar",
        "image": image,
        "args": [
            "--csi-address=/csi/csi.sock",
            format!("--kubelet-registration-path={}/csi.sock", plugin_dir()),
            "--v=2",
        ],
        "volumeMounts": [
            { "name": "plugin-dir", "mountPath": "/csi" },
            { "name": "registration-dir", "mountPath": "/registration" },
        ],
    })
}

/// The two hostPath volumes `registrar_container` mounts.
pub fn registrar_volumes() -> Value {
    json!([
        {
            "name": "plugin-dir",
            "hostPath": { "path": plugin_dir(), "type": "DirectoryOrCreate" },
        },
        {
            "name": "registration-dir",
            "hostPath": { "path": format!("{KUBELET_DIR}/plugins_registry"), "type": "Directory" },
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_object_declares_inline_volumes_only() {
        let d = csi_driver();
        assert_eq!(d["metadata"]["name"], DRIVER_NAME);
        assert_eq!(d["spec"]["attachRequired"], false);
        assert_eq!(d["spec"]["podInfoOnMount"], true);
        assert_eq!(d["spec"]["volumeLifecycleModes"], json!(["Ephemeral"]));
        assert_eq!(d["spec"]["fsGroupPolicy"], "File");
        let r =
            registrar_container("registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0");
        assert_eq!(
            r["args"][1],
            "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.apiary.io/csi.sock"
        );
    }
}
