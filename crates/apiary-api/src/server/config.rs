//! The daemon's settings: command-line flags over a TOML file (`--config`) over defaults. Every
//! flag of `apiary serve` has a key of the same name (dashes become underscores); relative paths
//! in the file are relative to the file.

use super::ServerError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/apiary/apiary.sock";
/// Large enough for any BPF object a client sends, small enough that a runaway client cannot
/// make the daemon buffer gigabytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
pub const DEFAULT_LOG: &str = "info";
/// How long a shutdown waits for in-flight requests before the daemon exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What a flag or the config file may set; unset means "ask the next source".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// The web view (plain HTTP on loopback; with TLS anywhere; see `server::web`).
    pub web: Option<SocketAddr>,
    pub web_tls_cert: Option<PathBuf>,
    pub web_tls_key: Option<PathBuf>,
    /// Browsers with a certificate signed by this CA may read the web view.
    pub web_client_ca: Option<PathBuf>,
    /// A file holding the bearer token that admits a browser to the web view.
    pub web_token_file: Option<PathBuf>,
    pub max_message_size: Option<usize>,
    /// A tracing filter (`info`, `apiary_api=debug`); RUST_LOG overrides it.
    pub log: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// Push the programs' declared map metrics to this OTLP/HTTP collector (base URL).
    pub otlp_endpoint: Option<String>,
    /// How often (`10s`, `1m`); default 10 s.
    #[serde(default, deserialize_with = "duration")]
    pub otlp_interval: Option<Duration>,
}

/// A duration written as people do (`10s`, `1m 30s`).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

pub const DEFAULT_OTLP_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format {other:?}: expected text or json"
            )),
        }
    }
}

/// The web view's address and, unless it is plain HTTP on loopback, its TLS and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    pub addr: SocketAddr,
    pub tls: Option<WebTls>,
}

/// TLS for the web view, and what admits a browser: a client certificate signed by
/// `client_ca`, the token in `token_file`, or either when both are set.
#[derive(Debug, Clone, PartialEq)]
pub struct WebTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// The settings the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// The file the settings came from; the daemon's image settings are read from it too.
    pub config_file: Option<PathBuf>,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub tcp: Option<TcpConfig>,
    pub metrics: Option<SocketAddr>,
    pub web: Option<WebConfig>,
    pub max_message_size: usize,
    pub log: String,
    pub log_format: LogFormat,
    /// Push declared map metrics over OTLP/HTTP (`--otlp-endpoint`).
    pub otlp: Option<apiary::metrics::otlp::OtlpConfig>,
}

impl ServeOptions {
    /// Read a config file. Its `[images]` table (registries, signature policy) belongs to the
    /// manager, which reads the same file (see `apiary::images`).
    pub fn from_file(path: &Path) -> Result<ServeOptions, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::ReadFile {
            path: path.to_path_buf(),
            error: e,
        })?;
        let bad = |reason: String| ServerError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        table.remove("images");
        let mut o: ServeOptions = table
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut o.socket,
            &mut o.tls_cert,
            &mut o.tls_key,
            &mut o.client_ca,
            &mut o.web_tls_cert,
            &mut o.web_tls_key,
            &mut o.web_client_ca,
            &mut o.web_token_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(o)
    }

    /// Each field from `self` (flags) if set, else from `file`.
    pub fn or(self, file: ServeOptions) -> ServeOptions {
        ServeOptions {
            socket: self.socket.or(file.socket),
            socket_group: self.socket_group.or(file.socket_group),
            listen: self.listen.or(file.listen),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            client_ca: self.client_ca.or(file.client_ca),
            metrics: self.metrics.or(file.metrics),
            web: self.web.or(file.web),
            web_tls_cert: self.web_tls_cert.or(file.web_tls_cert),
            web_tls_key: self.web_tls_key.or(file.web_tls_key),
            web_client_ca: self.web_client_ca.or(file.web_client_ca),
            web_token_file: self.web_token_file.or(file.web_token_file),
            max_message_size: self.max_message_size.or(file.max_message_size),
            log: self.log.or(file.log),
            log_format: self.log_format.or(file.log_format),
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
            otlp_interval: self.otlp_interval.or(file.otlp_interval),
        }
    }

    /// Fill in defaults and check that the settings make sense together.
    pub fn resolve(self) -> Result<ServeConfig, ServerError> {
        let invalid = |reason: &str| ServerError::InvalidConfig {
            reason: reason.to_string(),
        };
        let web = self.web_config()?;
        let tcp = match (self.listen, self.tls_cert, self.tls_key, self.client_ca) {
            (Some(listen), Some(cert), Some(key), Some(client_ca)) => Some(TcpConfig { listen, cert, key, client_ca }),
            (Some(_), ..) => {
                return Err(invalid(
                    "--listen needs --tls-cert, --tls-key and --client-ca: the TCP listener serves only clients with a certificate signed by that CA",
                ))
            }
            (None, None, None, None) => None,
            (None, ..) => return Err(invalid("--tls-cert, --tls-key and --client-ca apply to --listen, which is not set")),
        };
        let max_message_size = self.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_size < 1024 {
            return Err(invalid("max_message_size must be at least 1024 bytes"));
        }
        let otlp = match (self.otlp_endpoint, self.otlp_interval) {
            (Some(endpoint), interval) => {
                if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                    return Err(invalid("otlp_endpoint must be an http:// or https:// URL"));
                }
                Some(apiary::metrics::otlp::OtlpConfig {
                    endpoint,
                    interval: interval.unwrap_or(DEFAULT_OTLP_INTERVAL),
                    service: "apiary".into(),
                })
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "--otlp-interval applies to --otlp-endpoint, which is not set",
                ))
            }
            (None, None) => None,
        };
        if otlp.as_ref().is_some_and(|o| o.interval.is_zero()) {
            return Err(invalid("otlp_interval must be more than 0"));
        }
        Ok(ServeConfig {
            config_file: None,
            socket: self.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            socket_group: self.socket_group.filter(|g| !g.is_empty()),
            tcp,
            metrics: self.metrics,
            web,
            max_message_size,
            log: self.log.unwrap_or_else(|| DEFAULT_LOG.to_string()),
            log_format: self.log_format.unwrap_or_default(),
            otlp,
        })
    }
}

impl ServeOptions {
    fn web_config(&self) -> Result<Option<WebConfig>, ServerError> {
        WebFlags {
            web: self.web,
            web_tls_cert: self.web_tls_cert.clone(),
            web_tls_key: self.web_tls_key.clone(),
            web_client_ca: self.web_client_ca.clone(),
            web_token_file: self.web_token_file.clone(),
        }
        .config()
    }
}

/// The web view's flags as given, for every process that serves a view (the daemon, the
/// operator).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebFlags {
    pub web: Option<SocketAddr>,
    pub web_tls_cert: Option<PathBuf>,
    pub web_tls_key: Option<PathBuf>,
    pub web_client_ca: Option<PathBuf>,
    pub web_token_file: Option<PathBuf>,
}

impl WebFlags {
    /// The web view: plain HTTP is for loopback only; any TLS flag (and any other address)
    /// means TLS with a client certificate, a token, or both.
    pub fn config(&self) -> Result<Option<WebConfig>, ServerError> {
        let invalid = |reason: String| ServerError::InvalidConfig { reason };
        let any_tls = self.web_tls_cert.is_some()
            || self.web_tls_key.is_some()
            || self.web_client_ca.is_some()
            || self.web_token_file.is_some();
        let Some(addr) = self.web else {
            if any_tls {
                return Err(invalid(
                    "--web-tls-cert, --web-tls-key, --web-client-ca and --web-token-file apply to --web, which is not set".into(),
                ));
            }
            return Ok(None);
        };
        if !any_tls {
            super::web::check_addr(addr).map_err(|e| invalid(e.to_string()))?;
            return Ok(Some(WebConfig { addr, tls: None }));
        }
        let (Some(cert), Some(key)) = (self.web_tls_cert.clone(), self.web_tls_key.clone()) else {
            return Err(invalid(format!(
                "--web {addr} with TLS needs --web-tls-cert and --web-tls-key (the certificate browsers see)"
            )));
        };
        if self.web_client_ca.is_none() && self.web_token_file.is_none() {
            return Err(invalid(format!(
                "--web {addr} with TLS needs a way to admit browsers: --web-client-ca (client certificates signed by that CA) and/or --web-token-file (a bearer token)"
            )));
        }
        Ok(Some(WebConfig {
            addr,
            tls: Some(WebTls {
                cert,
                key,
                client_ca: self.web_client_ca.clone(),
                token_file: self.web_token_file.clone(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: ServeOptions = toml::from_str(
            r#"
            socket = "/tmp/a.sock"
            socket_group = "apiary"
            metrics = "127.0.0.1:9090"
            log_format = "json"
            "#,
        )
        .unwrap();
        let flags = ServeOptions {
            socket: Some("/tmp/b.sock".into()),
            ..Default::default()
        };
        let c = flags.or(file).resolve().unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/b.sock"));
        assert_eq!(c.socket_group.as_deref(), Some("apiary"));
        assert_eq!(c.metrics, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_message_size, DEFAULT_MAX_MESSAGE_BYTES);
        assert!(c.tcp.is_none());
        let d = ServeOptions::default().resolve().unwrap();
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(d.otlp.is_none());
        let o: ServeOptions =
            toml::from_str("otlp_endpoint = \"http://c:4318\"\notlp_interval = \"1m\"\n").unwrap();
        let otlp = o.resolve().unwrap().otlp.unwrap();
        assert_eq!(otlp.interval, Duration::from_secs(60));
        let o = ServeOptions {
            otlp_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(o
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--otlp-endpoint"));
        assert_eq!(d.log, "info");
    }

    #[test]
    fn tcp_requires_every_tls_file() {
        let o = ServeOptions {
            listen: Some("127.0.0.1:50051".parse().unwrap()),
            ..Default::default()
        };
        assert!(o.resolve().unwrap_err().to_string().contains("--client-ca"));
        let o = ServeOptions {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(o.resolve().unwrap_err().to_string().contains("--listen"));
    }

    #[test]
    fn web_is_plain_on_loopback_and_tls_with_credentials_elsewhere() {
        let web = |addr: &str| ServeOptions {
            web: Some(addr.parse().unwrap()),
            ..Default::default()
        };
        let plain = web("127.0.0.1:8080").resolve().unwrap().web.unwrap();
        assert!(plain.tls.is_none());
        let e = web("0.0.0.0:8080").resolve().unwrap_err().to_string();
        assert!(
            e.contains("loopback") && e.contains("--web-tls-cert"),
            "{e}"
        );
        let e = ServeOptions {
            web_token_file: Some("t".into()),
            ..web("0.0.0.0:8080")
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--web-tls-key"), "{e}");
        let e = ServeOptions {
            web_tls_cert: Some("c.pem".into()),
            web_tls_key: Some("k.pem".into()),
            ..web("0.0.0.0:8080")
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--web-client-ca") && e.contains("--web-token-file"),
            "{e}"
        );
        let tls = ServeOptions {
            web_tls_cert: Some("c.pem".into()),
            web_tls_key: Some("k.pem".into()),
            web_token_file: Some("t".into()),
            ..web("0.0.0.0:8080")
        }
        .resolve()
        .unwrap()
        .web
        .unwrap();
        assert_eq!(tls.tls.unwrap().token_file, Some(PathBuf::from("t")));
        let e = ServeOptions {
            web_token_file: Some("t".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--web, which is not set"), "{e}");
    }

    #[test]
    fn unknown_keys_and_relative_paths() {
        let dir = std::env::temp_dir().join(format!("apiary-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("apiary.toml");
        std::fs::write(&f, "tls_cert = \"certs/server.pem\"\n").unwrap();
        let o = ServeOptions::from_file(&f).unwrap();
        assert_eq!(o.tls_cert, Some(dir.join("certs/server.pem")));
        // The manager's [images] table may share the file.
        std::fs::write(
            &f,
            "socket = \"a.sock\"\n[images]\nsignature_policy = \"require\"\n",
        )
        .unwrap();
        assert_eq!(
            ServeOptions::from_file(&f).unwrap().socket,
            Some(dir.join("a.sock"))
        );
        std::fs::write(&f, "sokcet = \"/x\"\n").unwrap();
        let e = ServeOptions::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("sokcet"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
