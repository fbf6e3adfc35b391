//! The agent's writes: the per-node state objects (server-side apply, status included) and
//! its finalizer on the applications.

use super::{finalizer, state_name, APP_LABEL, NODE_LABEL};
use crate::crd::{
    AppLoadStatus, ApplicationStateStatus, BpfApplication, BpfApplicationState,
    ClusterBpfApplication, ClusterBpfApplicationState, ProgramLinkStatus, GROUP, VERSION,
};
use crate::document::{AppKey, AppKind};
use crate::error::{request, KubeError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

/// What the agent needs of an application to write about it.
pub(crate) struct AppRef {
    pub key: AppKey,
    pub uid: Option<String>,
    pub finalizers: Vec<String>,
}

impl AppRef {
    pub fn of<K: Resource>(obj: &K, kind: AppKind) -> AppRef {
        let m = obj.meta();
        AppRef {
            key: AppKey {
                kind,
                namespace: m.namespace.clone(),
                name: m.name.clone().unwrap_or_default(),
            },
            uid: m.uid.clone(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        }
    }

    /// An application that no longer exists (only its state object may be left).
    pub fn gone(key: AppKey) -> AppRef {
        AppRef {
            key,
            uid: None,
            finalizers: Vec::new(),
        }
    }

    pub fn state_key(&self, node: &str) -> String {
        format!("{}@{node}", self.key)
    }

    fn app_api(&self, client: &Client) -> Api<DynamicObject> {
        match self.key.kind {
            AppKind::ClusterBpfApplication => Api::all_with(
                client.clone(),
                &ApiResource::erase::<ClusterBpfApplication>(&()),
            ),
            AppKind::BpfApplication => Api::namespaced_with(
                client.clone(),
                self.key.namespace.as_deref().unwrap_or("default"),
                &ApiResource::erase::<BpfApplication>(&()),
            ),
        }
    }

    fn state_api(&self, client: &Client) -> (Api<DynamicObject>, &'static str) {
        match self.key.kind {
            AppKind::ClusterBpfApplication => (
                Api::all_with(
                    client.clone(),
                    &ApiResource::erase::<ClusterBpfApplicationState>(&()),
                ),
                "ClusterBpfApplicationState",
            ),
            AppKind::BpfApplication => (
                Api::namespaced_with(
                    client.clone(),
                    self.key.namespace.as_deref().unwrap_or("default"),
                    &ApiResource::erase::<BpfApplicationState>(&()),
                ),
                "BpfApplicationState",
            ),
        }
    }
}

fn field_manager(node: &str) -> String {
    format!("apiary-agent-{node}")
}

/// Add this node's finalizer unless the application has it. Server-side applied under the
/// node's own field manager: finalizers are a set, so the agents of several nodes adding
/// theirs at once never conflict or drop each other's.
pub(crate) async fn ensure_finalizer(
    client: &Client,
    app: &AppRef,
    node: &str,
) -> Result<(), KubeError> {
    if app.finalizers.contains(&finalizer(node)) {
        return Ok(());
    }
    apply_finalizer(client, app, node, true).await
}

/// Remove this node's finalizer (applying the set without it).
pub(crate) async fn remove_finalizer(
    client: &Client,
    app: &AppRef,
    node: &str,
) -> Result<(), KubeError> {
    if !app.finalizers.contains(&finalizer(node)) {
        return Ok(());
    }
    apply_finalizer(client, app, node, false).await
}

async fn apply_finalizer(
    client: &Client,
    app: &AppRef,
    node: &str,
    present: bool,
) -> Result<(), KubeError> {
    let list: Vec<String> = if present {
        vec![finalizer(node)]
    } else {
        Vec::new()
    };
    let mut meta = json!({ "name": app.key.name, "finalizers": list });
    if let Some(ns) = &app.key.namespace {
        meta["namespace"] = json!(ns);
    }
    let body = json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": app.key.kind.name(),
        "metadata": meta,
    });
    match app
        .app_api(client)
        .patch(
            &app.key.name,
            &PatchParams::apply(&field_manager(node)).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Released meanwhile by the last finalizer going: nothing left to do.
        Err(kube::Error::Api(e)) if e.code == 404 && !present => Ok(()),
        Err(e) => Err(request(format!("setting the finalizer of {}", app.key))(e)),
    }
}

/// Delete the node's state object of `app` (gone already is fine).
pub(crate) async fn delete(client: &Client, app: &AppRef, node: &str) -> Result<(), KubeError> {
    let (api, _) = app.state_api(client);
    let name = state_name(&app.key.name, node);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(request(format!("deleting state object {name}"))(e)),
    }
}

/// Write the node's state object of `app` with `status`; returns its new updateCount.
pub(crate) async fn write(
    client: &Client,
    app: &AppRef,
    node: &str,
    mut status: ApplicationStateStatus,
) -> Result<i64, KubeError> {
    let (api, kind) = app.state_api(client);
    let name = state_name(&app.key.name, node);
    let params = PatchParams::apply(&field_manager(node)).force();
    let api_version = format!("{GROUP}/{VERSION}");
    let app_kind = app.key.kind.name();
    // Owned by the application, so a cluster with a garbage collector removes it with it even
    // if no agent is left to.
    let owner = app.uid.as_ref().map(|uid| {
        json!([{ "apiVersion": api_version, "kind": app_kind, "name": app.key.name, "uid": uid }])
    });
    let mut meta = json!({
        "name": name,
        "labels": { APP_LABEL: app.key.name, NODE_LABEL: node },
    });
    if let Some(o) = owner {
        meta["ownerReferences"] = o;
    }
    let object = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": meta,
        "spec": { "node": node, "application": app.key.name },
    });
    let current = api
        .patch(&name, &params, &Patch::Apply(&object))
        .await
        .map_err(request(format!("writing state object {name}")))?;
    let before = current
        .data
        .get("status")
        .and_then(|s| s.get("updateCount"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    status.update_count = before + 1;
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "name": name },
        "status": status,
    });
    api.patch_status(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(request(format!(
            "writing the status of state object {name}"
        )))?;
    Ok(status.update_count)
}

fn condition(ok: bool, message: String) -> Condition {
    let word = if ok { "Success" } else { "Error" };
    Condition {
        type_: word.into(),
        status: "True".into(),
        reason: word.into(),
        message,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: None,
    }
}

/// The executor's state with its condition: Success when every program is loaded and every
/// link attached, else Error with the first problem's message (the verifier's key line, the
/// missing interface...).
pub(crate) fn with_condition(mut s: ApplicationStateStatus) -> ApplicationStateStatus {
    let links: usize = s.programs.iter().map(|p| p.links.len()).sum();
    let failed: Vec<String> = s
        .programs
        .iter()
        .filter(|p| p.program_link_status != ProgramLinkStatus::Success)
        .map(|p| format!("{}: {}", p.name, p.message.as_deref().unwrap_or("failed")))
        .collect();
    let c = if failed.is_empty() && s.app_load_status != AppLoadStatus::LoadError {
        condition(
            true,
            format!(
                "{} program(s) loaded, {links} link(s) attached",
                s.programs.len()
            ),
        )
    } else {
        condition(false, failed.join("; "))
    };
    s.conditions = vec![c];
    s
}

/// A state for an application that could not be converged at all.
pub(crate) fn failed(message: String) -> ApplicationStateStatus {
    ApplicationStateStatus {
        update_count: 0,
        app_load_status: AppLoadStatus::LoadError,
        conditions: vec![condition(false, message)],
        ..ApplicationStateStatus::default()
    }
}

/// Whether two states say the same (their counters and condition times aside).
pub(crate) fn same(a: &ApplicationStateStatus, b: &ApplicationStateStatus) -> bool {
    let strip = |s: &ApplicationStateStatus| {
        let mut s = s.clone();
        s.update_count = 0;
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}
