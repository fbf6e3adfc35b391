//! Unit tests: pure, no root. The kernel side is proven by the CLI's `apply` suite.

mod cel;
mod crds;
mod documents;
mod manifests;
mod plans;

use crate::crd::ApplicationSpec;

/// A spec from YAML (the `spec:` part only).
pub fn spec(yaml: &str) -> ApplicationSpec {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("bad test spec: {e}\n{yaml}"))
}
