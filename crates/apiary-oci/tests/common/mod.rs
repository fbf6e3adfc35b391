//! Test harness: a real registry (Debian's `docker-registry`) on 127.0.0.1 with a temporary
//! config and storage, optional htpasswd or token authentication and TLS, and a token server
//! that issues ES256 JWTs the registry verifies.
#![allow(dead_code)]

use apiary_oci::manifest::{Descriptor, ImageConfig, ImageManifest, OCI_CONFIG, OCI_MANIFEST};
use apiary_oci::{ClientConfig, ImageRef, RegistryAuth, RegistryClient};
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "apiary-oci-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub enum Auth {
    None,
    Htpasswd {
        user: String,
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`].
    Token(Arc<TokenServer>),
}

/// PEM files for a TLS registry.
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct Registry {
    pub addr: String,
    pub dir: TempDir,
    process: Option<apiary_fixtures::RegistryProcess>,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, None)
    }

    pub fn start_with(auth: Auth, tls: Option<Tls>) -> Registry {
        let dir = TempDir::new("registry");
        // TLS and auth go after the http section the shared harness writes.
        let mut extra = String::new();
        if let Some(tls) = &tls {
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
        }
        match &auth {
            Auth::None => {}
            Auth::Htpasswd { user, password } => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .expect("bcrypt")
                    .format_for_version(bcrypt::Version::TwoY);
                let path = dir.join("htpasswd");
                std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
                extra.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: apiary-test\n    path: {}\n",
                    path.display()
                ));
            }
            Auth::Token(ts) => {
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    ts.realm(),
                    TokenServer::SERVICE,
                    TokenServer::ISSUER,
                    ts.cert_pem.display()
                ));
            }
        }
        let process = apiary_fixtures::RegistryProcess::start(dir.path(), &|_| extra.clone());
        Registry {
            addr: process.addr.clone(),
            dir,
            process: Some(process),
        }
    }

    pub fn image(&self, name: &str) -> ImageRef {
        format!("{}/{name}", self.addr)
            .parse()
            .expect("image reference")
    }

    /// A client config that may use plain HTTP to this registry.
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            insecure_registries: vec![self.addr.clone()],
            ..ClientConfig::default()
        }
    }

    pub fn config_with(&self, user: &str, password: &str) -> ClientConfig {
        ClientConfig {
            credentials: Some(RegistryAuth::new(user, password)),
            ..self.config()
        }
    }

    /// The file the registry stores a blob in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.join("storage").join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    pub fn stop(&mut self) {
        self.process.take();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The compiled fixture object `name` (from tests/fixtures/bpf).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = apiary_fixtures::object(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl genpkey` P-256 key (PKCS#8 PEM) and its public key; returns (private, public).
#[allow(unused_imports)]
pub use apiary_fixtures::openssl_keypair;

/// A CA and a server certificate for 127.0.0.1 signed by it.
pub fn tls_files(dir: &Path) -> (Tls, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=apiary test CA",
            "-keyout",
        ])
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    (Tls { cert, key }, ca)
}

/// Pushes a hand-made image (one layer, given config labels) and returns its manifest digest.
pub fn push_raw(
    cfg: &ClientConfig,
    image: &ImageRef,
    layer: &[u8],
    layer_media: &str,
    labels: &[(&str, &str)],
) -> String {
    let client = RegistryClient::new(cfg).expect("client");
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..ImageConfig::default()
    };
    config.config.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let config = serde_json::to_vec(&config).unwrap();
    client.push_blob(image, layer).expect("push layer");
    client.push_blob(image, &config).expect("push config");
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::for_bytes(OCI_CONFIG, &config),
        layers: vec![Descriptor::for_bytes(layer_media, layer)],
        annotations: None,
    };
    let manifest = serde_json::to_vec(&manifest).unwrap();
    client
        .put_manifest(image, image.reference(), &manifest, OCI_MANIFEST)
        .expect("push manifest")
}

pub const MINIMAL_LABELS: &[(&str, &str)] = &[
    ("io.ebpf.programs", r#"{"count_getppid":"tracepoint"}"#),
    ("io.ebpf.maps", r#"{"counts":"array"}"#),
];

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A tar entry with a raw name (bypassing the tar crate's path checks), type and content.
pub fn tar_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

pub fn tar_end(out: &mut Vec<u8>) {
    out.extend(std::iter::repeat_n(0u8, 1024));
}

/// A token service in the style registries use: `GET /token?service=&scope=` with optional
/// Basic credentials, answering with an ES256 JWT the registry trusts through its certificate.
pub struct TokenServer {
    pub addr: String,
    pub cert_pem: PathBuf,
    user: String,
    password: String,
    signing_key: p256::ecdsa::SigningKey,
    cert_der_b64: String,
    stop: AtomicBool,
    pub requests: AtomicUsize,
    _dir: TempDir,
}

impl TokenServer {
    pub const SERVICE: &'static str = "apiary-test-registry";
    pub const ISSUER: &'static str = "apiary-test-issuer";

    pub fn start(user: &str, password: &str) -> Arc<TokenServer> {
        use p256::pkcs8::DecodePrivateKey;
        let dir = TempDir::new("token");
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=apiary token issuer",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        let signing_key =
            p256::ecdsa::SigningKey::from_pkcs8_pem(&std::fs::read_to_string(&key).unwrap())
                .expect("token key");
        let pem = std::fs::read_to_string(&cert).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Arc::new(TokenServer {
            addr: listener.local_addr().unwrap().to_string(),
            cert_pem: cert,
            user: user.into(),
            password: password.into(),
            signing_key,
            cert_der_b64: b64,
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            _dir: dir,
        });
        // The thread holds a weak reference: dropping the last Arc stops it.
        let weak = Arc::downgrade(&server);
        std::thread::spawn(move || loop {
            let Some(s) = weak.upgrade() else { break };
            if s.stop.load(Ordering::Relaxed) {
                break;
            }
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    s.serve(conn);
                }
                Err(_) => {
                    drop(s);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        server
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn serve(&self, mut conn: TcpStream) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        let _ = reader.read_line(&mut request_line);
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or("");
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut scopes = Vec::new();
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("scope=") {
                scopes.push(unescape(v));
            }
        }
        let user = match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
        {
            Some(b64) => {
                let decoded = String::from_utf8(Base64::decode_vec(b64).unwrap_or_default())
                    .unwrap_or_default();
                if decoded != format!("{}:{}", self.user, self.password) {
                    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    return;
                }
                Some(self.user.clone())
            }
            None => None,
        };
        // Anonymous callers get a token that grants nothing, as registries do for private
        // repositories.
        let access: Vec<serde_json::Value> = match user {
            Some(_) => scopes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect(),
            None => Vec::new(),
        };
        let token = self.jwt(user.as_deref().unwrap_or(""), access);
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
            .to_string();
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    }

    fn jwt(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        use p256::ecdsa::signature::Signer;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({
            "iss": Self::ISSUER, "sub": subject, "aud": Self::SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": format!("{now}-{}", self.requests.load(Ordering::Relaxed)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            Base64UrlUnpadded::encode_string(header.to_string().as_bytes()),
            Base64UrlUnpadded::encode_string(claims.to_string().as_bytes())
        );
        let sig: p256::ecdsa::Signature = self.signing_key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            Base64UrlUnpadded::encode_string(&sig.to_bytes())
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
