//! The daemon: the apiary.v1 service over one `Manager`, on a unix socket (and optionally TCP
//! with mutual TLS), plus the metrics endpoint. Only the daemon needs the privileges to load
//! eBPF; applications ask it through the socket, whose group decides who may.
//!
//! At start it reconciles the kernel with the store and enables the kernel's BPF run-time
//! statistics (for as long as it runs); SIGTERM or SIGINT stop it gracefully: no new
//! connections, in-flight requests finish, watch streams end, the socket file is removed.

mod authority;
pub mod config;
mod http;
mod inflight;
mod limits;
mod listen;
pub mod metrics;
mod service;
pub mod trace;
pub mod web;
pub mod webauth;

pub use config::{LogFormat, ServeConfig, ServeOptions, TcpConfig, WebConfig, WebFlags, WebTls};
pub use service::ApiaryService;

use crate::pb::apiary_server::ApiaryServer;
use apiary::Manager;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A TLS handshake that takes longer than this is dropped, so idle TCP clients cannot hold
/// connections open without ever proving who they are.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last answer is ready at shutdown, how long the connections get to send it.
const ANSWER_FLUSH: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("socket {}: {reason}", path.display())]
    Socket { path: PathBuf, reason: String },
    #[error("group {group:?} does not exist; create it (groupadd {group}) or choose another --socket-group")]
    UnknownGroup { group: String },
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("{reason}")]
    InvalidConfig { reason: String },
    #[error("TLS: {reason}")]
    Tls { reason: String },
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{listener}: {reason}")]
    Serve {
        listener: &'static str,
        reason: String,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Manager(#[from] apiary::Error),
}

/// Run the daemon until SIGTERM or SIGINT: open the manager, reconcile, serve. Meant to own the
/// process: it ignores SIGPIPE, which a binary may have restored to its default (the CLI does,
/// for `apiary list | head`), because a client that hangs up must not kill the daemon.
pub fn run(cfg: ServeConfig, manager_cfg: apiary::Config) -> Result<(), ServerError> {
    run_with(cfg, manager_cfg, |_| async {})
}

/// `run`, with `beside` running next to the server on the same manager until the daemon stops
/// (the node agent runs in the daemon this way, so the node keeps its local socket).
pub fn run_with<F, Fut>(
    cfg: ServeConfig,
    manager_cfg: apiary::Config,
    beside: F,
) -> Result<(), ServerError>
where
    F: FnOnce(Arc<Manager>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe and process-wide.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // glibc gives each thread that allocates its own arena, and each arena keeps what it
    // freed: with a pool of blocking threads that is megabytes of resident memory for a
    // daemon that mostly waits. Two arenas are plenty for its concurrency.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt is thread-safe and only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The async side only moves bytes; the manager's calls run on the blocking pool.
        .worker_threads(2)
        // Mutations serialise on the manager's lock anyway; a few threads keep reads going
        // beside one.
        .max_blocking_threads(4)
        .thread_name("apiary-serve")
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(async move {
        let signal = shutdown_signal().map_err(ServerError::Runtime)?;
        tracing::info!(state_dir = %manager_cfg.state_dir.display(), bpffs = %manager_cfg.bpffs.display(), "starting");
        // Listeners first: a busy socket or a missing group fails before the state is touched.
        // Clients that connect while the daemon reconciles wait in the backlog.
        let listeners = Listeners::bind(&cfg).await?;
        let config_file = cfg.config_file.clone();
        let manager = tokio::task::spawn_blocking(move || -> Result<Manager, ServerError> {
            let state_dir = manager_cfg.state_dir.clone();
            let m = Manager::open(manager_cfg)?;
            // Registries and signature policy from the daemon's own config file, checked now
            // rather than at the first image load. Without one, the manager reads APIARY_CONFIG
            // or /etc/apiary/apiary.toml when it first needs them.
            if let Some(f) = &config_file {
                m.set_image_settings(apiary::images::ImageSettings::load(Some(f), &state_dir)?);
            }
            reconcile(&m);
            // Start-up (the store's schema, a restore) allocated on this thread and freed most
            // of it; give the free pages back instead of keeping them for the daemon's life.
            // SAFETY: malloc_trim only releases free memory of the allocator's own.
            #[cfg(target_env = "gnu")]
            unsafe {
                libc::malloc_trim(0);
            }
            Ok(m)
        })
        .await
        .map_err(|e| ServerError::Serve { listener: "start", reason: e.to_string() })??;
        let manager = Arc::new(manager);
        tokio::spawn(beside(manager.clone()));
        listeners.serve(manager, &cfg, signal).await
    })
}

/// Restore what the store records but the kernel lost, and say what happened.
fn reconcile(m: &Manager) {
    match m.reconcile() {
        Ok(r) if r.is_clean() => tracing::info!(
            programs = r.programs_ok,
            "reconciled: kernel matches the store"
        ),
        Ok(r) => {
            let report = serde_json::to_string(&r).unwrap_or_else(|_| format!("{r:?}"));
            if r.failures.is_empty() {
                tracing::info!(%report, "reconciled: restored what the kernel had lost");
            } else {
                tracing::warn!(%report, "reconciled, with failures");
            }
        }
        // The daemon still serves: every operation reports the same problem clearly.
        Err(e) => tracing::error!(error = %e, "reconcile failed"),
    }
}

/// Resolves on the first SIGTERM or SIGINT. Handlers are installed now, so a signal that
/// arrives while the daemon starts is not lost.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

/// The daemon's bound listeners, not yet serving.
pub struct Listeners {
    unix: tokio::net::UnixListener,
    socket_file: listen::SocketFile,
    tcp: Option<(tokio::net::TcpListener, tonic::transport::Server)>,
    metrics: Option<tokio::net::TcpListener>,
    web: Option<(tokio::net::TcpListener, Option<Arc<webauth::WebAccess>>)>,
}

impl Listeners {
    /// Bind every listener before any serves, so that a bad group, a busy port or a bad
    /// certificate fails the start instead of half of it.
    pub async fn bind(cfg: &ServeConfig) -> Result<Listeners, ServerError> {
        let (unix, socket_file) = listen::bind_unix(&cfg.socket, cfg.socket_group.as_deref())?;
        let tcp = match &cfg.tcp {
            Some(t) => {
                let tls = listen::mtls_config(&t.cert, &t.key, &t.client_ca)?
                    .timeout(TLS_HANDSHAKE_TIMEOUT);
                let server = tonic::transport::Server::builder()
                    .tls_config(tls)
                    .map_err(|e| ServerError::Tls {
                        reason: error_chain(&e),
                    })?;
                let listener = tokio::net::TcpListener::bind(t.listen)
                    .await
                    .map_err(|error| ServerError::Bind {
                        addr: t.listen,
                        error,
                    })?;
                Some((listener, server))
            }
            None => None,
        };
        let metrics = match cfg.metrics {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|error| ServerError::Bind { addr, error })?,
            ),
            None => None,
        };
        let web = match &cfg.web {
            Some(w) => {
                let (listener, access) = web::bind(w)?;
                let listener = tokio::net::TcpListener::from_std(listener).map_err(|error| {
                    ServerError::Bind {
                        addr: w.addr,
                        error,
                    }
                })?;
                Some((listener, access))
            }
            None => None,
        };
        Ok(Listeners {
            unix,
            socket_file,
            tcp,
            metrics,
            web,
        })
    }

    /// The TCP listener's address (useful when it was bound to port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serve until `shutdown` resolves, then stop gracefully.
    pub async fn serve(
        self,
        manager: Arc<Manager>,
        cfg: &ServeConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        serve_on(self, manager, cfg, shutdown).await
    }
}

/// Bind and serve until `shutdown` resolves, then stop gracefully.
pub async fn serve(
    manager: Arc<Manager>,
    cfg: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Listeners::bind(cfg)
        .await?
        .serve(manager, cfg, shutdown)
        .await
}

async fn serve_on(
    listeners: Listeners,
    manager: Arc<Manager>,
    cfg: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Listeners {
        unix: unix_listener,
        socket_file,
        tcp,
        metrics: metrics_listener,
        web: web_listener,
    } = listeners;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Holding this fd keeps the kernel counting run time and run count of every program; the
    // kernel stops when the last holder exits, so a crashed daemon leaves no overhead behind.
    // (kernel.bpf_stats_enabled does not show it: that sysctl reports its own setting only.)
    let stats = match apiary::kernel::sys::enable_stats() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::warn!(error = %e, "cannot enable BPF run-time statistics; run counts stay 0");
            None
        }
    };
    let stats_on = stats.is_some();

    let inflight = inflight::InFlight::default();
    let svc = inflight::Tracked {
        inner: limits::SizeLimitIsResourceExhausted(
            ApiaryServer::new(ApiaryService::new(
                manager.clone(),
                stop_rx.clone(),
                stats_on,
            ))
            .max_decoding_message_size(cfg.max_message_size)
            .max_encoding_message_size(cfg.max_message_size),
        ),
        inflight: inflight.clone(),
    };
    let tracer = inflight::Tracked {
        inner: crate::pb::tracer_server::TracerServer::new(trace::TracerService::new(
            stop_rx.clone(),
            inflight.clone(),
            manager.clone(),
        ))
        .max_decoding_message_size(cfg.max_message_size),
        inflight: inflight.clone(),
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move { until_stopped(&mut rx).await };

    let mut tasks = tokio::task::JoinSet::new();
    // Stock clients of other languages send an :authority h2 refuses; see `authority`.
    let unix_incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnixListenerStream::new(unix_listener),
        |conn| conn.map(authority::AuthorityRewrite::new),
    );
    {
        let svc = svc.clone();
        let tracer = tracer.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(tracer)
                .serve_with_incoming_shutdown(unix_incoming, stop)
                .await
                .map_err(|e| ServerError::Serve {
                    listener: "unix socket",
                    reason: e.to_string(),
                })
        });
    }
    tracing::info!(socket = %cfg.socket.display(), group = cfg.socket_group.as_deref().unwrap_or("-"), "serving on the unix socket");
    if let Some((listener, builder)) = tcp {
        let addr = listener.local_addr().ok();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stop = stopped(stop_rx.clone());
        let svc = svc.clone();
        tasks.spawn(async move {
            let mut builder = builder;
            builder
                .add_service(svc)
                .add_service(tracer)
                .serve_with_incoming_shutdown(incoming, stop)
                .await
                .map_err(|e| ServerError::Serve {
                    listener: "tcp",
                    reason: e.to_string(),
                })
        });
        tracing::info!(listen = ?addr, "serving on TCP with mutual TLS");
    }
    if let Some(listener) = metrics_listener {
        let addr = listener.local_addr().ok();
        let (m, stop) = (manager.clone(), stop_rx.clone());
        tasks.spawn(async move {
            metrics::serve(listener, m, stop, stats_on).await;
            Ok(())
        });
        tracing::info!(metrics = ?addr, "serving metrics at /metrics");
    }
    // OTLP push of the programs' declared map metrics (`serve --otlp-endpoint`): its own thread,
    // so a slow collector never holds up the runtime.
    let otlp = cfg.otlp.clone().map(|o| {
        tracing::info!(endpoint = %o.endpoint, interval = ?o.interval, "pushing declared map metrics over OTLP/HTTP");
        let m = manager.clone();
        apiary::metrics::otlp::Exporter::start(
            o,
            Box::new(move || match m.list_programs(false, &Default::default()) {
                Ok(p) => metrics::declared(&m, &p, &[]).0,
                Err(_) => Vec::new(),
            }),
        )
    });
    if let Some((listener, access)) = web_listener {
        let addr = listener.local_addr().ok();
        let site = Arc::new(web::HostSite {
            api: manager.clone() as Arc<dyn apiary::Api>,
            stats_on,
        });
        let stop = stop_rx.clone();
        tasks.spawn(async move {
            web::serve(listener, site, stop, access).await;
            Ok(())
        });
        // Bound to port 0, the address is found here.
        tracing::info!(web = ?addr, "serving the web view");
    }

    // A listener that fails on its own (rare: the accept loop survives per-connection errors)
    // stops the daemon as a signal would.
    let mut failure = None;
    tokio::select! {
        _ = shutdown => {}
        Some(r) = tasks.join_next() => {
            failure = flatten(r).err();
        }
    }
    let _ = stop_tx.send(true);
    // The listeners stop accepting at once and watch streams end. Then wait until every request
    // in flight has its answer (plus a moment to write it), or every connection has closed,
    // whichever is first; connections still open after that are idle and are dropped.
    let drained = tokio::time::timeout(config::SHUTDOWN_GRACE, async {
        let all_closed = async {
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = flatten(r) {
                    failure.get_or_insert(e);
                }
            }
        };
        let answered = async {
            // A request that arrives on an open connection while the last answers are written
            // is still served.
            loop {
                inflight.idle().await;
                tokio::time::sleep(ANSWER_FLUSH).await;
                if inflight.count() == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = all_closed => {}
            _ = answered => {}
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?config::SHUTDOWN_GRACE, "requests still running after the grace period; exiting anyway");
    }
    tasks.abort_all();
    if let Some(e) = otlp {
        // One last push (bounded by the exporter's timeouts and retries).
        let _ = tokio::task::spawn_blocking(move || e.finish()).await;
    }
    drop(socket_file);
    drop(stats);
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolves once the daemon is stopping (or its stop sender is gone).
pub(crate) async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = rx.wait_for(|stop| *stop).await;
}

fn flatten(r: Result<Result<(), ServerError>, tokio::task::JoinError>) -> Result<(), ServerError> {
    r.map_err(|e| ServerError::Serve {
        listener: "task",
        reason: e.to_string(),
    })?
}

/// An error and its sources on one line (tonic's transport errors say little on their own).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}
