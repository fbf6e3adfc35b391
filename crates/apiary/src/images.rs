//! Bytecode images for loads: registry access and signature policy from the `[images]` table of
//! apiary's config file (`/etc/apiary/apiary.toml`, or the file APIARY_CONFIG names), pulls into
//! a cache under the state dir, and the policy check before anything is loaded.
//!
//! ```toml
//! [images]
//! insecure_registries = ["localhost:5000"]   # plain HTTP allowed only for these
//! tls_verify = true
//! ca_file = "/etc/apiary/registry-ca.pem"
//! auth_file = "/root/.docker/config.json"    # docker/podman auth.json format
//! signature_policy = "require"               # allow | warn | require
//! verify_keys = ["/etc/apiary/cosign.pub"]
//! [images.scopes]                            # longest prefix wins
//! "registry.example.com/prod/" = "require"
//! ```

use crate::error::{Error, Result};
use apiary_oci::{
    ClientConfig, ImageRef, PullPolicy, PulledImage, SignatureMode, SignaturePolicy, Verdict,
    VerifyingKey,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesToml {
    #[serde(default)]
    insecure_registries: Vec<String>,
    tls_verify: Option<bool>,
    ca_file: Option<PathBuf>,
    auth_file: Option<PathBuf>,
    signature_policy: Option<String>,
    #[serde(default)]
    verify_keys: Vec<PathBuf>,
    #[serde(default)]
    scopes: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct ConfigToml {
    #[serde(default)]
    images: Option<ImagesToml>,
}

/// Everything a pull needs: how to reach registries, which signatures to demand, and where the
/// cache is.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub client: ClientConfig,
    pub policy: SignaturePolicy,
    pub keys: Vec<VerifyingKey>,
    pub cache_dir: PathBuf,
}

pub fn parse_mode(s: &str) -> Result<SignatureMode> {
    match s.to_ascii_lowercase().as_str() {
        "allow" | "allow-unsigned" | "allowunsigned" => Ok(SignatureMode::AllowUnsigned),
        "warn" => Ok(SignatureMode::Warn),
        "require" | "require-signed" | "requiresigned" => Ok(SignatureMode::RequireSigned),
        other => Err(Error::InvalidArgument(format!(
            "unknown signature policy {other:?}: expected allow, warn or require"
        ))),
    }
}

/// The config file to read: APIARY_CONFIG, else /etc/apiary/apiary.toml if it exists.
pub fn config_path() -> Option<PathBuf> {
    match std::env::var_os("APIARY_CONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from("/etc/apiary/apiary.toml")).filter(|p| p.exists()),
    }
}

impl ImageSettings {
    /// Settings from the config file (if any), with the cache under `state_dir`.
    pub fn load(config: Option<&Path>, state_dir: &Path) -> Result<ImageSettings> {
        let t = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot read config {}: {e}", path.display()))
                })?;
                let c: ConfigToml = toml::from_str(&text).map_err(|e| {
                    Error::InvalidArgument(format!("config {}: {e}", path.display()))
                })?;
                c.images.unwrap_or_default()
            }
            None => ImagesToml::default(),
        };
        let mut client = ClientConfig::default().with_default_auth_file();
        client.insecure_registries = t.insecure_registries;
        if let Some(v) = t.tls_verify {
            client.tls_verify = v;
        }
        client.ca_file = t.ca_file;
        if t.auth_file.is_some() {
            client.auth_file = t.auth_file;
        }
        let mut policy = SignaturePolicy::new(match &t.signature_policy {
            Some(s) => parse_mode(s)?,
            None => SignatureMode::AllowUnsigned,
        });
        for (prefix, mode) in &t.scopes {
            policy = policy.with_scope(prefix.clone(), parse_mode(mode)?);
        }
        let keys = t
            .verify_keys
            .iter()
            .map(|p| VerifyingKey::from_file(p).map_err(|e| Error::InvalidArgument(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(ImageSettings {
            client,
            policy,
            keys,
            cache_dir: state_dir.join("images"),
        })
    }

    pub fn cache(&self) -> apiary_oci::Cache {
        apiary_oci::Cache::new(&self.cache_dir)
    }

    /// Pull (or take from the cache) and check the signature policy before the layer is used.
    pub fn pull(&self, reference: &str, policy: PullPolicy) -> Result<(PulledImage, Verdict)> {
        let image: ImageRef = reference
            .parse()
            .map_err(|e: apiary_oci::Error| Error::InvalidArgument(e.to_string()))?;
        apiary_oci::pull_verified(
            &self.client,
            &self.cache(),
            &image,
            policy,
            &self.policy,
            &self.keys,
        )
        .map_err(|e| oci_error(e, reference))
    }
}

/// Registry and image errors, classified for the front doors.
pub fn oci_error(e: apiary_oci::Error, reference: &str) -> Error {
    use apiary_oci::Error as E;
    match &e {
        E::NotFound { .. } | E::NotCached { .. } => Error::NotFound {
            kind: "image",
            id: reference.to_string(),
            hint: format!(" ({e})"),
        },
        E::AuthRequired { .. } | E::AuthRejected { .. } => Error::FailedPrecondition(e.to_string()),
        _ if e.is_signature_error() => Error::FailedPrecondition(e.to_string()),
        E::Transport { .. } | E::Registry { .. } | E::Cache { .. } => {
            Error::Internal(e.to_string())
        }
        _ => Error::InvalidArgument(e.to_string()),
    }
}
