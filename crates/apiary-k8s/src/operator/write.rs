//! The operator's writes: the application's status, its finalizers, and state objects of nodes
//! that are gone.

use super::{FIELD_MANAGER, FINALIZER};
use crate::crd::{
    ApplicationStatus, BpfApplication, BpfApplicationState, ClusterBpfApplication,
    ClusterBpfApplicationState, GROUP, VERSION,
};
use crate::document::{AppKey, AppKind};
use crate::error::{request, KubeError};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::json;

fn api_of<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn app_api(client: &Client, key: &AppKey) -> Api<DynamicObject> {
    match key.kind {
        AppKind::ClusterBpfApplication => api_of::<ClusterBpfApplication>(client, None),
        AppKind::BpfApplication => api_of::<BpfApplication>(client, key.namespace.as_deref()),
    }
}

fn state_api(client: &Client, key: &AppKey) -> Api<DynamicObject> {
    match key.kind {
        AppKind::ClusterBpfApplication => api_of::<ClusterBpfApplicationState>(client, None),
        AppKind::BpfApplication => api_of::<BpfApplicationState>(client, key.namespace.as_deref()),
    }
}

fn metadata(key: &AppKey) -> serde_json::Value {
    let mut meta = json!({ "name": key.name });
    if let Some(ns) = &key.namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

/// Add or remove the operator's finalizer: server-side applied under the operator's own field
/// manager, so the agents' per-node finalizers (applied under theirs) are left alone.
pub async fn own_finalizer(client: &Client, key: &AppKey, present: bool) -> Result<(), KubeError> {
    let list: Vec<&str> = if present { vec![FINALIZER] } else { vec![] };
    let mut meta = metadata(key);
    meta["finalizers"] = json!(list);
    let body = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": key.kind.name(),
        "metadata": meta,
    });
    match app_api(client, key)
        .patch(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Released meanwhile (the last finalizer gone): nothing to do.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(request(format!(
            "setting the operator's finalizer of {key}"
        ))(e)),
    }
}

/// Set the application's finalizers to `keep`, dropping those of nodes that are gone (their
/// agents, the fields' managers, will never remove them). The resourceVersion read makes it
/// fail rather than drop a finalizer added meanwhile; the next pass retries.
pub async fn keep_finalizers(
    client: &Client,
    key: &AppKey,
    keep: &[String],
    resource_version: &str,
) -> Result<(), KubeError> {
    let body = json!({
        "metadata": { "finalizers": keep, "resourceVersion": resource_version },
    });
    match app_api(client, key)
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(request(format!(
            "dropping finalizers of gone nodes from {key}"
        ))(e)),
    }
}

/// Delete a state object (gone already is fine).
pub async fn delete_state(client: &Client, key: &AppKey, name: &str) -> Result<(), KubeError> {
    match state_api(client, key)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(request(format!("deleting state object {name} of {key}"))(e)),
    }
}

/// Write the application's status (server-side apply of the status subresource; the
/// operator is its only writer).
pub async fn status(
    client: &Client,
    key: &AppKey,
    status: &ApplicationStatus,
) -> Result<(), KubeError> {
    let body = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": key.kind.name(),
        "metadata": metadata(key),
        "status": status,
    });
    match app_api(client, key)
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: its status no longer matters.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(request(format!("writing the status of {key}"))(e)),
    }
}
