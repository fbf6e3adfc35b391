//! OCI and Docker v2 manifest types, media types, digests and architectures.
//!
//! This module owns the JSON shapes apiary reads and writes (image manifest, image index /
//! manifest list, descriptors, the image config's `config.Labels`), the set of media types it
//! accepts, sha256 digests of raw bytes, and the mapping between Go architecture names (what
//! image platforms use: `amd64`, `arm64`, ...) and the host.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// cosign's signature layer: the blob is the simple-signing payload.
pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// What apiary asks registries for when it fetches a manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// bpfman's labels: JSON objects mapping program name → type and map name → type.
pub const PROGRAMS_LABEL: &str = "io.ebpf.programs";
pub const MAPS_LABEL: &str = "io.ebpf.maps";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks `bytes` against `expected` (a `sha256:` digest); `what` names the object in the error.
pub fn verify_digest(what: &str, expected: &str, bytes: &[u8]) -> Result<()> {
    crate::reference::validate_digest(expected).map_err(|reason| Error::Unsupported {
        what: format!("digest of {what}"),
        value: reason,
    })?;
    let actual = sha256_digest(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// A content descriptor: what a manifest says about a blob or another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker v2 schema 2; the JSON shape is the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest as fetched: either kind, decided by media type (header or `mediaType` field).
#[derive(Debug, Clone)]
pub enum AnyManifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl AnyManifest {
    /// Parses `bytes`. `content_type` is the registry's Content-Type header, used when the JSON
    /// has no `mediaType` field (allowed for OCI manifests).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<AnyManifest> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            schema_version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::json("manifest", e))?;
        if probe.schema_version != Some(2) {
            return Err(Error::Unsupported {
                what: "manifest schema version".into(),
                value: format!(
                    "{:?} (only schema 2 manifests are supported)",
                    probe.schema_version
                ),
            });
        }
        let media = probe
            .media_type
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string()));
        let is_index = match media.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
            _ => probe.manifests.is_some(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Index)
                .map_err(|e| Error::json("image index", e))
        } else {
            serde_json::from_slice(bytes)
                .map(AnyManifest::Image)
                .map_err(|e| Error::json("image manifest", e))
        }
    }
}

/// The part of an image config apiary reads and writes: platform and `config.Labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootFs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// Linux architectures by their Go names, as image platforms spell them; bpfman builds images
/// for each of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X386,
    Amd64,
    Arm,
    Arm64,
    Loong64,
    Mips,
    Mipsle,
    Mips64,
    Mips64le,
    Ppc64,
    Ppc64le,
    Riscv64,
    S390x,
}

pub const ALL_ARCHES: &[Arch] = &[
    Arch::X386,
    Arch::Amd64,
    Arch::Arm,
    Arch::Arm64,
    Arch::Loong64,
    Arch::Mips,
    Arch::Mipsle,
    Arch::Mips64,
    Arch::Mips64le,
    Arch::Ppc64,
    Arch::Ppc64le,
    Arch::Riscv64,
    Arch::S390x,
];

impl Arch {
    /// The Go/OCI name: `amd64`, `arm64`, `s390x`...
    pub fn name(self) -> &'static str {
        match self {
            Arch::X386 => "386",
            Arch::Amd64 => "amd64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
            Arch::Loong64 => "loong64",
            Arch::Mips => "mips",
            Arch::Mipsle => "mipsle",
            Arch::Mips64 => "mips64",
            Arch::Mips64le => "mips64le",
            Arch::Ppc64 => "ppc64",
            Arch::Ppc64le => "ppc64le",
            Arch::Riscv64 => "riscv64",
            Arch::S390x => "s390x",
        }
    }

    /// BPF objects come in two flavours, bpfel and bpfeb; this is the one the arch's kernel loads.
    pub fn is_big_endian(self) -> bool {
        match self {
            Arch::Mips | Arch::Mips64 | Arch::Ppc64 | Arch::S390x => true,
            Arch::X386
            | Arch::Amd64
            | Arch::Arm
            | Arch::Arm64
            | Arch::Loong64
            | Arch::Mipsle
            | Arch::Mips64le
            | Arch::Ppc64le
            | Arch::Riscv64 => false,
        }
    }

    /// The architecture this program runs on, if it is one images are built for.
    pub fn host() -> Option<Arch> {
        let big = cfg!(target_endian = "big");
        match std::env::consts::ARCH {
            "x86" => Some(Arch::X386),
            "x86_64" => Some(Arch::Amd64),
            "arm" => Some(Arch::Arm),
            "aarch64" => Some(Arch::Arm64),
            "loongarch64" => Some(Arch::Loong64),
            "mips" => Some(if big { Arch::Mips } else { Arch::Mipsle }),
            "mips64" => Some(if big { Arch::Mips64 } else { Arch::Mips64le }),
            "powerpc64" => Some(if big { Arch::Ppc64 } else { Arch::Ppc64le }),
            "riscv64" => Some(Arch::Riscv64),
            "s390x" => Some(Arch::S390x),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    /// Accepts the Go names and the kernel's (`x86_64`, `aarch64`, `i386`...).
    fn from_str(s: &str) -> Result<Arch> {
        let lower = s.trim().to_ascii_lowercase();
        let arch = match lower.as_str() {
            "i386" | "i686" | "x86" => Arch::X386,
            "x86_64" | "x86-64" => Arch::Amd64,
            "aarch64" => Arch::Arm64,
            "loongarch64" => Arch::Loong64,
            "powerpc64" => Arch::Ppc64,
            "powerpc64le" => Arch::Ppc64le,
            other => match ALL_ARCHES.iter().find(|a| a.name() == other) {
                Some(a) => *a,
                None => {
                    return Err(Error::Unsupported {
                        what: "architecture".into(),
                        value: format!(
                            "{s:?} (expected one of {})",
                            ALL_ARCHES
                                .iter()
                                .map(|a| a.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            },
        };
        Ok(arch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in ALL_ARCHES {
            assert_eq!(a.name().parse::<Arch>().unwrap(), *a);
        }
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert!("sparc".parse::<Arch>().is_err());
        assert!(Arch::S390x.is_big_endian() && !Arch::Arm64.is_big_endian());
    }

    #[test]
    fn manifest_kinds() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            AnyManifest::parse(index, None).unwrap(),
            AnyManifest::Index(_)
        ));
        let oci_no_media = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(
            AnyManifest::parse(oci_no_media, Some(OCI_MANIFEST)).unwrap(),
            AnyManifest::Image(_)
        ));
        let v1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(AnyManifest::parse(v1, None).is_err());
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        verify_digest("x", &sha256_digest(b"abc"), b"abc").unwrap();
        let e = verify_digest("layer", &sha256_digest(b"abc"), b"abd").unwrap_err();
        assert!(
            e.to_string().starts_with("digest mismatch for layer"),
            "{e}"
        );
    }
}
