//! Pulling, inspecting and pushing bytecode images.
//!
//! This module owns the order of operations: resolve the reference to a manifest (choosing the
//! target architecture from an index), check the signature policy *before* any layer is
//! downloaded, fetch and verify the config and the layer, unpack the object safely, and only
//! then record everything in the cache. The same resolution runs against the cache and against
//! the registry, so a cached image is checked exactly like a fresh one.

use crate::cache::Cache;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::image::{labels_from_config, BuiltImage, Labels};
use crate::layer::{check_object_for, extract_object, LayerCompression};
use crate::manifest::{
    AnyManifest, Arch, Descriptor, ImageConfig, ImageIndex, ImageManifest, DOCKER_CONFIG,
    DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use crate::policy::{enforce_with, Check, SignaturePolicy, Verdict};
use crate::reference::ImageRef;
use crate::registry::RegistryClient;
use crate::sign::VerifyingKey;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// When to contact the registry, as Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always resolve the reference at the registry (the content may still be cached).
    Always,
    /// Use the cached image if the reference (or digest) was pulled before; the registry is not
    /// contacted then.
    #[default]
    IfNotPresent,
    /// Only the cache; an image that is not cached is an error.
    Never,
}

impl FromStr for PullPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<PullPolicy> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "always" => Ok(PullPolicy::Always),
            "ifnotpresent" => Ok(PullPolicy::IfNotPresent),
            "never" => Ok(PullPolicy::Never),
            _ => Err(Error::Unsupported {
                what: "pull policy".into(),
                value: format!("{s:?} (expected Always, IfNotPresent or Never)"),
            }),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        })
    }
}

/// A pulled image: the object to load and what the image says about it.
#[derive(Clone)]
pub struct PulledImage {
    /// The reference as requested.
    pub reference: ImageRef,
    /// Digest of the manifest chosen for `arch`: what exactly was loaded.
    pub digest: String,
    /// Digest of the index the manifest was chosen from, for multi-arch images.
    pub index_digest: Option<String>,
    pub arch: Arch,
    /// The BPF object.
    pub object: Vec<u8>,
    /// The object's path in the layer.
    pub object_path: String,
    /// `io.ebpf.programs`: program name → type.
    pub programs: Labels,
    /// `io.ebpf.maps`: map name → type.
    pub maps: Labels,
    /// Whether the image came from the cache without contacting the registry.
    pub from_cache: bool,
}

impl fmt::Debug for PulledImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulledImage")
            .field("reference", &self.reference.to_string())
            .field("digest", &self.digest)
            .field("index_digest", &self.index_digest)
            .field("arch", &self.arch)
            .field("object", &format_args!("<{} bytes>", self.object.len()))
            .field("object_path", &self.object_path)
            .field("programs", &self.programs)
            .field("maps", &self.maps)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

impl PulledImage {
    /// The reference pinned to the loaded manifest (`registry/repo@sha256:...`).
    pub fn pinned(&self) -> ImageRef {
        self.reference.with_digest(&self.digest)
    }

    /// What the requested reference resolved to: the index if there is one.
    pub fn top_digest(&self) -> &str {
        self.index_digest.as_deref().unwrap_or(&self.digest)
    }
}

/// What `inspect` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    pub reference: String,
    /// What the reference resolves to (index or manifest).
    pub digest: String,
    pub media_type: String,
    /// The platforms of an index (empty for a single manifest).
    pub platforms: Vec<PlatformEntry>,
    pub arch: String,
    /// The manifest chosen for `arch`.
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer: LayerInfo,
    pub programs: Labels,
    pub maps: Labels,
    /// All config labels.
    pub labels: BTreeMap<String, String>,
    pub from_cache: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformEntry {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub digest: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerInfo {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// Pulls `image` for the configured architecture without a signature check.
pub fn pull(
    cfg: &ClientConfig,
    cache: &Cache,
    image: &ImageRef,
    policy: PullPolicy,
) -> Result<PulledImage> {
    pull_verified(cfg, cache, image, policy, &SignaturePolicy::default(), &[]).map(|(p, _)| p)
}

/// Pulls `image` and enforces `signatures` with `keys`. A refused image returns an error before
/// its layer is downloaded, and nothing of it is cached.
pub fn pull_verified(
    cfg: &ClientConfig,
    cache: &Cache,
    image: &ImageRef,
    policy: PullPolicy,
    signatures: &SignaturePolicy,
    keys: &[VerifyingKey],
) -> Result<(PulledImage, Verdict)> {
    let arch = cfg.target_arch()?;
    let mode = signatures.mode_for(image);
    if policy != PullPolicy::Always {
        if let Some(top_digest) = cache.lookup(image)? {
            match load_cached(cache, image, &top_digest, arch, cfg) {
                Ok(pulled) => {
                    let digests = candidate_digests(&pulled);
                    let how = Check {
                        cfg,
                        client: None,
                        cache: Some(cache),
                        online: policy != PullPolicy::Never,
                    };
                    let verdict = enforce_with(&how, mode, image, &digests, keys)?;
                    return Ok((pulled, verdict));
                }
                // Part of it is missing (another architecture was pulled): fetch it.
                Err(Error::NotCached { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if policy == PullPolicy::Never {
            return Err(Error::NotCached {
                reference: image.to_string(),
            });
        }
    }

    let client = RegistryClient::new(cfg)?;
    let top = client.get_manifest(image)?;
    let source = Remote(&client);
    let resolved = resolve(
        &source,
        image,
        &top.bytes,
        top.media_type.as_deref(),
        &top.digest,
        arch,
        cfg,
    )?;
    let mut digests = vec![top.digest.clone()];
    if resolved.manifest_digest != top.digest {
        digests.push(resolved.manifest_digest.clone());
    }
    let how = Check {
        cfg,
        client: Some(&client),
        cache: Some(cache),
        online: true,
    };
    let verdict = enforce_with(&how, mode, image, &digests, keys)?;
    let content = fetch_content(&source, image, &resolved, arch, cfg)?;

    cache.put_blob(&content.layer)?;
    cache.put_blob(&content.config_bytes)?;
    if let Some(manifest_bytes) = &resolved.child_bytes {
        cache.put_blob(manifest_bytes)?;
    }
    cache.put_blob(&top.bytes)?;
    cache.put_ref(image, &top.digest)?;

    let pulled = PulledImage {
        reference: image.clone(),
        digest: resolved.manifest_digest.clone(),
        index_digest: resolved.index.as_ref().map(|_| top.digest.clone()),
        arch,
        object: content.object_bytes,
        object_path: content.object_path,
        programs: content.programs,
        maps: content.maps,
        from_cache: false,
    };
    Ok((pulled, verdict))
}

fn candidate_digests(p: &PulledImage) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(i) = &p.index_digest {
        v.push(i.clone());
    }
    v.push(p.digest.clone());
    v
}

impl Cache {
    /// The cached image `image` names (by tag or digest) for `arch`, checked like a pull with
    /// the default limits; `None` if it is not (completely) cached. Never contacts a registry.
    pub fn get(&self, image: &ImageRef, arch: Arch) -> Result<Option<PulledImage>> {
        let Some(top) = self.lookup(image)? else {
            return Ok(None);
        };
        let cfg = ClientConfig {
            arch: Some(arch),
            ..ClientConfig::default()
        };
        match load_cached(self, image, &top, arch, &cfg) {
            Ok(p) => Ok(Some(p)),
            Err(Error::NotCached { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn load_cached(
    cache: &Cache,
    image: &ImageRef,
    top_digest: &str,
    arch: Arch,
    cfg: &ClientConfig,
) -> Result<PulledImage> {
    let source = Local(cache);
    let top = source.get(image, top_digest)?;
    let resolved = resolve(&source, image, &top, None, top_digest, arch, cfg)?;
    let content = fetch_content(&source, image, &resolved, arch, cfg)?;
    Ok(PulledImage {
        reference: image.clone(),
        digest: resolved.manifest_digest.clone(),
        index_digest: resolved.index.as_ref().map(|_| top_digest.to_string()),
        arch,
        object: content.object_bytes,
        object_path: content.object_path,
        programs: content.programs,
        maps: content.maps,
        from_cache: true,
    })
}

/// Shows an image's platforms, programs and maps: from the cache if the reference is cached,
/// else from the registry (manifest and config only; the layer is not downloaded).
pub fn inspect(cfg: &ClientConfig, cache: Option<&Cache>, image: &ImageRef) -> Result<ImageInfo> {
    let arch = cfg.target_arch()?;
    if let Some(cache) = cache {
        if let Some(top_digest) = cache.lookup(image)? {
            let source = Local(cache);
            let attempt = source
                .get(image, &top_digest)
                .and_then(|top| info(&source, image, &top, None, &top_digest, arch, cfg, true));
            match attempt {
                Ok(info) => return Ok(info),
                Err(Error::NotCached { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let client = RegistryClient::new(cfg)?;
    let top = client.get_manifest(image)?;
    info(
        &Remote(&client),
        image,
        &top.bytes,
        top.media_type.as_deref(),
        &top.digest,
        arch,
        cfg,
        false,
    )
}

#[allow(clippy::too_many_arguments)]
fn info(
    source: &dyn Source,
    image: &ImageRef,
    top: &[u8],
    media_type: Option<&str>,
    top_digest: &str,
    arch: Arch,
    cfg: &ClientConfig,
    from_cache: bool,
) -> Result<ImageInfo> {
    let resolved = resolve(source, image, top, media_type, top_digest, arch, cfg)?;
    let (config, _) = fetch_config(source, image, &resolved.manifest, cfg)?;
    let (programs, maps) = labels_from_config(&image.to_string(), &config)?;
    let layer = resolved
        .manifest
        .layers
        .first()
        .ok_or_else(|| Error::InvalidImage {
            reference: image.to_string(),
            reason: "its manifest has no layer".into(),
        })?;
    let platforms = resolved
        .index
        .as_ref()
        .map(|ix| {
            ix.manifests
                .iter()
                .filter_map(|d| {
                    d.platform.as_ref().map(|p| PlatformEntry {
                        os: p.os.clone(),
                        architecture: p.architecture.clone(),
                        variant: p.variant.clone(),
                        digest: d.digest.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ImageInfo {
        reference: image.to_string(),
        digest: top_digest.to_string(),
        media_type: if resolved.index.is_some() {
            OCI_INDEX.to_string()
        } else {
            resolved
                .manifest
                .media_type
                .clone()
                .unwrap_or_else(|| OCI_MANIFEST.to_string())
        },
        platforms,
        arch: arch.name().to_string(),
        manifest_digest: resolved.manifest_digest.clone(),
        config_digest: resolved.manifest.config.digest.clone(),
        layer: LayerInfo {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        },
        programs,
        maps,
        labels: config.config.labels.clone().unwrap_or_default(),
        from_cache,
    })
}

/// Pushes a built image to `image`'s tag (or checks it against a pinned digest). Blobs the
/// repository already has are not uploaded again. Returns the digest the tag points at.
pub fn push(cfg: &ClientConfig, built: &BuiltImage, image: &ImageRef) -> Result<String> {
    let digest = built.digest();
    if built.manifests.is_empty() {
        return Err(Error::Build {
            reason: "the image has no manifest".into(),
        });
    }
    let reference = match (&image.tag, &image.digest) {
        (_, Some(d)) if *d != digest => {
            return Err(Error::DigestMismatch {
                what: format!("image pushed to {image}"),
                expected: d.clone(),
                actual: digest,
            })
        }
        (Some(tag), _) => tag.clone(),
        (None, _) => digest.clone(),
    };
    let client = RegistryClient::new(cfg)?;
    for m in &built.manifests {
        client.push_blob(image, &m.layer)?;
        client.push_blob(image, &m.config)?;
        if built.index.is_some() {
            client.put_manifest(image, &m.manifest_digest, &m.manifest, OCI_MANIFEST)?;
        }
    }
    let pushed = match (&built.index, built.manifests.first()) {
        (Some(index), _) => client.put_manifest(image, &reference, index, OCI_INDEX)?,
        (None, Some(m)) => client.put_manifest(image, &reference, &m.manifest, OCI_MANIFEST)?,
        (None, None) => digest.clone(),
    };
    Ok(pushed)
}

/// Where manifests and blobs come from: the registry or the cache.
trait Source {
    /// A manifest an index points at.
    fn child_manifest(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cfg: &ClientConfig,
    ) -> Result<Vec<u8>>;
    fn blob(&self, image: &ImageRef, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>>;
}

struct Remote<'a>(&'a RegistryClient);

impl Source for Remote<'_> {
    fn child_manifest(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cfg: &ClientConfig,
    ) -> Result<Vec<u8>> {
        if desc.size > cfg.limits.max_document {
            return Err(Error::TooLarge {
                what: format!("manifest {}", desc.digest),
                limit: cfg.limits.max_document,
            });
        }
        let fetched = self.0.get_manifest(&image.with_digest(&desc.digest))?;
        if fetched.bytes.len() as u64 != desc.size {
            return Err(Error::DigestMismatch {
                what: format!("manifest {} (size)", desc.digest),
                expected: format!("{} bytes", desc.size),
                actual: format!("{} bytes", fetched.bytes.len()),
            });
        }
        Ok(fetched.bytes)
    }

    fn blob(&self, image: &ImageRef, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>> {
        self.0.get_blob(image, desc, limit, what)
    }
}

struct Local<'a>(&'a Cache);

impl Local<'_> {
    fn get(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>> {
        self.0.get_blob(digest)?.ok_or_else(|| Error::NotCached {
            reference: image.with_digest(digest).to_string(),
        })
    }
}

impl Source for Local<'_> {
    fn child_manifest(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        _cfg: &ClientConfig,
    ) -> Result<Vec<u8>> {
        self.get(image, &desc.digest)
    }

    fn blob(&self, image: &ImageRef, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge {
                what: format!("{what} ({} bytes)", desc.size),
                limit,
            });
        }
        self.get(image, &desc.digest)
    }
}

/// The manifest chosen for the target architecture.
struct Resolved {
    index: Option<ImageIndex>,
    /// The chosen manifest's bytes when it came from an index.
    child_bytes: Option<Vec<u8>>,
    manifest: ImageManifest,
    manifest_digest: String,
}

fn resolve(
    source: &dyn Source,
    image: &ImageRef,
    top: &[u8],
    media_type: Option<&str>,
    top_digest: &str,
    arch: Arch,
    cfg: &ClientConfig,
) -> Result<Resolved> {
    match AnyManifest::parse(top, media_type)? {
        AnyManifest::Image(manifest) => Ok(Resolved {
            index: None,
            child_bytes: None,
            manifest,
            manifest_digest: top_digest.to_string(),
        }),
        AnyManifest::Index(index) => {
            let candidates: Vec<&Descriptor> = index
                .manifests
                .iter()
                .filter(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch.name())
                })
                .collect();
            // Prefer an entry without a variant (arm64 images sometimes list v8 separately).
            let chosen = candidates
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
                .or(candidates.first())
                .copied()
                .ok_or_else(|| Error::NoMatchingPlatform {
                    reference: image.to_string(),
                    arch: arch.name().to_string(),
                    available: platforms_text(&index),
                })?;
            if chosen.media_type != OCI_MANIFEST && chosen.media_type != DOCKER_MANIFEST {
                return Err(Error::Unsupported {
                    what: format!("manifest type for linux/{arch} in {image}"),
                    value: chosen.media_type.clone(),
                });
            }
            let bytes = source.child_manifest(image, chosen, cfg)?;
            crate::manifest::verify_digest(
                &format!("manifest for linux/{arch}"),
                &chosen.digest,
                &bytes,
            )?;
            let AnyManifest::Image(manifest) =
                AnyManifest::parse(&bytes, Some(&chosen.media_type))?
            else {
                return Err(Error::InvalidImage {
                    reference: image.to_string(),
                    reason: format!("the index entry for linux/{arch} is another index"),
                });
            };
            Ok(Resolved {
                index: Some(index.clone()),
                child_bytes: Some(bytes),
                manifest,
                manifest_digest: chosen.digest.clone(),
            })
        }
    }
}

fn platforms_text(index: &ImageIndex) -> String {
    let v: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if v.is_empty() {
        "no platforms".into()
    } else {
        v.join(", ")
    }
}

fn fetch_config(
    source: &dyn Source,
    image: &ImageRef,
    manifest: &ImageManifest,
    cfg: &ClientConfig,
) -> Result<(ImageConfig, Vec<u8>)> {
    let media = manifest.config.media_type.as_str();
    if media != OCI_CONFIG && media != DOCKER_CONFIG {
        return Err(Error::InvalidImage {
            reference: image.to_string(),
            reason: format!("its config has media type {media}, not an image config"),
        });
    }
    let bytes = source.blob(
        image,
        &manifest.config,
        cfg.limits.max_document,
        "image config",
    )?;
    let config: ImageConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::json("image config", e))?;
    Ok((config, bytes))
}

struct Content {
    config_bytes: Vec<u8>,
    layer: Vec<u8>,
    object_bytes: Vec<u8>,
    object_path: String,
    programs: Labels,
    maps: Labels,
}

fn fetch_content(
    source: &dyn Source,
    image: &ImageRef,
    resolved: &Resolved,
    arch: Arch,
    cfg: &ClientConfig,
) -> Result<Content> {
    let manifest = &resolved.manifest;
    let (config, config_bytes) = fetch_config(source, image, manifest, cfg)?;
    let (programs, maps) = labels_from_config(&image.to_string(), &config)?;
    let layer_desc = match manifest.layers.as_slice() {
        [one] => one,
        layers => {
            return Err(Error::InvalidImage {
                reference: image.to_string(),
                reason: format!(
                    "it has {} layers; a bytecode image has exactly one",
                    layers.len()
                ),
            })
        }
    };
    let compression = LayerCompression::from_media_type(&layer_desc.media_type)?;
    let layer = source.blob(image, layer_desc, cfg.limits.max_compressed, "layer")?;
    let object = extract_object(&layer, compression, cfg.limits.max_uncompressed)?;
    check_object_for(&object.bytes, arch)?;
    Ok(Content {
        config_bytes,
        layer,
        object_bytes: object.bytes,
        object_path: object.path,
        programs,
        maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_names() {
        assert_eq!("Always".parse::<PullPolicy>().unwrap(), PullPolicy::Always);
        assert_eq!(
            "IfNotPresent".parse::<PullPolicy>().unwrap(),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            "if-not-present".parse::<PullPolicy>().unwrap(),
            PullPolicy::IfNotPresent
        );
        assert_eq!("never".parse::<PullPolicy>().unwrap(), PullPolicy::Never);
        assert!("sometimes".parse::<PullPolicy>().is_err());
        assert_eq!(PullPolicy::IfNotPresent.to_string(), "IfNotPresent");
    }
}
