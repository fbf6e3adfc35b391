//! The daemon's front door in the binary: `apiary serve` (flags and config file → settings,
//! logging, then apiary_api's server) and `--endpoint` (the client flags → a `RemoteApi`).

use anyhow::{Context, Result};
use apiary_api::server::{LogFormat, ServeOptions};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

// The web view's flags (`apiary serve` and `apiary operator`).
#[derive(Args, Debug, Clone, Default)]
pub struct WebArgs {
    /// Serve the web view at ADDR: plain HTTP on a loopback address (e.g. 127.0.0.1:8080);
    /// anywhere else HTTPS with --web-tls-cert/--web-tls-key and --web-client-ca and/or
    /// --web-token-file.
    #[arg(long)]
    pub web: Option<SocketAddr>,
    /// The web view's TLS certificate (PEM): serves it over HTTPS.
    #[arg(long)]
    pub web_tls_cert: Option<PathBuf>,
    /// The web view's TLS private key (PEM).
    #[arg(long)]
    pub web_tls_key: Option<PathBuf>,
    /// Browsers with a certificate signed by this CA (PEM) may read the web view.
    #[arg(long)]
    pub web_client_ca: Option<PathBuf>,
    /// A file holding a token (16+ characters) that admits a browser: open /login?token=TOKEN
    /// once, or send `Authorization: Bearer TOKEN`.
    #[arg(long)]
    pub web_token_file: Option<PathBuf>,
}

impl WebArgs {
    pub fn flags(self) -> apiary_api::server::WebFlags {
        apiary_api::server::WebFlags {
            web: self.web,
            web_tls_cert: self.web_tls_cert,
            web_tls_key: self.web_tls_key,
            web_client_ca: self.web_client_ca,
            web_token_file: self.web_token_file,
        }
    }
}

// `apiary serve`. Every flag can also be set in the --config file (same name, `_` for `-`).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of these settings; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The unix socket to serve on (default /run/apiary/apiary.sock; mode 0660).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket: its members may use the daemon (default: root's only).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Also serve on TCP, with mutual TLS (needs --tls-cert, --tls-key and --client-ca).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The daemon's TLS certificate (PEM) for --listen.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The daemon's TLS private key (PEM) for --listen.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Only clients with a certificate signed by this CA (PEM) may connect over TCP.
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9090).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub web: WebArgs,
    /// Largest request or answer in bytes (default 64 MiB).
    #[arg(long)]
    pub max_message_size: Option<usize>,
    /// Log filter, e.g. info or apiary_api=debug (default info; RUST_LOG overrides it).
    #[arg(long)]
    pub log: Option<String>,
    /// Log lines as text or json (default text).
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// Push the programs' declared map metrics to this OTLP/HTTP collector, e.g.
    /// http://127.0.0.1:4318 (protobuf to URL/v1/metrics).
    #[arg(long, value_name = "URL", value_parser = crate::args::parse_otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// How often they are pushed (default 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub otlp_interval: Option<std::time::Duration>,
}

/// Global flags for talking to a daemon.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Send commands to a daemon (unix:///run/apiary/apiary.sock or https://HOST:PORT) instead
    /// of running them in this process.
    #[arg(long, global = true, env = "APIARY_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Client certificate (PEM) for an https:// endpoint.
    #[arg(long, global = true, env = "APIARY_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Client private key (PEM) for an https:// endpoint.
    #[arg(long, global = true, env = "APIARY_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// The CA (PEM) that signed the daemon's certificate, for an https:// endpoint.
    #[arg(long, global = true, env = "APIARY_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
}

impl ClientArgs {
    pub fn connect(&self, endpoint: &str) -> Result<apiary_api::RemoteApi> {
        let tls = apiary_api::ClientTls {
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
            ca: self.server_ca.clone(),
        };
        Ok(apiary_api::RemoteApi::connect(endpoint, &tls)?)
    }
}

pub fn serve(a: ServeArgs, state_dir: PathBuf, bpffs: PathBuf) -> Result<()> {
    serve_with(a, state_dir, bpffs, |_| async {})
}

/// `apiary serve`, with `beside` running on the same manager (the node agent).
pub fn serve_with<F, Fut>(a: ServeArgs, state_dir: PathBuf, bpffs: PathBuf, beside: F) -> Result<()>
where
    F: FnOnce(std::sync::Arc<apiary::Manager>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let file = match &a.config {
        Some(p) => ServeOptions::from_file(p)?,
        None => ServeOptions::default(),
    };
    let flags = ServeOptions {
        socket: a.socket,
        socket_group: a.socket_group,
        listen: a.listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        client_ca: a.client_ca,
        metrics: a.metrics,
        web: a.web.web,
        web_tls_cert: a.web.web_tls_cert,
        web_tls_key: a.web.web_tls_key,
        web_client_ca: a.web.web_client_ca,
        web_token_file: a.web.web_token_file,
        max_message_size: a.max_message_size,
        log: a.log,
        log_format: a.log_format,
        otlp_endpoint: a.otlp_endpoint,
        otlp_interval: a.otlp_interval,
    };
    let mut cfg = flags.or(file).resolve()?;
    cfg.config_file = a.config;
    init_logging(&cfg.log, cfg.log_format)?;
    // Objects come from clients: they are opened and loaded in a loader process (this binary
    // again), so that one that crashes libbpf cannot take the daemon down.
    let loader = apiary_kernel::Loader::worker(apiary_kernel::WorkerCommand::this_binary());
    let manager = apiary::Config {
        state_dir,
        bpffs,
        loader,
    };
    apiary_api::server::run_with(cfg, manager, beside)?;
    Ok(())
}

pub(crate) fn init_logging(filter: &str, format: LogFormat) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => {
            EnvFilter::try_new(&f).with_context(|| format!("RUST_LOG={f}"))?
        }
        _ => {
            EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?
        }
    };
    // Colours only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
