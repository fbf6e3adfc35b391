//! Reading application objects from YAML (or JSON) the way `kubectl apply -f` would: several
//! documents per file, `List` objects, apiary's group or bpfman-operator's unchanged. Unknown
//! fields are errors, as with kubectl's strict field validation.

use crate::crd::{ApplicationSpec, BPFMAN_GROUP, GROUP, VERSION};
use crate::error::DocumentError;
use serde_json::Value;
use std::fmt;

/// The two kinds of application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppKind {
    BpfApplication,
    ClusterBpfApplication,
}

impl AppKind {
    pub fn name(self) -> &'static str {
        match self {
            AppKind::BpfApplication => "BpfApplication",
            AppKind::ClusterBpfApplication => "ClusterBpfApplication",
        }
    }
    pub fn from_name(s: &str) -> Option<AppKind> {
        [AppKind::BpfApplication, AppKind::ClusterBpfApplication]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// An application's identity on a node: `<kind>/<namespace>/<name>` (namespace empty for a
/// cluster-scoped one). The group is not part of it, so moving a bpfman object to apiary's
/// group by changing `apiVersion` keeps what is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub kind: AppKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.kind.name(),
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
    }
}

impl std::str::FromStr for AppKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, '/');
        let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "invalid application key {s:?}: expected KIND/NAMESPACE/NAME"
            ));
        };
        let kind = AppKind::from_name(kind)
            .ok_or_else(|| format!("invalid application key {s:?}: unknown kind {kind:?}"))?;
        Ok(AppKey {
            kind,
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: name.to_string(),
        })
    }
}

/// One application object read from a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub key: AppKey,
    /// `apiary.io` or `bpfman.io`.
    pub group: String,
    pub spec: ApplicationSpec,
    /// Where it was read (`FILE#N`, N counting documents from 1), for messages.
    pub origin: String,
}

/// Every application object in `text`; empty documents are skipped. `origin` names the file
/// in messages.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Application>, DocumentError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let here = format!("{origin}#{}", i + 1);
        let value = Value::deserialize(doc).map_err(|e| DocumentError::Yaml {
            origin: here.clone(),
            error: e.to_string(),
        })?;
        collect(value, &here, &mut out)?;
    }
    Ok(out)
}

fn collect(value: Value, origin: &str, out: &mut Vec<Application>) -> Result<(), DocumentError> {
    if value.is_null() {
        return Ok(());
    }
    let bad = |what: String| DocumentError::Object {
        origin: origin.to_string(),
        what,
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("apiVersion is missing".into()))?;
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("kind is missing".into()))?;
    if kind == "List" && api_version == "v1" {
        let items = value
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            collect(item, &format!("{origin}.items[{i}]"), out)?;
        }
        return Ok(());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if (group != GROUP && group != BPFMAN_GROUP) || version != VERSION {
        return Err(bad(format!(
            "apiVersion {api_version:?} is not one apiary applies: expected {GROUP}/{VERSION} or {BPFMAN_GROUP}/{VERSION}"
        )));
    }
    let kind = AppKind::from_name(kind).ok_or_else(|| {
        bad(format!(
            "kind {kind:?} is not an application: expected BpfApplication or ClusterBpfApplication"
        ))
    })?;
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("metadata.name is missing".into()))?;
    validate_name(name).map_err(|e| bad(format!("metadata.name {name:?}: {e}")))?;
    let namespace = match kind {
        AppKind::BpfApplication => Some(
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
        ),
        AppKind::ClusterBpfApplication => None,
    };
    let spec_value = value
        .get("spec")
        .cloned()
        .ok_or_else(|| bad("spec is missing".into()))?;
    let mut spec = read_spec(spec_value).map_err(&bad)?;
    if group == BPFMAN_GROUP {
        bpfman_priorities(&mut spec);
    }
    out.push(Application {
        key: AppKey {
            kind,
            namespace,
            name: name.to_string(),
        },
        group: group.to_string(),
        spec,
        origin: origin.to_string(),
    });
    Ok(())
}

/// Deserialize a spec, naming the field at fault, and refuse fields the schema does not have.
fn read_spec(v: Value) -> Result<ApplicationSpec, String> {
    let spec: ApplicationSpec = serde_path_to_error::deserialize(v.clone())
        .map_err(|e| format!("spec.{}: {}", e.path(), e.inner()))?;
    let mut unknown = Vec::new();
    let _: Result<ApplicationSpec, _> =
        serde_ignored::deserialize(v, |path| unknown.push(field_path(&path.to_string())));
    if !unknown.is_empty() {
        return Err(format!("unknown field(s): {}", unknown.join(", ")));
    }
    Ok(spec)
}

/// `programs.0.xdp.?.links.0.x` (serde_ignored's form) as `spec.programs[0].xdp.links[0].x`.
fn field_path(p: &str) -> String {
    let mut out = String::from("spec");
    for part in p.split('.').filter(|s| *s != "?") {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(part);
        }
    }
    out
}

/// A DNS subdomain name, as Kubernetes requires of object names.
fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be lower case letters, digits, '-' and '.', starting and ending with a letter or digit".into())
    }
}

/// bpfman's chains take priorities from 0; apiary's from 1, with the same order (lower runs
/// first). A bpfman object's 0 becomes 1, so it applies unchanged.
fn bpfman_priorities(spec: &mut ApplicationSpec) {
    for p in &mut spec.programs {
        let xdp = p
            .xdp
            .iter_mut()
            .flat_map(|m| m.links.iter_mut())
            .map(|l| &mut l.priority);
        let tc =
            p.tc.iter_mut()
                .flat_map(|m| m.links.iter_mut())
                .map(|l| &mut l.priority);
        let tcx = p
            .tcx
            .iter_mut()
            .flat_map(|m| m.links.iter_mut())
            .map(|l| &mut l.priority);
        for prio in xdp.chain(tc).chain(tcx) {
            if *prio == 0 {
                *prio = 1;
            }
        }
    }
}
