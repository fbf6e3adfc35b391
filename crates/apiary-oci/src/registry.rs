//! The OCI distribution API over blocking HTTP (ureq + rustls/ring).
//!
//! This module owns everything that crosses the network: HTTPS with verified certificates by
//! default (plain HTTP or unverified TLS only for registries the config marks insecure),
//! authentication (anonymous, Basic, and the `WWW-Authenticate: Bearer realm,service,scope`
//! token flow registries use), size-capped reads, digest checks of everything fetched, and
//! uploads (`POST` + `PUT` blob uploads, manifest `PUT` with its media type).
//!
//! One [`RegistryClient`] caches per-repository authorization and the scheme chosen for
//! insecure registries, so an operation's many requests pay for the token flow once.

use crate::config::{ClientConfig, RegistryAuth};
use crate::error::{Error, Result};
use crate::manifest::{sha256_digest, verify_digest, Descriptor, MANIFEST_ACCEPT};
use crate::reference::ImageRef;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use ureq::http::{self, Method, Response, StatusCode};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

/// A manifest or index as the registry returned it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// The registry's Content-Type, without parameters.
    pub media_type: Option<String>,
    /// sha256 of `bytes`, checked against the reference's digest or the registry's
    /// `Docker-Content-Digest`.
    pub digest: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// Where a request goes: a path under `/v2/<repository>/`, or an absolute URL the registry
/// handed out (an upload `Location`).
enum Target<'a> {
    Repo(&'a str),
    Url(&'a str),
}

/// A client for the registries one [`ClientConfig`] describes.
pub struct RegistryClient {
    cfg: ClientConfig,
    secure: Agent,
    insecure: OnceLock<Agent>,
    /// Per `host/repository`: the Authorization header that last worked.
    auth: Mutex<HashMap<String, String>>,
    /// Per host: the scheme that worked for an insecure registry.
    schemes: Mutex<HashMap<String, Scheme>>,
    /// Per `host/repository`: the credentials found for it (the auth file is read once).
    creds: Mutex<HashMap<String, Option<RegistryAuth>>>,
}

impl RegistryClient {
    pub fn new(cfg: &ClientConfig) -> Result<RegistryClient> {
        let roots = match &cfg.ca_file {
            Some(path) => {
                let mut certs = Vec::new();
                // The system bundle, so public registries keep working beside the private CA.
                for bundle in [
                    "/etc/ssl/certs/ca-certificates.crt",
                    "/etc/pki/tls/certs/ca-bundle.crt",
                ] {
                    if let Ok(pem) = std::fs::read(bundle) {
                        certs.extend(parse_certs(&pem));
                        break;
                    }
                }
                let pem = std::fs::read(path).map_err(|e| Error::Key {
                    path: path.display().to_string(),
                    reason: format!("cannot read CA file: {e}"),
                })?;
                let extra = parse_certs(&pem);
                if extra.is_empty() {
                    return Err(Error::Key {
                        path: path.display().to_string(),
                        reason: "no PEM CERTIFICATE in the CA file".into(),
                    });
                }
                certs.extend(extra);
                RootCerts::new_with_certs(&certs)
            }
            None => RootCerts::WebPki,
        };
        let tls = TlsConfig::builder().root_certs(roots).build();
        Ok(RegistryClient {
            secure: agent(cfg, tls),
            insecure: OnceLock::new(),
            cfg: cfg.clone(),
            auth: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    fn insecure_agent(&self) -> &Agent {
        self.insecure.get_or_init(|| {
            agent(
                &self.cfg,
                TlsConfig::builder().disable_verification(true).build(),
            )
        })
    }

    /// Fetches the manifest `image` names (its digest if pinned, else its tag).
    pub fn get_manifest(&self, image: &ImageRef) -> Result<FetchedManifest> {
        let reference = image.reference().to_string();
        let mut resp = self.send(
            image,
            Method::GET,
            Target::Repo(&format!("manifests/{reference}")),
            &[("accept", MANIFEST_ACCEPT)],
            None,
        )?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                    what: format!("manifest {reference}"),
                })
            }
            _ => {
                return Err(self.unexpected(image, "GET", &format!("manifests/{reference}"), resp))
            }
        }
        let media_type = header(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or(&c).trim().to_string());
        let header_digest = header(&resp, "docker-content-digest");
        let bytes = read_body(
            &mut resp,
            self.cfg.limits.max_document,
            image,
            &format!("manifest {reference}"),
        )?;
        let digest = sha256_digest(&bytes);
        let what = format!("manifest {image}");
        if let Some(expected) = &image.digest {
            verify_digest(&what, expected, &bytes)?;
        } else if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: h,
                    actual: digest,
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Like [`get_manifest`](Self::get_manifest) but `None` when the registry has no such
    /// manifest.
    pub fn get_manifest_opt(&self, image: &ImageRef) -> Result<Option<FetchedManifest>> {
        match self.get_manifest(image) {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches a blob, refusing it before download if its descriptor is over `limit`, and
    /// checking its size and sha256 against the descriptor.
    pub fn get_blob(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(Error::TooLarge {
                what: format!("{what} ({} bytes)", desc.size),
                limit,
            });
        }
        crate::reference::validate_digest(&desc.digest).map_err(|reason| Error::Unsupported {
            what: format!("digest of {what}"),
            value: reason,
        })?;
        let path = format!("blobs/{}", desc.digest);
        let mut resp = self.send(image, Method::GET, Target::Repo(&path), &[], None)?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                    what: format!("{what} {}", desc.digest),
                })
            }
            _ => return Err(self.unexpected(image, "GET", &path, resp)),
        }
        // ureq's limit fails a read at the limit even at end of body: allow one byte more and
        // compare the length instead.
        let bytes = match resp
            .body_mut()
            .with_config()
            .limit(desc.size.saturating_add(1))
            .read_to_vec()
        {
            Ok(b) if b.len() as u64 <= desc.size => b,
            Ok(_) | Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(Error::DigestMismatch {
                    what: what.to_string(),
                    expected: format!("{} ({} bytes)", desc.digest, desc.size),
                    actual: format!("a blob of more than {} bytes", desc.size),
                })
            }
            Err(e) => return Err(transport(image, e)),
        };
        if bytes.len() as u64 != desc.size {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: format!("{} ({} bytes)", desc.digest, desc.size),
                actual: format!("{} ({} bytes)", sha256_digest(&bytes), bytes.len()),
            });
        }
        verify_digest(what, &desc.digest, &bytes)?;
        Ok(bytes)
    }

    /// Whether the repository already has the blob.
    pub fn blob_exists(&self, image: &ImageRef, digest: &str) -> Result<bool> {
        let path = format!("blobs/{digest}");
        let resp = self.send(image, Method::HEAD, Target::Repo(&path), &[], None)?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(image, "HEAD", &path, resp)),
        }
    }

    /// Uploads `bytes` unless the repository has them (`POST` an upload, `PUT` it with the
    /// digest). Returns the blob's digest.
    pub fn push_blob(&self, image: &ImageRef, bytes: &[u8]) -> Result<String> {
        let digest = sha256_digest(bytes);
        if self.blob_exists(image, &digest)? {
            return Ok(digest);
        }
        let resp = self.send(
            image,
            Method::POST,
            Target::Repo("blobs/uploads/"),
            &[],
            Some(&[]),
        )?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected(image, "POST", "blobs/uploads/", resp));
        }
        let location = header(&resp, "location").ok_or_else(|| Error::Registry {
            registry: image.registry.clone(),
            method: "POST".into(),
            path: "blobs/uploads/".into(),
            status: 202,
            message: "no Location header for the upload".into(),
        })?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={}", digest.replace(':', "%3A"));
        let resp = self.send(
            image,
            Method::PUT,
            Target::Url(&url),
            &[("content-type", "application/octet-stream")],
            Some(bytes),
        )?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.unexpected(image, "PUT", "blobs/uploads/<upload>", resp));
        }
        Ok(digest)
    }

    /// Stores a manifest at `reference` (a tag or its digest) with its media type. Returns its
    /// digest.
    pub fn put_manifest(
        &self,
        image: &ImageRef,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String> {
        let path = format!("manifests/{reference}");
        let resp = self.send(
            image,
            Method::PUT,
            Target::Repo(&path),
            &[("content-type", media_type)],
            Some(bytes),
        )?;
        if resp.status() != StatusCode::CREATED && resp.status() != StatusCode::OK {
            return Err(self.unexpected(image, "PUT", &path, resp));
        }
        let digest = sha256_digest(bytes);
        if let Some(h) = header(&resp, "docker-content-digest").filter(|h| h.starts_with("sha256:"))
        {
            if h != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest pushed to {image}"),
                    expected: digest,
                    actual: h,
                });
            }
        }
        Ok(digest)
    }

    /// Sends one request, authenticating as the registry asks. A 401 is answered once: with
    /// Basic credentials, or with a Bearer token from the challenge's realm.
    fn send(
        &self,
        image: &ImageRef,
        method: Method,
        target: Target<'_>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response<Body>> {
        let key = image.repository_name();
        let mut authorization = lock(&self.auth).get(&key).cloned();
        let creds = self.credentials(image)?;
        for attempt in 0..2 {
            let resp = self.send_once(
                image,
                &method,
                &target,
                headers,
                body,
                authorization.as_deref(),
            )?;
            let status = resp.status();
            if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                if let Some(a) = authorization {
                    lock(&self.auth).insert(key, a);
                }
                return Ok(resp);
            }
            let challenge = header(&resp, "www-authenticate");
            let message = error_message(resp);
            let challenge = match challenge {
                Some(c) if attempt == 0 && status == StatusCode::UNAUTHORIZED => c,
                _ => return Err(denied(image, creds.as_ref(), &method, message)),
            };
            authorization = Some(self.authenticate(image, &method, &challenge, creds.as_ref())?);
        }
        Err(denied(image, creds.as_ref(), &method, String::new()))
    }

    fn credentials(&self, image: &ImageRef) -> Result<Option<RegistryAuth>> {
        let key = image.repository_name();
        if let Some(c) = lock(&self.creds).get(&key) {
            return Ok(c.clone());
        }
        let c = self.cfg.credentials_for(image)?;
        lock(&self.creds).insert(key, c.clone());
        Ok(c)
    }

    /// Answers a `WWW-Authenticate` challenge with an Authorization header value.
    fn authenticate(
        &self,
        image: &ImageRef,
        method: &Method,
        challenge: &str,
        creds: Option<&RegistryAuth>,
    ) -> Result<String> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => match creds {
                Some(c) => Ok(c.basic_header()),
                None => Err(Error::AuthRequired {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                }),
            },
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| Error::Registry {
                    registry: image.registry.clone(),
                    method: method.to_string(),
                    path: image.repository.clone(),
                    status: 401,
                    message: format!("Bearer challenge without a realm: {challenge}"),
                })?;
                let actions = if *method == Method::GET || *method == Method::HEAD {
                    "pull"
                } else {
                    "pull,push"
                };
                let default_scope = format!("repository:{}:{actions}", image.repository);
                let scope = params.get("scope").cloned().unwrap_or(default_scope);
                let token = self.fetch_token(image, realm, params.get("service"), &scope, creds)?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(Error::Unsupported {
                what: format!("authentication scheme of {}", image.registry),
                value: other.to_string(),
            }),
        }
    }

    fn fetch_token(
        &self,
        image: &ImageRef,
        realm: &str,
        service: Option<&String>,
        scope: &str,
        creds: Option<&RegistryAuth>,
    ) -> Result<String> {
        let insecure = self.cfg.is_insecure(image);
        if realm.starts_with("http://") && !insecure {
            return Err(Error::Insecure {
                registry: image.registry.clone(),
                reason: format!("its token service {realm} is plain HTTP; mark the registry insecure to allow it"),
            });
        }
        if !realm.starts_with("https://") && !realm.starts_with("http://") {
            return Err(Error::Unsupported {
                what: format!("token realm of {}", image.registry),
                value: realm.to_string(),
            });
        }
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(service) = service {
            url.push_str(&format!("{sep}service={}", query_escape(service)));
            sep = '&';
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            url.push_str(&format!("{sep}scope={}", query_escape(s)));
            sep = '&';
        }
        let mut req = http::Request::get(&url).header("accept", "application/json");
        if let Some(c) = creds {
            req = req.header("authorization", c.basic_header());
        }
        let req = req.body(()).map_err(|e| Error::Transport {
            registry: image.registry.clone(),
            reason: format!("token request: {e}"),
        })?;
        let agent = if insecure {
            self.insecure_agent()
        } else {
            &self.secure
        };
        let mut resp = agent.run(req).map_err(|e| transport(image, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let message = error_message(resp);
            return Err(match creds {
                Some(_) => Error::AuthRejected {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                    action: format!("token for {scope}"),
                    reason: message,
                },
                None => Error::AuthRequired {
                    registry: image.registry.clone(),
                    repository: image.repository.clone(),
                },
            });
        }
        if status != StatusCode::OK {
            let message = error_message(resp);
            return Err(Error::Registry {
                registry: image.registry.clone(),
                method: "GET".into(),
                path: realm.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        let body = read_body(&mut resp, 1 << 20, image, "token response")?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Error::json("token response", e))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| Error::json("token response", "no token or access_token field"))
    }

    fn send_once(
        &self,
        image: &ImageRef,
        method: &Method,
        target: &Target<'_>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> Result<Response<Body>> {
        let host = image.api_host().to_string();
        let run = |scheme: Scheme| -> std::result::Result<Response<Body>, ureq::Error> {
            let url = match target {
                Target::Repo(rest) => format!(
                    "{}://{host}/v2/{}/{rest}",
                    scheme.as_str(),
                    image.repository
                ),
                Target::Url(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    u.to_string()
                }
                Target::Url(u) => format!("{}://{host}{u}", scheme.as_str()),
            };
            // Credentials go only to the registry itself, not to another host an upload
            // Location may name.
            let same_host = url
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next() == Some(host.as_str()))
                .unwrap_or(false);
            let mut req = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = authorization.filter(|_| same_host) {
                req = req.header("authorization", a);
            }
            let agent = if self.cfg.is_insecure(image) {
                self.insecure_agent()
            } else {
                &self.secure
            };
            match body {
                Some(b) => agent.run(req.body(b).map_err(ureq::Error::from)?),
                None => agent.run(req.body(()).map_err(ureq::Error::from)?),
            }
        };
        if !self.cfg.is_insecure(image) {
            if matches!(target, Target::Url(u) if u.starts_with("http://")) {
                return Err(Error::Insecure {
                    registry: image.registry.clone(),
                    reason: "it redirected an upload to plain HTTP".into(),
                });
            }
            return run(Scheme::Https).map_err(|e| transport(image, e));
        }
        // Insecure registries: HTTPS without verification first, then plain HTTP, as podman
        // does; remember what worked.
        let known = lock(&self.schemes).get(&host).copied();
        if let Some(scheme) = known {
            return run(scheme).map_err(|e| transport(image, e));
        }
        match run(Scheme::Https) {
            Ok(r) => {
                lock(&self.schemes).insert(host, Scheme::Https);
                Ok(r)
            }
            Err(https_err) => match run(Scheme::Http) {
                Ok(r) => {
                    lock(&self.schemes).insert(host, Scheme::Http);
                    Ok(r)
                }
                Err(http_err) => Err(Error::Transport {
                    registry: image.registry.clone(),
                    reason: format!("https: {https_err}; http: {http_err}"),
                }),
            },
        }
    }

    fn unexpected(
        &self,
        image: &ImageRef,
        method: &str,
        path: &str,
        resp: Response<Body>,
    ) -> Error {
        let status = resp.status().as_u16();
        Error::Registry {
            registry: image.registry.clone(),
            method: method.to_string(),
            path: path.to_string(),
            status,
            message: error_message(resp),
        }
    }
}

fn agent(cfg: &ClientConfig, tls: TlsConfig) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(cfg.connect_timeout))
        .timeout_global(Some(cfg.request_timeout))
        .user_agent(cfg.user_agent.as_str())
        .max_redirects(5)
        .build()
        .new_agent()
}

fn parse_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map of cached tokens is still a valid map.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn transport(image: &ImageRef, e: ureq::Error) -> Error {
    Error::Transport {
        registry: image.registry.clone(),
        reason: e.to_string(),
    }
}

fn read_body(
    resp: &mut Response<Body>,
    limit: u64,
    image: &ImageRef,
    what: &str,
) -> Result<Vec<u8>> {
    match resp
        .body_mut()
        .with_config()
        .limit(limit.saturating_add(1))
        .read_to_vec()
    {
        Ok(b) if b.len() as u64 <= limit => Ok(b),
        Ok(_) | Err(ureq::Error::BodyExceedsLimit(_)) => Err(Error::TooLarge {
            what: what.to_string(),
            limit,
        }),
        Err(e) => Err(transport(image, e)),
    }
}

/// The registry's error document (`{"errors":[{"code","message"}]}`) as one line, or the body's
/// start.
fn error_message(mut resp: Response<Body>) -> String {
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                    format!("{code}: {msg}")
                })
                .collect();
            if !parts.is_empty() {
                return parts.join("; ");
            }
        }
        if let Some(d) = v
            .get("details")
            .or_else(|| v.get("error"))
            .and_then(|d| d.as_str())
        {
            return d.to_string();
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        resp.status()
            .canonical_reason()
            .unwrap_or("no details")
            .to_string()
    } else {
        text.chars().take(300).collect()
    }
}

fn denied(
    image: &ImageRef,
    creds: Option<&RegistryAuth>,
    method: &Method,
    message: String,
) -> Error {
    match creds {
        None => Error::AuthRequired {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
        },
        Some(_) => Error::AuthRejected {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            action: if *method == Method::GET || *method == Method::HEAD {
                "pull".into()
            } else {
                "push".into()
            },
            reason: message,
        },
    }
}

/// `Bearer realm="https://auth",service="registry",scope="repository:a:pull"` → ("bearer",
/// {realm, service, scope}).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_ascii_lowercase(), params)
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "basic-realm"));
        let (_, p) = parse_challenge("Bearer realm=https://x/token, service=x");
        assert_eq!(
            (p["realm"].as_str(), p["service"].as_str()),
            ("https://x/token", "x")
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
