//! Who may read the web view when it is served beyond loopback: TLS always, and then a client
//! certificate signed by `--web-client-ca` (verified by rustls during the handshake) or the
//! bearer token of `--web-token-file` — in an `Authorization: Bearer` header (scripts), or in a
//! cookie that `GET /login?token=...` sets (browsers, which cannot add a header to a page load).

use super::config::WebTls;
use super::ServerError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// The cookie `/login` sets. `__Host-` makes browsers keep it for this host and path `/` only,
/// and only over TLS.
pub const COOKIE: &str = "__Host-apiary-web";
/// A token shorter than this is refused at start: it could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The web view's TLS and credentials, checked when the daemon starts.
pub struct WebAccess {
    pub tls: tokio_rustls::TlsAcceptor,
    token: Option<String>,
}

impl WebAccess {
    pub fn new(cfg: &WebTls) -> Result<WebAccess, ServerError> {
        let tls_err = |path: &Path, what: &str, e: &dyn std::fmt::Display| ServerError::Tls {
            reason: format!("{}: {what}: {e}", path.display()),
        };
        let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, ServerError> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_err(path, "cannot read PEM certificates", &e))?;
            if certs.is_empty() {
                return Err(tls_err(path, "no PEM CERTIFICATE in it", &"empty"));
            }
            Ok(certs)
        };
        let chain = certs(&cfg.cert)?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .map_err(|e| tls_err(&cfg.key, "cannot read a PEM private key", &e))?;
        let token = match &cfg.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Tls {
                reason: e.to_string(),
            })?;
        let builder =
            match &cfg.client_ca {
                Some(ca) => {
                    let mut roots = RootCertStore::empty();
                    for c in certs(ca)? {
                        roots
                            .add(c)
                            .map_err(|e| tls_err(ca, "not a usable CA certificate", &e))?;
                    }
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                    // With a token too, a browser without a certificate may still complete the
                    // handshake; it is then asked for the token.
                    let verifier = if token.is_some() {
                        verifier.allow_unauthenticated()
                    } else {
                        verifier
                    };
                    builder.with_client_cert_verifier(verifier.build().map_err(|e| {
                        tls_err(ca, "cannot verify client certificates with it", &e)
                    })?)
                }
                None => builder.with_no_client_auth(),
            };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls_err(&cfg.cert, "certificate and key do not go together", &e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(WebAccess {
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            token,
        })
    }

    /// Whether a request (its head) carries the token, as a bearer header or the cookie.
    pub fn token_in(&self, head: &str) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        headers(head).any(|(name, value)| {
            if name.eq_ignore_ascii_case("authorization") {
                value
                    .strip_prefix("Bearer ")
                    .is_some_and(|v| same(v.trim(), token))
            } else if name.eq_ignore_ascii_case("cookie") {
                value.split(';').any(|c| {
                    c.trim()
                        .strip_prefix(COOKIE)
                        .and_then(|rest| rest.strip_prefix('='))
                        .is_some_and(|v| same(v, token))
                })
            } else {
                false
            }
        })
    }

    /// Whether `query` (of `/login?...`) gives the token.
    pub fn token_in_query(&self, query: &str) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .any(|v| same(&percent_decode(v), token))
    }

    /// The Set-Cookie line that keeps a browser logged in (no expiry: until it closes).
    pub fn cookie_header(&self) -> String {
        let token = self.token.as_deref().unwrap_or_default();
        format!("Set-Cookie: {COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict\r\n")
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }
}

fn read_token(path: &Path) -> Result<String, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServerError::ReadFile {
        path: path.to_path_buf(),
        error: e,
    })?;
    let token = text.trim().to_string();
    let usable = token.len() >= MIN_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !usable {
        return Err(ServerError::InvalidConfig {
            reason: format!(
                "{}: the web token must be at least {MIN_TOKEN_LEN} characters of letters, digits and -._~+/= (e.g. `head -c 24 /dev/urandom | base64`)",
                path.display()
            ),
        });
    }
    Ok(token)
}

/// The header lines of a request head.
fn headers(head: &str) -> impl Iterator<Item = (&str, &str)> {
    head.lines().skip(1).filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim(), v.trim()))
    })
}

/// Equal, in time that does not depend on where they first differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `%XX` escapes decoded (a base64 token's `+`, `/` and `=` arrive escaped from a form or a
/// pasted link); anything malformed is kept as it is, and then simply does not match.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: &str) -> WebAccess {
        // Only the token half is exercised here; the TLS half is tested through a daemon.
        let cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        WebAccess {
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            token: Some(token.to_string()),
        }
    }

    #[test]
    fn the_token_is_read_from_a_header_a_cookie_or_the_login_query() {
        let a = access("s3cret-token-0123456789+/=");
        let req = |h: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{h}\r\n\r\n");
        assert!(a.token_in(&req("Authorization: Bearer s3cret-token-0123456789+/=")));
        assert!(a.token_in(&req(
            "cookie: a=b; __Host-apiary-web=s3cret-token-0123456789+/="
        )));
        assert!(!a.token_in(&req("Authorization: Bearer s3cret-token-0123456789")));
        assert!(!a.token_in(&req("Authorization: Basic s3cret-token-0123456789+/=")));
        assert!(!a.token_in(&req(
            "Cookie: __Host-apiary-webx=s3cret-token-0123456789+/="
        )));
        assert!(!a.token_in("GET / HTTP/1.1\r\n\r\n"));
        assert!(a.token_in_query("x=1&token=s3cret-token-0123456789%2B%2F%3D"));
        assert!(!a.token_in_query("token=s3cret-token-0123456789%2"));
        assert!(!a.token_in_query("token="));
    }

    #[test]
    fn short_or_odd_tokens_are_refused_at_start() {
        let dir = tempfile_dir();
        let f = dir.join("token");
        for (text, ok) in [
            ("short\n", false),
            ("has spaces in the middle of it\n", false),
            ("0123456789abcdefXYZ\n", true),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_token(&f).is_ok(), ok, "{text:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("apiary-webauth-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
