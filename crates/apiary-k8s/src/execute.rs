//! Converging: make what the manager holds for one application match its plan, in one pass,
//! through the public API only (so it works in-process and through a daemon alike).
//!
//! Programs carry metadata naming their application and the fingerprint of their load inputs.
//! A pass keeps every program whose fingerprint still matches, detaches links no longer
//! desired, unloads programs no longer desired, loads the missing ones (sharing the kept
//! programs' maps), and attaches missing links. Nothing that already matches is touched, so
//! re-applying is a no-op; a changed priority is a different link, so it moves in its chain.

// The manager's error is returned unboxed, as the manager itself does, so front doors find it
// in the error chain (the CLI's exit status comes from it).
#![allow(clippy::result_large_err)]

use crate::crd::{
    AppLoadStatus, ApplicationStateStatus, LinkState, LinkStatus, ProgramLinkStatus, ProgramState,
    PullPolicy,
};
use crate::document::AppKey;
use crate::error::ApplyError;
use crate::plan::{DesiredLink, DesiredProgram, Plan, Source};
use apiary::{Api, LinkView, LoadSpec, ObjectSource, ProgramView};
use apiary_core::{ProgramId, ProgramType};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Metadata naming a program's application (`KIND/NAMESPACE/NAME`).
pub const APPLICATION: &str = "apiary.dev/application";
/// Metadata holding the fingerprint of the load inputs (object, globals) a program came from.
pub const FINGERPRINT: &str = "apiary.dev/load";

/// What one pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub loaded: usize,
    pub unloaded: usize,
    pub attached: usize,
    pub detached: usize,
    /// Why every program was reloaded, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reloaded_all: Option<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.loaded + self.unloaded + self.attached + self.detached == 0
    }
}

/// The outcome of a pass: the changes and the node's state of the application, which the
/// agent writes into the State object as it is.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub application: String,
    pub changes: Changes,
    pub state: ApplicationStateStatus,
}

impl ApplyReport {
    /// Whether every program is loaded and every link attached.
    pub fn ok(&self) -> bool {
        self.state
            .programs
            .iter()
            .all(|p| p.program_link_status == ProgramLinkStatus::Success)
            && self.state.app_load_status != AppLoadStatus::LoadError
    }
}

fn manager(application: &AppKey, step: &'static str) -> impl Fn(apiary::Error) -> ApplyError {
    let application = application.to_string();
    move |error| ApplyError::Manager {
        application: application.clone(),
        step,
        error,
    }
}

/// The programs the manager holds for `key`.
pub fn loaded(api: &dyn Api, key: &AppKey) -> Result<Vec<ProgramView>, ApplyError> {
    let filter = BTreeMap::from([(APPLICATION.to_string(), key.to_string())]);
    api.list_programs(false, &filter)
        .map_err(manager(key, "listing its programs"))
}

/// Converge `key` to `plan` in one pass.
pub fn apply(api: &dyn Api, key: &AppKey, plan: &Plan) -> Result<ApplyReport, ApplyError> {
    apply_with(api, key, plan, &BTreeSet::new())
}

/// `apply`, with programs known to run the plan's code already (switched in place by a hot
/// update, which leaves the recorded fingerprint as it was) kept as they are.
pub fn apply_with(
    api: &dyn Api,
    key: &AppKey,
    plan: &Plan,
    current: &BTreeSet<ProgramId>,
) -> Result<ApplyReport, ApplyError> {
    let existing = loaded(api, key)?;
    let fingerprint = fingerprint(plan);
    let desired: &[DesiredProgram] = if plan.selected { &plan.programs } else { &[] };
    let mut changes = Changes::default();

    // Which loaded programs stay: right fingerprint, still desired with a compatible type,
    // first of a name.
    let mut keep: Vec<(ProgramView, &DesiredProgram)> = Vec::new();
    let mut remove: Vec<ProgramId> = Vec::new();
    for p in existing {
        let Some(id) = p.id else { continue };
        let want = desired.iter().find(|d| d.name == p.name);
        let fits = (current.contains(&id) || p.metadata.get(FINGERPRINT) == Some(&fingerprint))
            && want.is_some_and(|d| type_fits(&p, d))
            && !keep.iter().any(|(k, _)| k.name == p.name);
        match want {
            Some(d) if fits => keep.push((p, d)),
            _ => remove.push(id),
        }
    }
    // A program leaving with maps the staying ones borrow takes them all along: they are
    // loaded again together, so the maps have one owner again.
    let borrows_removed = keep
        .iter()
        .any(|(p, _)| p.map_owner_id.is_some_and(|o| remove.contains(&o)));
    if borrows_removed {
        changes.reloaded_all = Some("a removed program owned the maps the others share".into());
        remove.extend(keep.drain(..).filter_map(|(p, _)| p.id));
    } else if !remove.is_empty() && keep.is_empty() && !desired.is_empty() {
        changes.reloaded_all = Some("the object or its global data changed".into());
    }

    // 1. Detach links no longer desired (before attaching anything, so a moved link never
    //    sits in a chain twice).
    let mut kept_links: BTreeMap<ProgramId, Vec<(LinkView, usize)>> = BTreeMap::new();
    for (p, d) in &keep {
        let Some(id) = p.id else { continue };
        let section = p.section.clone().unwrap_or_default();
        let wanted: Vec<apiary_core::AttachSpec> =
            d.links.iter().map(|l| resolved(l, &section)).collect();
        let mut used = vec![false; wanted.len()];
        let links = api
            .list_links(Some(id))
            .map_err(manager(key, "listing links"))?;
        for l in links {
            let slot = (0..wanted.len()).find(|&i| !used[i] && wanted[i] == l.spec);
            match slot {
                Some(i) => {
                    used[i] = true;
                    kept_links.entry(id).or_default().push((l, i));
                }
                None => {
                    api.detach(l.id).map_err(manager(key, "detaching a link"))?;
                    changes.detached += 1;
                }
            }
        }
    }

    // 2. Unload programs no longer desired (their links go with them).
    if !remove.is_empty() {
        let done = api
            .unload(&remove, true)
            .map_err(manager(key, "unloading programs"))?;
        changes.unloaded += done.len();
    }

    // 3. Load the missing programs, sharing the kept programs' maps.
    let missing: Vec<&DesiredProgram> = desired
        .iter()
        .filter(|d| !keep.iter().any(|(p, _)| p.name == d.name))
        .collect();
    let owner = keep.iter().find_map(|(p, _)| p.map_owner_id.or(p.id));
    let mut programs: BTreeMap<String, Result<ProgramView, String>> = keep
        .iter()
        .map(|(p, _)| (p.name.clone(), Ok(p.clone())))
        .collect();
    if !missing.is_empty() {
        let meta = BTreeMap::from([
            (APPLICATION.to_string(), key.to_string()),
            (FINGERPRINT.to_string(), fingerprint.clone()),
        ]);
        for (name, r) in load(api, plan, &missing, owner, &meta) {
            if r.is_ok() {
                changes.loaded += 1;
            }
            programs.insert(name, r);
        }
    }

    // 4. Attach what is missing, and report every program and link.
    let mut states = Vec::new();
    for d in desired {
        let state = match programs.get(&d.name) {
            Some(Ok(p)) => {
                let have =
                    p.id.and_then(|id| kept_links.remove(&id))
                        .unwrap_or_default();
                attach_missing(api, p, d, have, &mut changes)
            }
            Some(Err(message)) => failed(d, message.clone()),
            None => failed(d, "not loaded".into()),
        };
        states.push(state);
    }
    let app_load_status = if !plan.selected {
        AppLoadStatus::NotSelected
    } else if states.iter().any(|s| s.program_id.is_none()) {
        AppLoadStatus::LoadError
    } else {
        AppLoadStatus::LoadSuccess
    };
    Ok(ApplyReport {
        application: key.to_string(),
        changes,
        state: ApplicationStateStatus {
            update_count: 0,
            app_load_status,
            programs: states,
            ..ApplicationStateStatus::default()
        },
    })
}

/// Unload everything of `key`.
pub fn delete(api: &dyn Api, key: &AppKey) -> Result<Changes, ApplyError> {
    let ids: Vec<ProgramId> = loaded(api, key)?.iter().filter_map(|p| p.id).collect();
    let mut changes = Changes::default();
    if !ids.is_empty() {
        changes.unloaded = api
            .unload(&ids, true)
            .map_err(manager(key, "unloading programs"))?
            .len();
    }
    Ok(changes)
}

/// The applications the manager holds programs of, with those programs.
pub fn applications(api: &dyn Api) -> Result<BTreeMap<String, Vec<ProgramView>>, apiary::Error> {
    let mut out: BTreeMap<String, Vec<ProgramView>> = BTreeMap::new();
    for p in api.list_programs(false, &BTreeMap::new())? {
        if let Some(app) = p.metadata.get(APPLICATION) {
            out.entry(app.clone()).or_default().push(p);
        }
    }
    Ok(out)
}

/// The plan's fingerprint, plus the object file's digest when it is a local file: rebuilding
/// the object and applying again reloads it.
fn fingerprint(plan: &Plan) -> String {
    match &plan.load.source {
        Source::Path(p) => match std::fs::read(p) {
            Ok(bytes) => format!(
                "{}-{}",
                plan.load.fingerprint,
                hex::encode(&Sha256::digest(&bytes)[..8])
            ),
            Err(_) => plan.load.fingerprint.clone(),
        },
        Source::Image { .. } => plan.load.fingerprint.clone(),
    }
}

fn type_fits(p: &ProgramView, d: &DesiredProgram) -> bool {
    p.prog_type
        .parse::<ProgramType>()
        .is_ok_and(|t| t.compatible_with(d.program_type))
}

/// The spec as the manager records it (section-decided parts filled in), for comparison.
fn resolved(l: &DesiredLink, section: &str) -> apiary_core::AttachSpec {
    let mut s = l.spec.clone();
    // A spec the section cannot complete stays as it is; attaching it reports why.
    let _ = s.resolve(section);
    s
}

/// Load `missing` programs: together if possible (they share maps); if that fails, one at a
/// time, so each program gets its own error and the good ones still load.
fn load(
    api: &dyn Api,
    plan: &Plan,
    missing: &[&DesiredProgram],
    owner: Option<ProgramId>,
    meta: &BTreeMap<String, String>,
) -> Vec<(String, Result<ProgramView, String>)> {
    let together = load_some(api, plan, missing, owner, meta);
    match together {
        Ok(views) => pair(missing, views),
        Err(e) if missing.len() == 1 => vec![(missing[0].name.clone(), Err(error_line(&e)))],
        Err(_) => {
            let mut out = Vec::new();
            let mut owner = owner;
            for d in missing {
                match load_some(api, plan, &[*d], owner, meta) {
                    Ok(views) => {
                        owner = owner.or(views.first().and_then(|v| v.id));
                        out.extend(pair(&[*d], views));
                    }
                    Err(e) => out.push((d.name.clone(), Err(error_line(&e)))),
                }
            }
            out
        }
    }
}

fn pair(
    missing: &[&DesiredProgram],
    views: Vec<ProgramView>,
) -> Vec<(String, Result<ProgramView, String>)> {
    missing
        .iter()
        .map(|d| {
            let v = views
                .iter()
                .find(|v| v.name == d.name)
                .cloned()
                .ok_or_else(|| "the load did not return this program".to_string());
            (d.name.clone(), v)
        })
        .collect()
}

fn load_some(
    api: &dyn Api,
    plan: &Plan,
    programs: &[&DesiredProgram],
    owner: Option<ProgramId>,
    meta: &BTreeMap<String, String>,
) -> Result<Vec<ProgramView>, apiary::Error> {
    let spec = |owner: Option<ProgramId>| LoadSpec {
        source: match &plan.load.source {
            Source::Path(p) => ObjectSource::Path(p.clone()),
            Source::Image { url, pull_policy } => ObjectSource::Image {
                reference: url.clone(),
                pull_policy: match pull_policy {
                    PullPolicy::Always => apiary::oci::PullPolicy::Always,
                    PullPolicy::IfNotPresent => apiary::oci::PullPolicy::IfNotPresent,
                    PullPolicy::Never => apiary::oci::PullPolicy::Never,
                },
            },
        },
        programs: programs
            .iter()
            .map(|d| (Some(d.program_type), d.name.clone()))
            .collect(),
        raw_globals: plan.load.globals.clone(),
        typed_globals: Vec::new(),
        metadata: meta.clone(),
        map_owner_id: owner,
        attach: None,
    };
    match api.load(spec(owner)) {
        // An object whose only maps are its own globals shares nothing by name; its new
        // programs then get maps of their own.
        Err(e) if owner.is_some() && e.to_string().contains("shares no map names") => {
            api.load(spec(None))
        }
        r => r,
    }
}

fn attach_missing(
    api: &dyn Api,
    p: &ProgramView,
    d: &DesiredProgram,
    have: Vec<(LinkView, usize)>,
    changes: &mut Changes,
) -> ProgramState {
    let mut links: Vec<LinkState> = Vec::new();
    let section = p.section.clone().unwrap_or_default();
    let wrong_target = d.function.as_ref().and_then(|f| {
        let target = section.split_once('/').map(|(_, t)| t).unwrap_or("");
        (target != f).then(|| {
            format!(
                "the program's section {section:?} attaches to {target:?}, not {f:?}: the target is fixed when the object is compiled"
            )
        })
    });
    for (i, l) in d.links.iter().enumerate() {
        if let Some((view, _)) = have.iter().find(|(_, slot)| *slot == i) {
            links.push(link_state(l, Ok(view)));
            continue;
        }
        if let Some(msg) = &wrong_target {
            links.push(link_state(l, Err(msg.clone())));
            continue;
        }
        let Some(id) = p.id else { continue };
        match api.attach(id, l.spec.clone()) {
            Ok(view) => {
                changes.attached += 1;
                links.push(link_state(l, Ok(&view)));
            }
            Err(e) => links.push(link_state(l, Err(error_line(&e)))),
        }
    }
    for pr in &d.problems {
        links.push(LinkState {
            hook: format!("{}.links[{}]", d.ty.member(), pr.link),
            link_ids: Vec::new(),
            apiary_link_id: None,
            link_status: LinkStatus::AttachError,
            interface_name: None,
            netns_path: None,
            direction: None,
            priority: None,
            message: Some(pr.message.clone()),
        });
    }
    let failed: Vec<&LinkState> = links
        .iter()
        .filter(|l| l.link_status != LinkStatus::Attached)
        .collect();
    ProgramState {
        name: d.name.clone(),
        ty: d.ty,
        program_id: Some(p.kernel_id),
        apiary_id: p.id.map(|i| i.0),
        program_link_status: if failed.is_empty() {
            ProgramLinkStatus::Success
        } else {
            ProgramLinkStatus::Error
        },
        message: failed.first().and_then(|l| {
            l.message.as_ref().map(|m| {
                if failed.len() > 1 {
                    format!("{m} (and {} more link error(s))", failed.len() - 1)
                } else {
                    m.clone()
                }
            })
        }),
        links,
    }
}

fn link_state(l: &DesiredLink, r: Result<&LinkView, String>) -> LinkState {
    let base = LinkState {
        hook: l.spec.describe(),
        link_ids: Vec::new(),
        apiary_link_id: None,
        link_status: LinkStatus::NotAttached,
        interface_name: l.info.interface.clone(),
        netns_path: l.info.netns.as_ref().map(|p| p.display().to_string()),
        direction: l.info.direction.map(|d| format!("{d:?}")),
        priority: l.info.priority,
        message: None,
    };
    match r {
        Ok(v) => LinkState {
            link_ids: v.kernel_link_ids.clone(),
            apiary_link_id: Some(v.id.0),
            link_status: LinkStatus::Attached,
            ..base
        },
        Err(message) => LinkState {
            link_status: LinkStatus::AttachError,
            message: Some(message),
            ..base
        },
    }
}

fn failed(d: &DesiredProgram, message: String) -> ProgramState {
    ProgramState {
        name: d.name.clone(),
        ty: d.ty,
        program_id: None,
        apiary_id: None,
        program_link_status: ProgramLinkStatus::Error,
        message: Some(message),
        links: Vec::new(),
    }
}

/// An apiary error in one line a status can carry. A verifier rejection reads as where and
/// why: `prog.bpf.c:23: <hint> (<verifier message>)` (apiary_core::verifier).
pub fn error_line(e: &apiary::Error) -> String {
    match e {
        apiary::Error::Kernel(apiary::kernel::KernelError::Verifier {
            program, diagnosis, ..
        }) if !diagnosis.message.is_empty() => {
            format!(
                "the verifier rejected program {program:?}: {}",
                diagnosis.one_line()
            )
        }
        _ => key_line(e),
    }
}

/// An error in one line a status can carry: for a verifier rejection, the verifier's last
/// meaningful line (what it objected to), not the whole log.
pub fn key_line(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default().trim().to_string();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    if rest.is_empty() {
        return head;
    }
    let noise = |l: &str| {
        l.starts_with("processed ")
            || l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("-- END PROG LOAD LOG --")
            || l.starts_with("libbpf:")
    };
    match rest.iter().rev().find(|l| !noise(l)) {
        Some(key) => format!("{} {key}", head.trim_end_matches(':').to_string() + ":"),
        None => head,
    }
}
