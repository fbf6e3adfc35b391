//! The web view of the host (`apiary serve --web ADDR`): a page that draws what runs where, and
//! the read-only JSON it polls. `GET /` is the page (plain HTML, CSS and JS under
//! `crates/apiary-api/web/`, built into the binary); `GET /api/host` the picture's data;
//! `GET /api/program/ID` what `apiary get program ID` shows; `GET /api/map/ID` a map's decoded
//! entries. Every answer comes from the library's `Api`, the same calls the CLI makes.
//!
//! Plain HTTP is served on loopback only (see `check_addr`), where the Host header must name a
//! loopback host too, so a web site cannot read it through DNS rebinding. Anywhere else it is
//! served with TLS, and only to a browser with a client certificate or the bearer token (see
//! `webauth`).

use super::http;
use super::webauth::WebAccess;
use apiary::chain::ChainView;
use apiary::{Api, LinkView, MapRef, MapView, ProgramView};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Entries of a map the page shows; the answer says when there were more.
pub const MAP_ENTRIES: usize = 100;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const ICON_SVG: &str = include_str!("../../web/icon.svg");
const CLUSTER_HTML: &str = include_str!("../../web/cluster.html");
const CLUSTER_JS: &str = include_str!("../../web/cluster.js");

/// Why a web address is refused.
#[derive(Debug, thiserror::Error)]
pub enum WebAddrError {
    #[error("--web {addr}: plain HTTP is served on loopback addresses only (127.0.0.1, ::1); elsewhere give --web-tls-cert and --web-tls-key with --web-client-ca and/or --web-token-file, or reach a loopback address through an SSH tunnel (ssh -L 8080:127.0.0.1:PORT HOST)")]
    NotLoopback { addr: SocketAddr },
}

/// Plain HTTP is served on loopback addresses only: its answers describe everything the host
/// runs, and without TLS no certificate or token is checked.
pub fn check_addr(addr: SocketAddr) -> Result<(), WebAddrError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(WebAddrError::NotLoopback { addr })
    }
}

/// What a web view answers to `GET path` (after the access checks, which are the same for
/// every view): the host's view here, the cluster's in the operator.
pub trait Site: Send + Sync + 'static {
    fn answer(self: Arc<Self>, path: String) -> Pin<Box<dyn Future<Output = Answer> + Send>>;
}

/// The host's view: the library's `Api`, asked on a blocking thread. `stats_on`: whether the
/// daemon holds the kernel's BPF stats on (run counts are counted).
pub struct HostSite {
    pub api: Arc<dyn Api>,
    pub stats_on: bool,
}

impl Site for HostSite {
    fn answer(self: Arc<Self>, path: String) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || route(&path, self.api.as_ref(), self.stats_on))
                .await
                .unwrap_or_else(|e| Answer::text("500 Internal Server Error", &e.to_string()))
        })
    }
}

/// Bind the web view's listener (non-blocking, for `TcpListener::from_std` in the runtime
/// that serves it) and load its TLS and credentials, so that a busy port or a bad certificate
/// fails the start.
pub fn bind(
    cfg: &super::config::WebConfig,
) -> Result<(std::net::TcpListener, Option<Arc<WebAccess>>), super::ServerError> {
    let access = match &cfg.tls {
        Some(tls) => Some(Arc::new(WebAccess::new(tls)?)),
        None => None,
    };
    let addr = cfg.addr;
    let bind_error = |error| super::ServerError::Bind { addr, error };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok((listener, access))
}

/// Serve `site` on `listener` (from [`bind`]) on the current runtime for as long as the process
/// runs: for a process with no shutdown of its own (the operator). Call within a runtime.
pub fn spawn_forever(
    listener: std::net::TcpListener,
    site: Arc<dyn Site>,
    access: Option<Arc<WebAccess>>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let (keep, stop) = watch::channel(false);
    tokio::spawn(async move {
        let _keep = keep;
        serve(listener, site, stop, access).await;
    });
    Ok(())
}

/// Serve `site` until shutdown. `access`: TLS and credentials, or None for plain HTTP on
/// loopback.
pub async fn serve(
    listener: TcpListener,
    site: Arc<dyn Site>,
    shutdown: watch::Receiver<bool>,
    access: Option<Arc<WebAccess>>,
) {
    http::accept_loop(listener, shutdown, "web", move |stream| {
        let (site, access) = (site.clone(), access.clone());
        async move {
            match access {
                None => handle(stream, site, Caller::Loopback).await,
                Some(access) => {
                    let tls = tokio::time::timeout(TLS_HANDSHAKE, access.tls.accept(stream));
                    let stream = match tls.await {
                        Ok(r) => r?,
                        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                    };
                    // rustls has verified a certificate the browser sent against the CA.
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let caller = if cert {
                        Caller::Certificate
                    } else {
                        Caller::Unproven(access)
                    };
                    handle(stream, site, caller).await
                }
            }
        }
    })
    .await
}

const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(5);

/// What is known of the other end of a connection.
enum Caller {
    /// Plain HTTP on a loopback address: the Host header is checked.
    Loopback,
    /// TLS with a client certificate signed by the web client CA.
    Certificate,
    /// TLS without a certificate: the request must carry the token.
    Unproven(Arc<WebAccess>),
}

/// One answer: status, content type, body, and whether it may be cached.
pub struct Answer {
    pub status: &'static str,
    pub ctype: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(status: &'static str, msg: &str) -> Answer {
        Answer {
            status,
            ctype: "text/plain; charset=utf-8",
            body: format!("{msg}\n").into_bytes(),
        }
    }

    pub fn json(status: &'static str, v: &impl Serialize) -> Answer {
        match serde_json::to_vec(v) {
            Ok(body) => Answer {
                status,
                ctype: "application/json",
                body,
            },
            Err(e) => Answer::text("500 Internal Server Error", &e.to_string()),
        }
    }

    fn error(e: &apiary::Error) -> Answer {
        let status = match e.code() {
            apiary::ErrorCode::NotFound => "404 Not Found",
            apiary::ErrorCode::InvalidArgument => "400 Bad Request",
            _ => "500 Internal Server Error",
        };
        Answer::json(
            status,
            &serde_json::json!({"error": e.to_string(), "code": e.code().name()}),
        )
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    site: Arc<dyn Site>,
    caller: Caller,
) -> std::io::Result<()> {
    let Some(req) = http::read_request(&mut stream).await? else {
        return respond(
            &mut stream,
            &Answer::text("400 Bad Request", "bad request"),
            false,
        )
        .await;
    };
    let head_only = req.head_only();
    if let Caller::Unproven(access) = &caller {
        if req.path == "/login" && req.is_read() {
            return login(&mut stream, access, &req.query).await;
        }
    }
    let answer = if !req.is_read() {
        Answer::text(
            "405 Method Not Allowed",
            "the web view is read-only: GET only",
        )
    } else if matches!(caller, Caller::Loopback) && !host_is_loopback(&req.head) {
        Answer::text(
            "421 Misdirected Request",
            "the web view answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1])",
        )
    } else if matches!(&caller, Caller::Unproven(a) if !a.token_in(&req.head)) {
        let how = match &caller {
            Caller::Unproven(a) if a.has_token() => {
                "open /login?token=TOKEN once (the token of the daemon's --web-token-file), send `Authorization: Bearer TOKEN`, or present a client certificate"
            }
            _ => "present a client certificate signed by the daemon's --web-client-ca",
        };
        Answer::text(
            "401 Unauthorized",
            &format!("the web view needs credentials: {how}"),
        )
    } else {
        site.answer(req.path).await
    };
    respond(&mut stream, &answer, head_only).await
}

/// `GET /login?token=...`: the right token sets the cookie and goes to the page; a wrong one is
/// refused (and says nothing about why).
async fn login<S: AsyncWrite + Unpin>(
    s: &mut S,
    access: &WebAccess,
    query: &str,
) -> std::io::Result<()> {
    if access.token_in_query(query) {
        let extra = format!(
            "{}Location: /\r\nCache-Control: no-store\r\n",
            access.cookie_header()
        );
        http::respond(
            s,
            "303 See Other",
            "text/plain; charset=utf-8",
            &extra,
            b"logged in\n",
            false,
        )
        .await
    } else {
        let a = Answer::text("401 Unauthorized", "wrong or missing token");
        respond(s, &a, false).await
    }
}

/// Whether the Host header names a loopback host. A page of another site that resolves its own
/// name to 127.0.0.1 (DNS rebinding) sends its own name here and is refused.
pub fn host_is_loopback(head: &str) -> bool {
    let Some(host) = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("host").then(|| v.trim())
    }) else {
        // HTTP/1.0 clients may send none; they cannot be a rebinding browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    a: &Answer,
    head_only: bool,
) -> std::io::Result<()> {
    // The page loads only its own script and style; no other site may frame it.
    const HEADERS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
        Referrer-Policy: no-referrer\r\n\
        Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n";
    http::respond(s, a.status, a.ctype, HEADERS, &a.body, head_only).await
}

fn asset(ctype: &'static str, body: &str) -> Answer {
    Answer {
        status: "200 OK",
        ctype,
        body: body.as_bytes().to_vec(),
    }
}

/// The assets both views share (style, icon).
pub fn shared_asset(path: &str) -> Option<Answer> {
    match path {
        "/style.css" => Some(asset("text/css; charset=utf-8", STYLE_CSS)),
        // Browsers ask for /favicon.ico whatever the page says.
        "/icon.svg" | "/favicon.ico" => Some(asset("image/svg+xml", ICON_SVG)),
        _ => None,
    }
}

/// The cluster view's page and script (its JSON comes from the operator: `/api/cluster`).
pub fn cluster_asset(path: &str) -> Option<Answer> {
    match path {
        "/" | "/index.html" => Some(asset("text/html; charset=utf-8", CLUSTER_HTML)),
        "/cluster.js" => Some(asset("text/javascript; charset=utf-8", CLUSTER_JS)),
        _ => shared_asset(path),
    }
}

/// The answer to `GET path`.
pub fn route(path: &str, api: &dyn Api, stats_on: bool) -> Answer {
    if let Some(a) = shared_asset(path) {
        return a;
    }
    match path {
        "/" | "/index.html" => asset("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/api/host" => Answer::json("200 OK", &host_view(api, stats_on)),
        _ => {
            if let Some(id) = path.strip_prefix("/api/program/") {
                match id.parse() {
                    Ok(id) => match api.get_program(id) {
                        Ok(mut d) => {
                            // The sysctl does not show the daemon's stats fd (as in the gRPC
                            // service's GetProgram).
                            d.stats_enabled |= stats_on;
                            Answer::json("200 OK", &d)
                        }
                        Err(e) => Answer::error(&e),
                    },
                    Err(e) => Answer::text("400 Bad Request", &e),
                }
            } else if let Some(id) = path.strip_prefix("/api/map/") {
                match id.parse::<MapRef>() {
                    Ok(m) => match api.dump_map(&m, MAP_ENTRIES) {
                        Ok(d) => Answer::json("200 OK", &d),
                        Err(e) => Answer::error(&e),
                    },
                    Err(e) => Answer::text("400 Bad Request", &e),
                }
            } else {
                Answer::text("404 Not Found", "see /")
            }
        }
    }
}

/// What `/api/host` answers: the host as the page draws it.
#[derive(Debug, Serialize)]
pub struct HostView {
    pub stats_enabled: bool,
    /// Interfaces by network namespace and name, each with its hooks.
    pub interfaces: Vec<InterfaceView>,
    /// Links that are not on an interface, grouped by kind ("tracepoints", "probes", ...), and
    /// programs with no link at all ("not attached").
    pub groups: Vec<GroupView>,
    /// The managed programs by id, with the kernel ids of their maps.
    pub programs: BTreeMap<String, ProgramBrief>,
    pub maps: Vec<MapView>,
    /// What could not be read this time (the rest is still drawn).
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceView {
    pub iface: String,
    pub netns: Option<String>,
    /// In packet order: xdp, tc ingress, tcx ingress, tc egress, tcx egress.
    pub hooks: Vec<HookView>,
}

#[derive(Debug, Serialize)]
pub struct HookView {
    /// "xdp", "tc-ingress", "tcx-egress", ...
    pub hook: String,
    /// Whether apiary's dispatcher runs these programs as one chain.
    pub chain: bool,
    pub mode: Option<String>,
    /// In run order.
    pub programs: Vec<SlotView>,
}

/// One program box: a chain slot or a link of its own.
#[derive(Debug, Serialize)]
pub struct SlotView {
    pub program_id: apiary::core::ProgramId,
    pub link_id: Option<apiary::core::LinkId>,
    pub name: String,
    pub position: Option<usize>,
    pub priority: Option<i64>,
    pub proceed_on: Vec<String>,
    /// Chain slots count their runs and verdicts (since the dispatcher was composed).
    pub runs: Option<u64>,
    pub verdicts: BTreeMap<String, u64>,
    pub attach_point: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupView {
    pub kind: String,
    pub programs: Vec<SlotView>,
}

#[derive(Debug, Serialize)]
pub struct ProgramBrief {
    pub id: Option<apiary::core::ProgramId>,
    pub kernel_id: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub prog_type: String,
    pub links: Vec<apiary::core::LinkId>,
    pub maps: Vec<u32>,
}

/// Build the host view from the manager's lists. A list that fails leaves its part empty and
/// says so in `errors`.
pub fn host_view(api: &dyn Api, stats_on: bool) -> HostView {
    let mut errors = Vec::new();
    let mut take = |what: &str, e: apiary::Error| {
        errors.push(format!("listing {what}: {e}"));
    };
    let chains = api.list_chains().unwrap_or_else(|e| {
        take("chains", e);
        Vec::new()
    });
    let links = api.list_links(None).unwrap_or_else(|e| {
        take("links", e);
        Vec::new()
    });
    let programs = api
        .list_programs(false, &BTreeMap::new())
        .unwrap_or_else(|e| {
            take("programs", e);
            Vec::new()
        });
    let maps = api.list_maps(false).unwrap_or_else(|e| {
        take("maps", e);
        Vec::new()
    });
    let stats_enabled = stats_on || super::metrics::sysctl_stats_enabled();
    let (interfaces, groups) = arrange(&chains, &links, &programs);
    let programs = briefs(&programs, &maps);
    HostView {
        stats_enabled,
        interfaces,
        groups,
        programs,
        maps,
        errors,
    }
}

fn briefs(programs: &[ProgramView], maps: &[MapView]) -> BTreeMap<String, ProgramBrief> {
    programs
        .iter()
        .map(|p| {
            let key =
                p.id.map_or_else(|| format!("k{}", p.kernel_id), |i| i.to_string());
            let brief = ProgramBrief {
                id: p.id,
                kernel_id: p.kernel_id,
                name: p.name.clone(),
                prog_type: p.prog_type.clone(),
                links: p.links.clone(),
                maps: maps
                    .iter()
                    .filter(|m| p.id.is_some_and(|id| m.used_by.contains(&id)))
                    .map(|m| m.kernel_id)
                    .collect(),
            };
            (key, brief)
        })
        .collect()
}

/// Where a hook sorts on its interface: the order a received packet meets them, then egress.
fn hook_rank(hook: &str) -> u8 {
    match hook {
        "xdp" => 0,
        "tc-ingress" => 1,
        "tcx-ingress" => 2,
        "tc-egress" => 3,
        "tcx-egress" => 4,
        _ => 5,
    }
}

/// The family a link's attach type belongs to on the page. The attach type is the `type` tag
/// of the spec's JSON form, which the store keeps stable.
fn family(ty: &str) -> String {
    match ty {
        "tracepoint" | "raw-tracepoint" | "tp-btf" => "tracepoints".into(),
        "kprobe" | "uprobe" | "usdt" | "fentry" | "fexit" => "probes".into(),
        "iter" => "iterators".into(),
        "lsm" => "lsm".into(),
        "perf-event" => "perf events".into(),
        t if t.starts_with("cgroup-") => "cgroups".into(),
        t => t.to_string(),
    }
}

/// Interfaces with their hooks, and everything else by family.
fn arrange(
    chains: &[ChainView],
    links: &[LinkView],
    programs: &[ProgramView],
) -> (Vec<InterfaceView>, Vec<GroupView>) {
    // (netns, iface) -> hook -> (chain?, mode, boxes)
    type Hooks = BTreeMap<String, (bool, Option<String>, Vec<SlotView>)>;
    let mut ifaces: BTreeMap<(Option<String>, String), Hooks> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<SlotView>> = BTreeMap::new();
    for c in chains {
        let hook = match &c.direction {
            Some(d) => format!("{}-{d}", c.kind),
            None => c.kind.clone(),
        };
        let slots = c
            .programs
            .iter()
            .map(|m| SlotView {
                program_id: m.program_id,
                link_id: Some(m.link_id),
                name: m.name.clone(),
                position: Some(m.position),
                priority: Some(i64::from(m.priority)),
                proceed_on: m.proceed_on.clone(),
                runs: Some(m.runs),
                verdicts: m.verdicts.clone(),
                attach_point: None,
            })
            .collect();
        ifaces
            .entry((c.netns.clone(), c.iface.clone()))
            .or_default()
            .insert(hook, (true, c.mode.clone(), slots));
    }
    for l in links {
        // Chain members are drawn from their chain, with its counters.
        if l.spec.chain().is_some() {
            continue;
        }
        // The spec's JSON form names the fields every hook on an interface shares (iface,
        // netns, direction, priority), so links of a kind added later land in the right place.
        let spec = serde_json::to_value(&l.spec).unwrap_or_default();
        let field = |k: &str| spec.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let ty = field("type").unwrap_or_else(|| "other".into());
        let slot = SlotView {
            program_id: l.program_id,
            link_id: Some(l.id),
            name: l.program_name.clone(),
            position: None,
            priority: spec.get("priority").and_then(|v| v.as_i64()),
            proceed_on: Vec::new(),
            runs: None,
            verdicts: BTreeMap::new(),
            attach_point: Some(l.attach_point.clone()),
        };
        match field("iface") {
            Some(iface) => {
                let mut hook = match field("direction") {
                    Some(d) => format!("{ty}-{d}"),
                    None => ty,
                };
                // A legacy cls_bpf filter sits beside the hook's chain, not in it.
                if spec.get("legacy").and_then(|v| v.as_bool()) == Some(true) {
                    hook.push_str("-legacy");
                }
                ifaces
                    .entry((field("netns"), iface))
                    .or_default()
                    .entry(hook)
                    .or_insert((false, None, Vec::new()))
                    .2
                    .push(slot);
            }
            None => groups.entry(family(&ty)).or_default().push(slot),
        }
    }
    let unattached: Vec<SlotView> = programs
        .iter()
        .filter(|p| p.links.is_empty())
        .filter_map(|p| {
            Some(SlotView {
                program_id: p.id?,
                link_id: None,
                name: p.name.clone(),
                position: None,
                priority: None,
                proceed_on: Vec::new(),
                runs: None,
                verdicts: BTreeMap::new(),
                attach_point: None,
            })
        })
        .collect();
    let interfaces = ifaces
        .into_iter()
        .map(|((netns, iface), hooks)| {
            let mut hooks: Vec<HookView> = hooks
                .into_iter()
                .map(|(hook, (chain, mode, mut programs))| {
                    if !chain {
                        // Links of their own run by priority (lower first), then age.
                        programs.sort_by_key(|s| (s.priority, s.link_id));
                    }
                    HookView {
                        hook,
                        chain,
                        mode,
                        programs,
                    }
                })
                .collect();
            hooks.sort_by_key(|h| (hook_rank(&h.hook), h.hook.clone()));
            InterfaceView {
                iface,
                netns,
                hooks,
            }
        })
        .collect();
    let mut groups: Vec<GroupView> = groups
        .into_iter()
        .map(|(kind, programs)| GroupView { kind, programs })
        .collect();
    if !unattached.is_empty() {
        groups.push(GroupView {
            kind: "not attached".into(),
            programs: unattached,
        });
    }
    (interfaces, groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served() {
        assert!(check_addr("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(check_addr("[::1]:8080".parse().unwrap()).is_ok());
        let e = check_addr("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("SSH tunnel"), "{e}");
        assert!(check_addr("192.0.2.1:80".parse().unwrap()).is_err());
    }

    #[test]
    fn host_header_must_name_loopback() {
        let req = |h: &str| format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
        for ok in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:9",
            "127.0.0.2",
        ] {
            assert!(host_is_loopback(&req(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "[2001:db8::1]:80",
            "localhost.evil",
        ] {
            assert!(!host_is_loopback(&req(bad)), "{bad}");
        }
        assert!(host_is_loopback("GET / HTTP/1.0\r\n\r\n"));
    }

    #[test]
    fn hooks_sort_in_packet_order_and_families_group() {
        let mut h = vec![
            "tcx-egress",
            "tc-ingress",
            "xdp",
            "tc-egress",
            "tcx-ingress",
        ];
        h.sort_by_key(|x| hook_rank(x));
        assert_eq!(
            h,
            [
                "xdp",
                "tc-ingress",
                "tcx-ingress",
                "tc-egress",
                "tcx-egress"
            ]
        );
        assert_eq!(family("raw-tracepoint"), "tracepoints");
        assert_eq!(family("cgroup-sock-addr"), "cgroups");
        assert_eq!(family("usdt"), "probes");
        assert_eq!(family("netfilter"), "netfilter");
    }

    #[test]
    fn assets_are_small_and_self_contained() {
        let total = INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len() + ICON_SVG.len();
        assert!(total < 200 * 1024, "{total} bytes");
        let cluster = CLUSTER_HTML.len() + CLUSTER_JS.len() + STYLE_CSS.len() + ICON_SVG.len();
        assert!(cluster < 200 * 1024, "{cluster} bytes");
        // No CDN, no other site: everything the page loads is its own.
        for text in [INDEX_HTML, APP_JS, STYLE_CSS, CLUSTER_HTML, CLUSTER_JS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // The icon names only its XML namespace.
        assert!(!ICON_SVG
            .replace("http://www.w3.org/2000/svg", "")
            .contains("http"));
    }
}
