//! How apiary talks to registries: TLS and insecure registries, credentials, size limits.
//!
//! This module owns [`ClientConfig`] and credential lookup: explicit credentials first, then the
//! `auths` entries of a docker/podman auth file (`auth.json`, `~/.docker/config.json`), matched
//! like podman does (`registry/namespace` entries beat `registry` ones; the longest match wins).
//! Credential helpers (`credHelpers`, `credsStore`) are not run: apiary never executes programs
//! named in a config file.

use crate::error::{Error, Result};
use crate::manifest::Arch;
use crate::reference::ImageRef;
use base64ct::{Base64, Encoding};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A username and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl RegistryAuth {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> RegistryAuth {
        RegistryAuth {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic` value.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            Base64::encode_string(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Size caps for what apiary downloads and unpacks. A bytecode image is one small object, so
/// the defaults are generous for BPF and small for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A manifest, index or config document.
    pub max_document: u64,
    /// The compressed layer as stored in the registry.
    pub max_compressed: u64,
    /// The unpacked layer (the whole tar stream) and so the object in it.
    pub max_uncompressed: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_document: 4 << 20,
            max_compressed: 64 << 20,
            max_uncompressed: 64 << 20,
        }
    }
}

/// Everything a registry operation needs besides the image reference.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Registries (`host[:port]`, or a `host[:port]/namespace` prefix) that may be reached over
    /// plain HTTP or with an unverified certificate, as registries.conf's `insecure = true`.
    pub insecure_registries: Vec<String>,
    /// `false` makes every registry insecure, as podman/skopeo's `--tls-verify=false`.
    pub tls_verify: bool,
    /// Extra CA certificates (PEM) to trust for HTTPS, for private registries. With it, the
    /// trusted roots are the system bundle plus this file; without it, Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// A docker/podman auth file with an `auths` object.
    pub auth_file: Option<PathBuf>,
    /// Credentials for every registry this config talks to; they win over the auth file.
    pub credentials: Option<RegistryAuth>,
    /// The platform to pick from multi-arch images; `None` means this host's.
    pub arch: Option<Arch>,
    pub limits: Limits,
    /// Timeout for connecting to a registry.
    pub connect_timeout: Duration,
    /// Timeout for a whole request, body included.
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            insecure_registries: Vec::new(),
            tls_verify: true,
            ca_file: None,
            auth_file: None,
            credentials: None,
            arch: None,
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            user_agent: format!("apiary/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl ClientConfig {
    /// Whether `image`'s registry may be reached without TLS verification.
    pub fn is_insecure(&self, image: &ImageRef) -> bool {
        if !self.tls_verify {
            return true;
        }
        let name = image.repository_name();
        self.insecure_registries.iter().any(|entry| {
            let entry = entry
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            !entry.is_empty() && path_prefix(entry, &name)
        })
    }

    /// The architecture to pull.
    pub fn target_arch(&self) -> Result<Arch> {
        self.arch
            .or_else(Arch::host)
            .ok_or_else(|| Error::Unsupported {
                what: "host architecture".into(),
                value: format!("{} (set ClientConfig::arch)", std::env::consts::ARCH),
            })
    }

    /// Sets `auth_file` to the first one that exists of: `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
    /// `~/.docker/config.json` (podman's order, then docker's).
    pub fn with_default_auth_file(mut self) -> ClientConfig {
        self.auth_file = default_auth_file();
        self
    }

    /// The credentials to use for `image`, if any.
    pub fn credentials_for(&self, image: &ImageRef) -> Result<Option<RegistryAuth>> {
        if let Some(c) = &self.credentials {
            return Ok(Some(c.clone()));
        }
        match &self.auth_file {
            Some(path) => auth_file_lookup(path, image),
            None => Ok(None),
        }
    }
}

/// `prefix` equals `name` or is a path prefix of it (`quay.io/ns` matches `quay.io/ns/x`, not
/// `quay.io/nsx`).
pub(crate) fn path_prefix(prefix: &str, name: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn default_auth_file() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let candidates = [
        env("REGISTRY_AUTH_FILE"),
        env("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
        env("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
        env("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| home.as_ref().map(|h| h.join(".docker/config.json"))),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// Finds `image`'s entry in an auth file's `auths`.
pub fn auth_file_lookup(path: &Path, image: &ImageRef) -> Result<Option<RegistryAuth>> {
    let bad = |reason: String| Error::AuthFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let name = image.repository_name();
    let hub = image.registry == crate::reference::DOCKER_HUB;
    let mut best: Option<(usize, &serde_json::Value)> = None;
    for (key, entry) in auths {
        let Some(norm) = normalize_auth_key(key, hub) else {
            continue;
        };
        let norm = if hub && (norm == "index.docker.io" || norm == "registry-1.docker.io") {
            crate::reference::DOCKER_HUB.to_string()
        } else {
            norm
        };
        if path_prefix(&norm, &name) && best.is_none_or(|(len, _)| norm.len() > len) {
            best = Some((norm.len(), entry));
        }
    }
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = Base64::decode_vec(auth.trim())
            .map_err(|e| bad(format!("entry for {name}: auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("entry for {name}: auth is not UTF-8")))?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            bad(format!(
                "entry for {name}: auth is not base64 of user:password"
            ))
        })?;
        return Ok(Some(RegistryAuth::new(user, pass)));
    }
    let user = entry.get("username").and_then(|v| v.as_str());
    let pass = entry.get("password").and_then(|v| v.as_str());
    match (user, pass) {
        (Some(u), Some(p)) => Ok(Some(RegistryAuth::new(u, p))),
        _ => Ok(None),
    }
}

/// Auth file keys may be `host`, `host/ns`, or URLs such as `https://index.docker.io/v1/`.
fn normalize_auth_key(key: &str, hub: bool) -> Option<String> {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.trim_end_matches('/');
    // docker's legacy keys carry an API path: host/v1, host/v2.
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    if k.is_empty() {
        return None;
    }
    if hub && k == "docker.io" {
        return Some(crate::reference::DOCKER_HUB.to_string());
    }
    Some(k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("apiary-oci-config-{}-{name}", std::process::id()))
    }

    #[test]
    fn auth_file_entries() {
        let dir = tmp("auths");
        let b64 = |s: &str| Base64::encode_string(s.as_bytes());
        let path = write(
            &dir,
            "auth.json",
            &format!(
                r#"{{"auths": {{
                    "quay.io": {{"auth": "{}"}},
                    "quay.io/team": {{"auth": "{}"}},
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "localhost:5000": {{"username": "u", "password": "p"}}
                }}}}"#,
                b64("general:one"),
                b64("team:two:with:colons"),
                b64("hub:three")
            ),
        );
        let get = |r: &str| auth_file_lookup(&path, &r.parse().unwrap()).unwrap();
        assert_eq!(
            get("quay.io/other/x"),
            Some(RegistryAuth::new("general", "one"))
        );
        assert_eq!(
            get("quay.io/team/x"),
            Some(RegistryAuth::new("team", "two:with:colons"))
        );
        assert_eq!(
            get("quay.io/teamx/x"),
            Some(RegistryAuth::new("general", "one"))
        );
        assert_eq!(get("busybox"), Some(RegistryAuth::new("hub", "three")));
        assert_eq!(get("localhost:5000/a"), Some(RegistryAuth::new("u", "p")));
        assert_eq!(get("ghcr.io/a"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn auth_file_errors_name_the_file() {
        let dir = tmp("bad");
        let path = write(
            &dir,
            "auth.json",
            r#"{"auths": {"quay.io": {"auth": "!!!"}}}"#,
        );
        let e = auth_file_lookup(&path, &"quay.io/a".parse().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("auth.json") && e.to_string().contains("base64"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn insecure_matching() {
        let cfg = ClientConfig {
            insecure_registries: vec!["localhost:5000".into(), "quay.io/dev".into()],
            ..ClientConfig::default()
        };
        let r = |s: &str| s.parse::<ImageRef>().unwrap();
        assert!(cfg.is_insecure(&r("localhost:5000/a")));
        assert!(!cfg.is_insecure(&r("localhost:5001/a")));
        assert!(cfg.is_insecure(&r("quay.io/dev/a")));
        assert!(!cfg.is_insecure(&r("quay.io/devx/a")));
        let all = ClientConfig {
            tls_verify: false,
            ..ClientConfig::default()
        };
        assert!(all.is_insecure(&r("quay.io/a")));
    }

    #[test]
    fn debug_hides_password() {
        let s = format!("{:?}", RegistryAuth::new("u", "secret"));
        assert!(!s.contains("secret"));
    }
}
