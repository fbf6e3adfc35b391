//! `apiary rollout status|pause|resume|undo`: read the rollout the operator records, or change
//! the spec fields the operator follows (`spec.rollout.paused`; `undo` puts the current
//! revision's bytecode and global data back in the spec).

use crate::crd::rollout::RolloutStatus;
use crate::crd::{ApplicationSpec, ApplicationStatus, BpfApplication, ClusterBpfApplication};
use crate::error::{request, KubeError};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

/// The application a command names: cluster-scoped without a namespace.
pub struct Target {
    pub name: String,
    pub namespace: Option<String>,
}

impl Target {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("BpfApplication {ns}/{}", self.name),
            None => format!("ClusterBpfApplication {}", self.name),
        }
    }

    async fn read(
        &self,
        client: &Client,
    ) -> Result<(ApplicationSpec, Option<ApplicationStatus>), KubeError> {
        let what = format!("reading {}", self.describe());
        match &self.namespace {
            Some(ns) => {
                let a = Api::<BpfApplication>::namespaced(client.clone(), ns)
                    .get(&self.name)
                    .await
                    .map_err(request(what))?;
                Ok((a.spec.app, a.status))
            }
            None => {
                let a = Api::<ClusterBpfApplication>::all(client.clone())
                    .get(&self.name)
                    .await
                    .map_err(request(what))?;
                Ok((a.spec.app, a.status))
            }
        }
    }

    async fn patch_spec(&self, client: &Client, body: serde_json::Value) -> Result<(), KubeError> {
        let what = format!("changing the spec of {}", self.describe());
        let p = PatchParams::default();
        match &self.namespace {
            Some(ns) => Api::<BpfApplication>::namespaced(client.clone(), ns)
                .patch(&self.name, &p, &Patch::Merge(&body))
                .await
                .map(|_| ())
                .map_err(request(what)),
            None => Api::<ClusterBpfApplication>::all(client.clone())
                .patch(&self.name, &p, &Patch::Merge(&body))
                .await
                .map(|_| ())
                .map_err(request(what)),
        }
    }
}

/// The rollout as the operator recorded it (None: the application has no rollout yet).
pub async fn status(client: &Client, t: &Target) -> Result<Option<RolloutStatus>, KubeError> {
    let (_, status) = t.read(client).await?;
    Ok(status.and_then(|s| s.rollout))
}

/// Set `spec.rollout.paused`.
pub async fn set_paused(client: &Client, t: &Target, paused: bool) -> Result<(), KubeError> {
    let (spec, _) = t.read(client).await?;
    if spec.rollout.is_none() {
        return Err(KubeError::Apply {
            what: format!("{} has no spec.rollout", t.describe()),
        });
    }
    t.patch_spec(
        client,
        json!({ "spec": { "rollout": { "paused": paused } } }),
    )
    .await
}

/// Put the current revision's bytecode and global data back in the spec: the operator sends
/// every node back to it. Returns the revision.
pub async fn undo(client: &Client, t: &Target) -> Result<String, KubeError> {
    let (spec, status) = t.read(client).await?;
    let ro = status
        .and_then(|s| s.rollout)
        .ok_or_else(|| KubeError::Apply {
            what: format!("{} has no rollout to undo", t.describe()),
        })?;
    let src = ro
        .revisions
        .get(&ro.current_revision)
        .ok_or_else(|| KubeError::Apply {
            what: format!(
                "the source of revision {} is not recorded",
                ro.current_revision
            ),
        })?;
    // A merge patch merges maps: globals the current revision does not set are removed
    // with an explicit null.
    let mut globals = serde_json::Map::new();
    for k in spec.global_data.keys() {
        globals.insert(k.clone(), serde_json::Value::Null);
    }
    for (k, v) in &src.global_data {
        globals.insert(k.clone(), serde_json::to_value(v).unwrap_or_default());
    }
    let mut byte_code = serde_json::to_value(&src.byte_code).unwrap_or_default();
    // The other source is removed (exactly one of image and path).
    if let Some(o) = byte_code.as_object_mut() {
        o.entry("image").or_insert(serde_json::Value::Null);
        o.entry("path").or_insert(serde_json::Value::Null);
    }
    t.patch_spec(
        client,
        json!({ "spec": { "byteCode": byte_code, "globalData": globals } }),
    )
    .await?;
    Ok(ro.current_revision)
}

/// Run one of these with a client, for a program without an async runtime of its own.
pub use crate::install::blocking;
