//! apiary on Kubernetes: the CRDs (`apiary.io/v1alpha1` BpfApplication, ClusterBpfApplication
//! and their per-node State kinds, schema-compatible with bpfman-operator's), the documents
//! `apiary apply -f` reads, and the reconciler that makes one node match one application: a
//! pure plan, then one pass of the manager's API. The node agent runs the same reconciler.

pub mod agent;
mod cache;
pub mod crd;
pub mod document;
mod error;
pub mod execute;
pub mod facts;
mod hooks;
pub mod install;
pub mod manifests;
pub mod operator;
pub mod plan;
pub mod trace_jobs;
pub mod validate;
pub mod view;

pub use error::{ApplyError, DocumentError, KubeError};

#[cfg(test)]
mod tests;
