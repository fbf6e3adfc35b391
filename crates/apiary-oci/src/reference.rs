//! Image references: the docker reference grammar (`[host[:port]/]path[:tag][@digest]`).
//!
//! This module owns parsing and printing references and the names derived from them: the
//! registry's API host, the `repository:<name>:<actions>` token scope, and cosign's signature
//! tag. A reference without a registry host means Docker Hub (`docker.io`, with `library/` for
//! single-component names), as docker and podman read it.

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Docker Hub's name in references, and the host its registry API really lives on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference. `tag` is `latest` when neither tag nor digest was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `quay.io`, `localhost:5000`, `docker.io`.
    pub registry: String,
    /// The repository path within the registry, e.g. `bpfman/xdp-pass`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` when the reference pins a digest.
    pub digest: Option<String>,
}

impl ImageRef {
    /// The same repository pinned to `digest` (the tag is dropped: the digest is what was
    /// loaded).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The same repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        }
    }

    /// What the registry API is asked for: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository`, the name cosign records as `docker-reference`.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host the registry API is served from (Docker Hub's API is not on `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB || self.registry == "index.docker.io" {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<ImageRef> {
        parse(s).map_err(|reason| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<ImageRef, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty reference".into());
    }
    if s.len() > 4096 {
        return Err("reference is too long".into());
    }
    let s = s
        .strip_prefix("docker://")
        .or_else(|| s.strip_prefix("oci://"))
        .unwrap_or(s);

    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            validate_digest(digest)?;
            (rest, Some(digest.to_string()))
        }
        None => (s, None),
    };

    // A tag follows the last ':' only if that ':' comes after the last '/' (else it is a port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
        _ => (rest, None),
    };
    if let Some(tag) = &tag {
        validate_tag(tag)?;
    }

    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if is_domain(first) => (first.to_string(), path.to_string()),
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry != DOCKER_HUB {
        validate_domain(&registry)?;
    }
    let repository =
        if (registry == DOCKER_HUB || registry == "index.docker.io") && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
    validate_path(&repository)?;

    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_string()),
        _ => tag,
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule: the first component names a registry if it has a dot or a port, or is
/// `localhost`.
fn is_domain(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn validate_domain(d: &str) -> Result<(), String> {
    let (host, port) = if d.starts_with('[') {
        match d.find(']') {
            Some(end) if end + 1 == d.len() => (d, None),
            Some(end) if d[end + 1..].starts_with(':') => (&d[..=end], Some(&d[end + 2..])),
            _ => return Err(format!("invalid registry host {d:?}")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(format!("invalid port in registry {d:?}"));
        }
    }
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {d:?}"))
    }
}

/// `path-component := [a-z0-9]+ (separator [a-z0-9]+)*` with separators `.`, `_`, `__`, `-+`.
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("missing repository name".into());
    }
    if path.len() > 255 {
        return Err("repository name is longer than 255 characters".into());
    }
    for comp in path.split('/') {
        let bytes = comp.as_bytes();
        let valid_chars = bytes.iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        let alnum =
            |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if comp.is_empty()
            || !valid_chars
            || !alnum(bytes.first())
            || !alnum(bytes.last())
            || comp.contains("..")
            || comp.contains("___")
            || comp.contains("._")
            || comp.contains("_.")
            || comp.contains(".-")
            || comp.contains("-.")
            || comp.contains("_-")
            || comp.contains("-_")
        {
            return Err(format!(
                "invalid repository path component {comp:?}: use lowercase letters, digits and single separators (. _ __ -)"
            ));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

/// Only sha256 digests are accepted: it is what every registry and cosign use, and what apiary
/// verifies content against.
pub(crate) fn validate_digest(d: &str) -> Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" => Err(format!(
            "unsupported digest algorithm {alg:?} (only sha256)"
        )),
        _ => Err(format!(
            "invalid digest {d:?}: expected sha256:<64 lowercase hex digits>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn registry_with_port_and_tag() {
        let r = p("localhost:5000/repo:tag");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "repo");
        assert_eq!(r.tag.as_deref(), Some("tag"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "localhost:5000/repo:tag");
    }

    #[test]
    fn default_tag_and_port_without_tag() {
        let r = p("127.0.0.1:5000/a/b");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.reference(), "latest");
    }

    #[test]
    fn digest_reference() {
        let r = p(&format!("quay.io/bpfman-bytecode/xdp_pass@{D}"));
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "bpfman-bytecode/xdp_pass");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.reference(), D);
        let both = p(&format!("quay.io/x/y:v1@{D}"));
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert_eq!(both.reference(), D, "the digest wins over the tag");
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = p("bpfman/bpfman:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "bpfman/bpfman")
        );
        let r = p("docker.io/busybox");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(p("docker://quay.io/a/b").registry, "quay.io");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "quay.io/",
            "quay.io/a//b",
            "quay.io/a:bad tag",
            "quay.io/a@sha256:abc",
            "quay.io/a@md5:0123456789abcdef0123456789abcdef",
            "quay.io/-a",
            "localhost:5x/a",
            "quay.io/a/../b",
        ] {
            let e = bad.parse::<ImageRef>().unwrap_err();
            assert!(matches!(e, Error::InvalidReference { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn separators() {
        for ok in [
            "quay.io/a_b",
            "quay.io/a__b",
            "quay.io/a---b",
            "quay.io/a.b",
            "quay.io/x/a-b.c_d",
        ] {
            p(ok);
        }
    }
}
