//! Signature policy: whether an image must be signed before apiary loads it.
//!
//! This module owns the decision, separate from how signatures are checked (`sign`): a default
//! mode plus modes for registry or repository prefixes (the longest matching prefix wins), and
//! the verdict a caller records. Under `RequireSigned` a missing or invalid signature is an
//! error and the caller loads nothing; under `Warn` it is a warning in the verdict.
//!
//! Signatures fetched during a pull are kept in the cache, so a cached image is re-verified
//! offline against the current keys; the registry is asked again only when no cached signature
//! verifies and the pull policy allows contacting it.

use crate::cache::Cache;
use crate::config::{path_prefix, ClientConfig};
use crate::error::{Error, Result};
use crate::reference::ImageRef;
use crate::registry::RegistryClient;
use crate::sign::{verify_online, verify_stored, VerifiedSignature, VerifyingKey};
use std::fmt;
use std::str::FromStr;

/// What to do about an image's signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMode {
    /// Do not check (bpfman's default).
    #[default]
    AllowUnsigned,
    /// Check; report a missing or bad signature but load anyway.
    Warn,
    /// Load only images with a signature from one of the keys.
    RequireSigned,
}

impl FromStr for SignatureMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<SignatureMode> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "allowunsigned" | "allow" | "none" => Ok(SignatureMode::AllowUnsigned),
            "warn" => Ok(SignatureMode::Warn),
            "requiresigned" | "require" | "enforce" => Ok(SignatureMode::RequireSigned),
            _ => Err(Error::Unsupported {
                what: "signature policy".into(),
                value: format!("{s:?} (expected AllowUnsigned, Warn or RequireSigned)"),
            }),
        }
    }
}

impl fmt::Display for SignatureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureMode::AllowUnsigned => "AllowUnsigned",
            SignatureMode::Warn => "Warn",
            SignatureMode::RequireSigned => "RequireSigned",
        })
    }
}

/// A default mode and per-prefix overrides (`quay.io`, `quay.io/team`, `localhost:5000/prod`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignaturePolicy {
    pub default: SignatureMode,
    pub scopes: Vec<(String, SignatureMode)>,
}

impl SignaturePolicy {
    pub fn new(default: SignatureMode) -> SignaturePolicy {
        SignaturePolicy {
            default,
            scopes: Vec::new(),
        }
    }

    /// Adds a mode for images under `prefix` (a registry, or registry/repository path prefix).
    pub fn with_scope(mut self, prefix: impl Into<String>, mode: SignatureMode) -> SignaturePolicy {
        self.scopes.push((prefix.into(), mode));
        self
    }

    /// The mode for `image`: the longest matching scope's, else the default.
    pub fn mode_for(&self, image: &ImageRef) -> SignatureMode {
        let name = image.repository_name();
        self.scopes
            .iter()
            .map(|(prefix, mode)| (prefix.trim().trim_end_matches('/'), *mode))
            .filter(|(prefix, _)| !prefix.is_empty() && path_prefix(prefix, &name))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, mode)| mode)
            .unwrap_or(self.default)
    }
}

/// The outcome of a policy check that let the image through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The policy did not ask for a check.
    NotChecked,
    Verified(VerifiedSignature),
    /// `Warn`: the check failed for this reason and the image was allowed.
    Warning(String),
}

/// Applies `policy` to the manifest `digest` of `image`, fetching its signatures from the
/// registry. An `Err` means the image must not be loaded.
pub fn enforce(
    policy: &SignaturePolicy,
    cfg: &ClientConfig,
    image: &ImageRef,
    digest: &str,
    keys: &[VerifyingKey],
) -> Result<Verdict> {
    let check = Check {
        cfg,
        client: None,
        cache: None,
        online: true,
    };
    enforce_with(
        &check,
        policy.mode_for(image),
        image,
        &[digest.to_string()],
        keys,
    )
}

/// Where a policy check may look for signatures.
pub(crate) struct Check<'a> {
    pub cfg: &'a ClientConfig,
    /// A client whose authorization can be reused; one is made if needed.
    pub client: Option<&'a RegistryClient>,
    pub cache: Option<&'a Cache>,
    /// Whether the registry may be contacted.
    pub online: bool,
}

/// The policy check behind [`enforce`] and the pull: a signature on any of `digests` (an index
/// and the manifest chosen from it) counts. Cached signatures are tried first; `online` allows
/// fetching them from the registry.
pub(crate) fn enforce_with(
    how: &Check<'_>,
    mode: SignatureMode,
    image: &ImageRef,
    digests: &[String],
    keys: &[VerifyingKey],
) -> Result<Verdict> {
    if mode == SignatureMode::AllowUnsigned {
        return Ok(Verdict::NotChecked);
    }
    match check(how, image, digests, keys) {
        Ok(v) => Ok(Verdict::Verified(v)),
        Err(e) if mode == SignatureMode::Warn => Ok(Verdict::Warning(e.to_string())),
        Err(e) => Err(e),
    }
}

fn check(
    how: &Check<'_>,
    image: &ImageRef,
    digests: &[String],
    keys: &[VerifyingKey],
) -> Result<VerifiedSignature> {
    if keys.is_empty() {
        return Err(Error::NoVerificationKeys {
            reference: image.to_string(),
        });
    }
    let mut cached_reasons = Vec::new();
    if let Some(cache) = how.cache {
        for digest in digests {
            let sigs = cache.signatures(digest)?;
            if sigs.is_empty() {
                continue;
            }
            match verify_stored(&sigs, digest, keys) {
                Ok(v) => return Ok(v),
                Err(r) => cached_reasons.extend(r),
            }
        }
    }
    if !how.online {
        let digest = digests.first().cloned().unwrap_or_default();
        return Err(Error::SignatureInvalid {
            reference: image.to_string(),
            digest,
            reason: if cached_reasons.is_empty() {
                "no signature is cached and the pull policy Never forbids fetching one".into()
            } else {
                format!(
                    "{}; the pull policy Never forbids fetching newer signatures",
                    cached_reasons.join("; ")
                )
            },
        });
    }
    match how.client {
        Some(client) => verify_online(client, how.cache, image, digests, keys),
        None => verify_online(
            &RegistryClient::new(how.cfg)?,
            how.cache,
            image,
            digests,
            keys,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let policy = SignaturePolicy::new(SignatureMode::AllowUnsigned)
            .with_scope("quay.io", SignatureMode::Warn)
            .with_scope("quay.io/prod", SignatureMode::RequireSigned)
            .with_scope("quay.io/prod/legacy", SignatureMode::AllowUnsigned);
        let mode = |r: &str| policy.mode_for(&r.parse().unwrap());
        assert_eq!(mode("ghcr.io/x"), SignatureMode::AllowUnsigned);
        assert_eq!(mode("quay.io/dev/x"), SignatureMode::Warn);
        assert_eq!(mode("quay.io/prod/x:v1"), SignatureMode::RequireSigned);
        assert_eq!(
            mode("quay.io/production/x"),
            SignatureMode::Warn,
            "prefixes end at a /"
        );
        assert_eq!(mode("quay.io/prod/legacy/x"), SignatureMode::AllowUnsigned);
    }

    #[test]
    fn mode_names() {
        assert_eq!(
            "RequireSigned".parse::<SignatureMode>().unwrap(),
            SignatureMode::RequireSigned
        );
        assert_eq!(
            "warn".parse::<SignatureMode>().unwrap(),
            SignatureMode::Warn
        );
        assert_eq!(
            "allow-unsigned".parse::<SignatureMode>().unwrap(),
            SignatureMode::AllowUnsigned
        );
        assert!("maybe".parse::<SignatureMode>().is_err());
    }

    #[test]
    fn require_without_keys_is_an_error() {
        let image: ImageRef = "localhost:1/x:v1".parse().unwrap();
        let d = vec![format!("sha256:{}", "0".repeat(64))];
        let cfg = ClientConfig::default();
        let how = Check {
            cfg: &cfg,
            client: None,
            cache: None,
            online: true,
        };
        let e = enforce_with(&how, SignatureMode::RequireSigned, &image, &d, &[]).unwrap_err();
        assert!(matches!(e, Error::NoVerificationKeys { .. }), "{e}");
        let v = enforce_with(&how, SignatureMode::Warn, &image, &d, &[]).unwrap();
        assert!(matches!(v, Verdict::Warning(_)));
        let v = enforce_with(&how, SignatureMode::AllowUnsigned, &image, &d, &[]).unwrap();
        assert_eq!(v, Verdict::NotChecked);
    }
}
