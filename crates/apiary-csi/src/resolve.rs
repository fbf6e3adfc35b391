//! Which maps a volume asks for: its attributes name an application (as the node agent records
//! it on the programs it loads), or one program, and a comma list of map names. The answer is
//! the maps' kernel ids, read from the manager: the volume then holds the very maps the
//! programs use, not copies.

use crate::error::CsiError;
use apiary::core::ProgramId;
use apiary::{Api, ProgramView};
use apiary_k8s::execute::APPLICATION;
use std::collections::BTreeMap;

/// The volume attribute naming the application or program; bpfman's key is read too, so its
/// pod specs work by changing only the driver name.
pub const PROGRAM_KEYS: [&str; 2] = ["csi.apiary.io/program", "csi.bpfman.io/program"];
/// The volume attribute listing the maps, comma separated.
pub const MAPS_KEYS: [&str; 2] = ["csi.apiary.io/maps", "csi.bpfman.io/maps"];
/// Set by the kubelet (with podInfoOnMount) to the pod's namespace.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// Set by the kubelet to "true" for an inline (ephemeral) volume.
pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// The most maps one volume may ask for (far more than a program has).
pub const MAX_MAPS: usize = 256;
/// The longest application or program name accepted (an application key is three
/// Kubernetes names of at most 253 bytes).
const MAX_NAME: usize = 1024;

/// What a volume's attributes ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub program: String,
    /// Distinct, in the order given.
    pub maps: Vec<String>,
    pub namespace: Option<String>,
}

/// One map to pin: its name in the volume and its kernel id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub kernel_id: u32,
}

/// Read the attributes, refusing what a pin could not be made of.
pub fn request(ctx: &BTreeMap<String, String>) -> Result<Request, CsiError> {
    let pick = |keys: [&str; 2]| -> Result<Option<&String>, CsiError> {
        match (ctx.get(keys[0]), ctx.get(keys[1])) {
            (Some(a), Some(b)) if a != b => Err(CsiError::InvalidArgument(format!(
                "volume attributes {} ({a:?}) and {} ({b:?}) disagree",
                keys[0], keys[1]
            ))),
            (a, b) => Ok(a.or(b)),
        }
    };
    if ctx.get(EPHEMERAL).is_some_and(|v| v != "true") {
        return Err(CsiError::InvalidArgument(
            "only ephemeral inline volumes are served (the CSIDriver's volumeLifecycleModes is [Ephemeral])".into(),
        ));
    }
    let program = pick(PROGRAM_KEYS)?
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            CsiError::InvalidArgument(format!(
                "volume attribute {} is required: the application or program whose maps the volume holds",
                PROGRAM_KEYS[0]
            ))
        })?
        .to_string();
    let list = pick(MAPS_KEYS)?.ok_or_else(|| {
        CsiError::InvalidArgument(format!(
            "volume attribute {} is required: a comma list of map names",
            MAPS_KEYS[0]
        ))
    })?;
    if program.len() > MAX_NAME {
        return Err(CsiError::InvalidArgument(format!(
            "volume attribute {}: longer than {MAX_NAME} bytes",
            PROGRAM_KEYS[0]
        )));
    }
    let mut maps: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in list.split(',').map(str::trim) {
        check_map_name(name)?;
        if seen.insert(name) {
            maps.push(name.to_string());
        }
        // Each map is a pin and a lookup: a list from a hostile spec stays small.
        if maps.len() > MAX_MAPS {
            return Err(CsiError::InvalidArgument(format!(
                "volume attribute {}: more than {MAX_MAPS} maps",
                MAPS_KEYS[0]
            )));
        }
    }
    Ok(Request {
        program,
        maps,
        namespace: ctx.get(POD_NAMESPACE).filter(|s| !s.is_empty()).cloned(),
    })
}

/// A map name becomes a file name on bpffs: no separators, no dots (bpffs refuses them), not
/// longer than a kernel object name can be.
fn check_map_name(name: &str) -> Result<(), CsiError> {
    let bad = |why: &str| {
        Err(CsiError::InvalidArgument(format!(
            "invalid map name {name:?} in {}: {why}",
            MAPS_KEYS[0]
        )))
    };
    if name.is_empty() {
        return bad("empty (a stray comma?)");
    }
    if name.len() > 255 {
        return bad("longer than a file name can be");
    }
    if name.contains(['/', '\0']) {
        return bad("a map name has no '/'");
    }
    if name.contains('.') {
        return bad("bpffs refuses names with a '.' (global data sections such as .bss cannot be pinned by name)");
    }
    Ok(())
}

/// The programs `name` means, in this order: an application key as the agent records it
/// (`KIND/NAMESPACE/NAME`); the pod namespace's BpfApplication of that name, then the
/// ClusterBpfApplication; an apiary program id; the one program of that name.
fn programs(api: &dyn Api, req: &Request) -> Result<Vec<ProgramView>, CsiError> {
    let all = api.list_programs(false, &BTreeMap::new())?;
    let of_app = |key: &str| -> Vec<ProgramView> {
        all.iter()
            .filter(|p| p.metadata.get(APPLICATION).map(String::as_str) == Some(key))
            .cloned()
            .collect()
    };
    let name = req.program.as_str();
    if name.contains('/') {
        return Ok(of_app(name));
    }
    let mut keys = Vec::new();
    if let Some(ns) = &req.namespace {
        keys.push(format!("BpfApplication/{ns}/{name}"));
    }
    keys.push(format!("ClusterBpfApplication//{name}"));
    for k in &keys {
        let found = of_app(k);
        if !found.is_empty() {
            return Ok(found);
        }
    }
    if let Ok(id) = name.parse::<ProgramId>() {
        return Ok(all.into_iter().filter(|p| p.id == Some(id)).collect());
    }
    let named: Vec<ProgramView> = all.into_iter().filter(|p| p.name == name).collect();
    if named.len() > 1 {
        let ids: Vec<String> = named
            .iter()
            .filter_map(|p| p.id.map(|i| i.to_string()))
            .collect();
        return Err(CsiError::FailedPrecondition(format!(
            "{} programs are named {name:?} (ids {}): name one by its id or its application",
            named.len(),
            ids.join(", ")
        )));
    }
    Ok(named)
}

/// The kernel ids of the requested maps. NotFound while the program (or a map) is not on this
/// node, so the kubelet tries again later.
pub fn resolve(api: &dyn Api, req: &Request) -> Result<Vec<Resolved>, CsiError> {
    let progs = programs(api, req)?;
    if progs.is_empty() {
        return Err(CsiError::NotFound(format!(
            "no application or program {:?} is loaded on this node{}",
            req.program,
            req.namespace
                .as_deref()
                .map(|ns| format!(" (looked in namespace {ns:?} and cluster-wide)"))
                .unwrap_or_default()
        )));
    }
    // Programs of one application share their maps, so a name names one map; two maps of one
    // name would make the volume's content depend on the order programs are listed in.
    let mut by_name: BTreeMap<String, u32> = BTreeMap::new();
    for p in &progs {
        let Some(id) = p.id else { continue };
        for m in api.get_program(id)?.maps {
            match by_name.get(&m.name) {
                Some(k) if *k != m.kernel_id => {
                    return Err(CsiError::FailedPrecondition(format!(
                        "{:?} has two maps named {:?} (kernel ids {k} and {}): name one program instead",
                        req.program, m.name, m.kernel_id
                    )))
                }
                _ => {
                    by_name.insert(m.name, m.kernel_id);
                }
            }
        }
    }
    req.maps
        .iter()
        .map(|name| {
            by_name
                .get(name)
                .map(|&kernel_id| Resolved {
                    name: name.clone(),
                    kernel_id,
                })
                .ok_or_else(|| {
                    CsiError::NotFound(format!(
                        "{:?} has no map {name:?} (its maps: {})",
                        req.program,
                        by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn attributes_in_apiary_or_bpfman_keys() {
        let r = request(&ctx(&[
            ("csi.bpfman.io/program", "counter"),
            ("csi.bpfman.io/maps", " packets, drops,packets"),
            (POD_NAMESPACE, "team-a"),
            (EPHEMERAL, "true"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            Request {
                program: "counter".into(),
                maps: vec!["packets".into(), "drops".into()],
                namespace: Some("team-a".into()),
            }
        );
        // Both spellings agreeing is fine; disagreeing is refused.
        assert!(request(&ctx(&[
            ("csi.apiary.io/program", "a"),
            ("csi.bpfman.io/program", "a"),
            ("csi.apiary.io/maps", "m")
        ]))
        .is_ok());
        assert!(matches!(
            request(&ctx(&[
                ("csi.apiary.io/program", "a"),
                ("csi.bpfman.io/program", "b"),
                ("csi.apiary.io/maps", "m")
            ])),
            Err(CsiError::InvalidArgument(_))
        ));
    }

    #[test]
    fn bad_attributes_are_invalid_arguments() {
        let many_maps = (0..=MAX_MAPS)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let long_name = "p".repeat(MAX_NAME + 1);
        for c in [
            ctx(&[("csi.apiary.io/maps", "m")]),
            ctx(&[("csi.apiary.io/program", " "), ("csi.apiary.io/maps", "m")]),
            ctx(&[("csi.apiary.io/program", "p")]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", "a,,b"),
            ]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", "../x"),
            ]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", ".bss"),
            ]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", "a\0b"),
            ]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", &many_maps),
            ]),
            ctx(&[
                ("csi.apiary.io/program", &long_name),
                ("csi.apiary.io/maps", "m"),
            ]),
            ctx(&[
                ("csi.apiary.io/program", "p"),
                ("csi.apiary.io/maps", "m"),
                (EPHEMERAL, "false"),
            ]),
        ] {
            assert!(
                matches!(request(&c), Err(CsiError::InvalidArgument(_))),
                "{c:?}"
            );
        }
    }
}
