//! The CRDs, generated from these Rust types (kube-rs derive) with their CEL rules.

mod kinds;
mod programs;
pub mod rollout;
mod spec;
mod trace;
mod types;

pub use kinds::*;
pub use programs::*;
pub use spec::*;
pub use trace::*;
pub use types::{member_message, BpfProgramType, TypeEntry, TYPES};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD apiary defines.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        BpfApplication::crd(),
        ClusterBpfApplication::crd(),
        BpfApplicationState::crd(),
        ClusterBpfApplicationState::crd(),
        TraceJob::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, for `kubectl apply -f -`.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}
