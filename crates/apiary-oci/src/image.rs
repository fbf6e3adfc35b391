//! Building bytecode images and reading their labels (bpfman's image format).
//!
//! This module owns the bpfman bytecode image format on both sides: building one image (one
//! gzip'd tar layer holding the object, a config whose `config.Labels` carry `io.ebpf.programs`
//! and `io.ebpf.maps`, an OCI manifest) per architecture, plus an OCI image index when there is
//! more than one; and reading those labels back, including bpfman's older
//! `io.ebpf.bpf_function_name`/`io.ebpf.program_type` labels.
//!
//! Labels are computed by inspecting the object with `apiary_core::elf`. Program types are
//! spelled as bpfman's CLI spells them (`xdp`, `tc`, `tcx`, `tracepoint`, `kprobe`, `kretprobe`,
//! `uprobe`, `uretprobe`, `fentry`, `fexit`), and types bpfman has no name for use the kernel's
//! snake_case (`raw_tracepoint`, `tp_btf`, `cgroup_skb`, ...). Map types use bpfman's spelling
//! (`per_cpu_array` where libbpf says `percpu_array`). Builds are reproducible: the same objects
//! give the same digests.

use crate::error::{Error, Result};
use crate::layer::{build_layer, check_object_for};
use crate::manifest::{
    sha256_digest, Arch, ContainerConfig, Descriptor, ImageConfig, ImageIndex, ImageManifest,
    Platform, RootFs, MAPS_LABEL, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
    PROGRAMS_LABEL,
};
use apiary_core::ProgramType;
use std::collections::BTreeMap;

/// Program name → type, map name → type, as in the image labels.
pub type Labels = BTreeMap<String, String>;

/// One architecture's image.
#[derive(Clone)]
pub struct BuiltManifest {
    pub arch: Arch,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    /// The gzip'd tar layer.
    pub layer: Vec<u8>,
    pub programs: Labels,
    pub maps: Labels,
}

impl std::fmt::Debug for BuiltManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltManifest")
            .field("arch", &self.arch)
            .field("manifest_digest", &self.manifest_digest)
            .field("layer", &format_args!("<{} bytes>", self.layer.len()))
            .field("programs", &self.programs)
            .field("maps", &self.maps)
            .finish()
    }
}

/// A built image, ready to push: one manifest per architecture, and an index over them when
/// there is more than one.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifests: Vec<BuiltManifest>,
    pub index: Option<Vec<u8>>,
}

impl BuiltImage {
    /// The digest a tag will point at: the index's, or the single manifest's.
    pub fn digest(&self) -> String {
        match (&self.index, self.manifests.first()) {
            (Some(index), _) => sha256_digest(index),
            (None, Some(m)) => m.manifest_digest.clone(),
            (None, None) => String::new(),
        }
    }

    /// The media type of what the tag points at.
    pub fn media_type(&self) -> &'static str {
        if self.index.is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        }
    }
}

/// Builds an image from one object per architecture. One object gives a plain manifest (as
/// `bpfman image build --bytecode` does for the host); several give an index.
pub fn build(objects: &[(Arch, Vec<u8>)]) -> Result<BuiltImage> {
    if objects.is_empty() {
        return Err(Error::Build {
            reason: "no object given".into(),
        });
    }
    for (i, (arch, _)) in objects.iter().enumerate() {
        if objects[..i].iter().any(|(a, _)| a == arch) {
            return Err(Error::Build {
                reason: format!("two objects for {arch}"),
            });
        }
    }
    for (arch, bytes) in objects {
        check_object_for(bytes, *arch).map_err(|e| Error::Build {
            reason: format!("object for {arch}: {e}"),
        })?;
    }
    // apiary-core reads little-endian objects; big-endian ones (s390x, ppc64, mips) carry the
    // labels of a little-endian sibling, as bpfman does.
    let reference_labels = objects
        .iter()
        .find(|(arch, _)| !arch.is_big_endian())
        .map(|(arch, bytes)| {
            labels_for_object(bytes).map_err(|e| Error::Build {
                reason: format!("object for {arch}: {e}"),
            })
        })
        .transpose()?;

    let mut manifests = Vec::new();
    for (arch, bytes) in objects {
        let (programs, maps) = if arch.is_big_endian() {
            reference_labels.clone().ok_or_else(|| Error::Build {
                reason: format!(
                    "the {arch} object is big-endian and apiary reads labels from little-endian objects: add one for a little-endian architecture"
                ),
            })?
        } else {
            labels_for_object(bytes).map_err(|e| Error::Build {
                reason: format!("object for {arch}: {e}"),
            })?
        };
        manifests.push(build_manifest(*arch, bytes, programs, maps)?);
    }
    let index = if manifests.len() > 1 {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: manifests
                .iter()
                .map(|m| Descriptor {
                    platform: Some(Platform {
                        architecture: m.arch.name().into(),
                        os: "linux".into(),
                        variant: None,
                    }),
                    ..Descriptor::for_bytes(OCI_MANIFEST, &m.manifest)
                })
                .collect(),
            annotations: None,
        };
        Some(to_json("image index", &index)?)
    } else {
        None
    };
    Ok(BuiltImage { manifests, index })
}

fn build_manifest(
    arch: Arch,
    object: &[u8],
    programs: Labels,
    maps: Labels,
) -> Result<BuiltManifest> {
    let flavour = if arch.is_big_endian() {
        "bpfeb"
    } else {
        "bpfel"
    };
    let (layer, tar) = build_layer(&format!("bpf_{arch}_{flavour}.o"), object)?;
    let mut labels = BTreeMap::new();
    labels.insert(
        PROGRAMS_LABEL.to_string(),
        to_json_string("program labels", &programs)?,
    );
    labels.insert(MAPS_LABEL.to_string(), to_json_string("map labels", &maps)?);
    let config = ImageConfig {
        architecture: arch.name().into(),
        os: "linux".into(),
        created: None,
        config: ContainerConfig {
            labels: Some(labels),
        },
        rootfs: Some(RootFs {
            kind: "layers".into(),
            diff_ids: vec![sha256_digest(&tar)],
        }),
        history: vec![serde_json::json!({ "created_by": "apiary image build" })],
    };
    let config = to_json("image config", &config)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::for_bytes(OCI_CONFIG, &config),
        layers: vec![Descriptor::for_bytes(OCI_LAYER_GZIP, &layer)],
        annotations: None,
    };
    let manifest = to_json("image manifest", &manifest)?;
    Ok(BuiltManifest {
        arch,
        manifest_digest: sha256_digest(&manifest),
        manifest,
        config,
        layer,
        programs,
        maps,
    })
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::json(what, e))
}

fn to_json_string<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::json(what, e))
}

/// The `io.ebpf.programs` and `io.ebpf.maps` labels for a (little-endian) object.
pub fn labels_for_object(object: &[u8]) -> Result<(Labels, Labels)> {
    let info = apiary_core::elf::inspect(object).map_err(|e| Error::NotBpf {
        reason: e.to_string(),
    })?;
    if info.programs.is_empty() {
        return Err(Error::Build {
            reason: "the object has no programs".into(),
        });
    }
    let programs = info
        .programs
        .iter()
        .map(|p| (p.name.clone(), program_type_label(&p.section)))
        .collect();
    let maps = info
        .maps
        .iter()
        .map(|m| (m.name.clone(), map_type_label(&m.map_type_name)))
        .collect();
    Ok((programs, maps))
}

/// The `io.ebpf.programs` value for a program in ELF section `section`.
pub fn program_type_label(section: &str) -> String {
    ProgramType::label_for_section(section)
}

/// bpfman's map type spelling for libbpf's short name (`percpu_array` → `per_cpu_array`).
pub fn map_type_label(libbpf_name: &str) -> String {
    libbpf_name.replace("percpu", "per_cpu")
}

/// apiary's program type for a label value, from any image: apiary's and bpfman's spellings,
/// and the kernel-type names bpfman's `image build` writes. `probe` (kprobe or uprobe) and
/// `tracing` (fentry or fexit) are ambiguous and give `None`; the object's sections decide then.
pub fn program_type_from_label(label: &str) -> Option<ProgramType> {
    ProgramType::from_label(label)
}

/// The program and map labels of an image config. Accepts bpfman's current labels and its
/// older single-program ones (`io.ebpf.bpf_function_name` + `io.ebpf.program_type`).
pub fn labels_from_config(reference: &str, config: &ImageConfig) -> Result<(Labels, Labels)> {
    let invalid = |reason: String| Error::InvalidImage {
        reference: reference.to_string(),
        reason,
    };
    let labels = config.config.labels.clone().unwrap_or_default();
    let parse = |label: &str, value: &str| -> Result<Labels> {
        serde_json::from_str::<Labels>(value).map_err(|e| {
            invalid(format!(
                "label {label} is not a JSON object of strings: {e}"
            ))
        })
    };
    if let Some(programs) = labels.get(PROGRAMS_LABEL) {
        let programs = parse(PROGRAMS_LABEL, programs)?;
        let maps = match labels.get(MAPS_LABEL) {
            Some(m) => parse(MAPS_LABEL, m)?,
            None => Labels::new(),
        };
        return Ok((programs, maps));
    }
    if let (Some(function), Some(kind)) = (
        labels.get("io.ebpf.bpf_function_name"),
        labels.get("io.ebpf.program_type"),
    ) {
        let mut programs = Labels::new();
        programs.insert(function.clone(), kind.clone());
        return Ok((programs, Labels::new()));
    }
    Err(invalid(format!(
        "its config has no {PROGRAMS_LABEL} label (labels: {})",
        if labels.is_empty() {
            "none".to_string()
        } else {
            labels.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_labels() {
        for (section, label) in [
            ("xdp", "xdp"),
            ("xdp.frags", "xdp"),
            ("tc", "tc"),
            ("classifier", "tc"),
            ("tcx/ingress", "tcx"),
            ("tracepoint/syscalls/sys_enter_getppid", "tracepoint"),
            ("tp/syscalls/sys_enter_getppid", "tracepoint"),
            ("raw_tp/sys_enter", "raw_tracepoint"),
            ("tp_btf/sched_switch", "tp_btf"),
            ("kprobe/do_nanosleep", "kprobe"),
            ("kretprobe/do_nanosleep", "kretprobe"),
            ("uprobe//bin/true:main", "uprobe"),
            ("uretprobe", "uretprobe"),
            ("fentry/do_unlinkat", "fentry"),
            ("fexit/do_unlinkat", "fexit"),
            ("cgroup_skb/egress", "cgroup_skb"),
            ("lsm/file_open", "lsm"),
            ("sk_msg", "sk_msg"),
        ] {
            assert_eq!(program_type_label(section), label, "{section}");
        }
    }

    #[test]
    fn label_types_round_trip() {
        for t in apiary_core::program::ALL_TYPES {
            // A section of that type, as the type table spells them.
            let info = t.info();
            let section = info
                .sections
                .first()
                .or(info.section_prefixes.first())
                .expect("every type has a section");
            assert_eq!(
                program_type_from_label(&program_type_label(section)),
                Some(*t),
                "{t}"
            );
        }
        assert_eq!(program_type_from_label("probe"), None);
        assert_eq!(program_type_from_label("tracing"), None);
        assert_eq!(
            program_type_from_label("raw-tracepoint"),
            Some(ProgramType::RawTracepoint)
        );
    }

    #[test]
    fn map_labels() {
        assert_eq!(map_type_label("percpu_array"), "per_cpu_array");
        assert_eq!(map_type_label("lru_percpu_hash"), "lru_per_cpu_hash");
        assert_eq!(map_type_label("ringbuf"), "ringbuf");
        assert_eq!(map_type_label("array"), "array");
    }

    #[test]
    fn config_labels() {
        let cfg: ImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"io.ebpf.maps":"{\"xdp_stats_map\":\"per_cpu_array\"}","io.ebpf.programs":"{\"xdp_stats\":\"xdp\"}"}}}"#,
        )
        .unwrap();
        let (p, m) = labels_from_config("x", &cfg).unwrap();
        assert_eq!(p["xdp_stats"], "xdp");
        assert_eq!(m["xdp_stats_map"], "per_cpu_array");

        let v1: ImageConfig = serde_json::from_str(
            r#"{"config":{"Labels":{"io.ebpf.program_name":"xdp_counter","io.ebpf.bpf_function_name":"xdp_stats","io.ebpf.program_type":"xdp","io.ebpf.filename":"bpf_bpfel.o"}}}"#,
        )
        .unwrap();
        let (p, m) = labels_from_config("x", &v1).unwrap();
        assert_eq!((p["xdp_stats"].as_str(), m.len()), ("xdp", 0));

        let none: ImageConfig = serde_json::from_str(r#"{"config":{}}"#).unwrap();
        let e = labels_from_config("quay.io/x:1", &none).unwrap_err();
        assert!(e.to_string().contains("no io.ebpf.programs label"), "{e}");
        let bad: ImageConfig =
            serde_json::from_str(r#"{"config":{"Labels":{"io.ebpf.programs":"[1]"}}}"#).unwrap();
        assert!(labels_from_config("x", &bad).is_err());
    }

    #[test]
    fn big_endian_objects_take_a_little_endian_siblings_labels() {
        let minimal = std::fs::read(apiary_fixtures::object("minimal")).unwrap();
        let mut bpfeb = vec![0u8; 64];
        bpfeb[..6].copy_from_slice(b"\x7fELF\x02\x02");
        bpfeb[18..20].copy_from_slice(&247u16.to_be_bytes());
        let built = build(&[(Arch::Amd64, minimal), (Arch::S390x, bpfeb.clone())]).unwrap();
        assert!(built.index.is_some());
        assert_eq!(built.manifests[1].programs, built.manifests[0].programs);
        assert_eq!(built.manifests[1].programs["count_getppid"], "tracepoint");
        let e = build(&[(Arch::S390x, bpfeb.clone())]).unwrap_err();
        assert!(
            e.to_string()
                .contains("add one for a little-endian architecture"),
            "{e}"
        );
        let e = build(&[(Arch::Amd64, bpfeb)]).unwrap_err();
        assert!(e.to_string().contains("big-endian"), "{e}");
        let e = build(&[(Arch::Amd64, vec![0u8; 1]), (Arch::Amd64, vec![0u8; 1])]).unwrap_err();
        assert!(e.to_string().contains("two objects for amd64"), "{e}");
    }

    #[test]
    fn build_rejects_bad_input() {
        assert!(build(&[]).is_err());
        let e = build(&[(Arch::Amd64, b"not elf at all, definitely not".repeat(4))]).unwrap_err();
        assert!(e.to_string().contains("not a BPF ELF file"), "{e}");
    }
}
