//! The Prometheus endpoint: `GET /metrics` in the text exposition format, over a minimal
//! HTTP/1.1 server on tokio (one request per connection; a scrape needs nothing more).
//!
//! Per managed program: run count and run time (the kernel counts them while BPF stats are
//! enabled, which the daemon keeps on while it runs), verified instructions, JIT and translated
//! sizes and locked memory. Per chain slot: runs and verdicts from the dispatcher's counters.

use super::http;
use apiary::chain::ChainView;
use apiary::kernel::sys;
use apiary::{Manager, ProgramView};
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `stats_on`: whether the daemon holds the kernel's BPF stats on (see `server::serve`).
pub async fn serve(
    listener: TcpListener,
    manager: Arc<Manager>,
    shutdown: watch::Receiver<bool>,
    stats_on: bool,
) {
    http::accept_loop(listener, shutdown, "metrics", move |stream| {
        handle(stream, manager.clone(), stats_on)
    })
    .await
}

async fn handle(stream: TcpStream, manager: Arc<Manager>, stats_on: bool) -> std::io::Result<()> {
    respond_with(stream, move || render(&manager, stats_on)).await
}

/// Answer one request on `stream`: `GET /metrics` gets `render()`'s text (made on a blocking
/// thread: it reads the kernel), anything else an error.
async fn respond_with(
    mut stream: TcpStream,
    render: impl FnOnce() -> String + Send + 'static,
) -> std::io::Result<()> {
    let Some(req) = http::read_request(&mut stream).await? else {
        return http::respond(
            &mut stream,
            "400 Bad Request",
            "text/plain",
            "",
            b"bad request\n",
            false,
        )
        .await;
    };
    let head_only = req.head_only();
    if !req.is_read() {
        return http::respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "",
            b"GET /metrics\n",
            false,
        )
        .await;
    }
    if req.path != "/metrics" {
        return http::respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "",
            b"see /metrics\n",
            head_only,
        )
        .await;
    }
    let body = tokio::task::spawn_blocking(render)
        .await
        .unwrap_or_else(|e| format!("# metrics collection failed: {e}\n"));
    http::respond(
        &mut stream,
        "200 OK",
        "text/plain; version=0.0.4; charset=utf-8",
        "",
        body.as_bytes(),
        head_only,
    )
    .await
}

/// What a foreground process (`apiary run --metrics`) serves.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serve `render()` at `/metrics` on `listener` from a thread of its own, on the same HTTP code
/// as the daemon's endpoint, until the process ends.
pub fn serve_in_thread(listener: std::net::TcpListener, render: Render) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: cannot listen");
                        return;
                    }
                };
                // Never stopped: the thread ends with the process.
                let (_keep, stop) = watch::channel(false);
                http::accept_loop(listener, stop, "metrics", move |stream| {
                    let r = render.clone();
                    respond_with(stream, move || r())
                })
                .await;
            })
        })?;
    Ok(())
}

/// A label value as the exposition format wants it: backslash, quote and newline escaped
/// (the same escaping as the declared map metrics apiary renders).
pub fn escape(v: &str) -> String {
    apiary::metrics::render::escape_label(v)
}

/// One metric family: HELP and TYPE once, then its samples.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, String)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: impl ToString) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let l = if l.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", l.join(","))
        };
        self.samples.push((l, value.to_string()));
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            let _ = writeln!(out, "{}{labels} {value}", self.name);
        }
    }
}

/// Locked memory of a BPF object, from the `memlock:` line of its fdinfo.
fn memlock(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn sysctl_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// Hook label of a chain: the vocabulary of `apiary get chain IFACE HOOK`.
fn hook_label(c: &ChainView) -> String {
    match c.direction.as_deref() {
        Some(d) => format!("{}-{d}", c.kind),
        None => c.kind.clone(),
    }
}

/// The families the programs' metric declarations name (for `/metrics` and the OTLP push), and
/// what could not be read; the maps are listed only when a program declares any. `taken`: names
/// the caller's own families hold.
pub(crate) fn declared(
    manager: &Manager,
    programs: &[ProgramView],
    taken: &[&str],
) -> (Vec<apiary::metrics::Family>, Vec<String>) {
    let maps = if programs
        .iter()
        .any(|p| p.metadata.contains_key(apiary::metrics::METADATA_KEY))
    {
        manager.list_maps(false).unwrap_or_default()
    } else {
        Vec::new()
    };
    apiary::metrics::program_families(programs, &maps, taken)
}

/// The exposition text. Collection failures become comment lines and an error gauge rather
/// than a failed scrape: the rest is still worth having.
pub fn render(manager: &Manager, stats_held: bool) -> String {
    let mut errors = 0u64;
    let mut notes = String::new();
    let programs: Vec<ProgramView> = match manager.list_programs(false, &Default::default()) {
        Ok(p) => p,
        Err(e) => {
            errors += 1;
            let _ = writeln!(
                notes,
                "# listing programs failed: {}",
                e.to_string().replace('\n', " ")
            );
            Vec::new()
        }
    };
    let chains: Vec<ChainView> = match manager.list_chains() {
        Ok(c) => c,
        Err(e) => {
            errors += 1;
            let _ = writeln!(
                notes,
                "# listing chains failed: {}",
                e.to_string().replace('\n', " ")
            );
            Vec::new()
        }
    };

    let mut count = Family::new("apiary_programs", "gauge", "Programs apiary manages.");
    count.add(&[], programs.len());
    let mut runs = Family::new(
        "apiary_program_run_count_total",
        "counter",
        "Times the program ran, counted by the kernel while BPF stats are enabled (apiary serve keeps them on).",
    );
    let mut secs = Family::new(
        "apiary_program_run_seconds_total",
        "counter",
        "Time the program spent running.",
    );
    let mut verified = Family::new(
        "apiary_program_verified_instructions",
        "gauge",
        "Instructions the verifier processed to accept the program.",
    );
    let mut jited = Family::new(
        "apiary_program_jited_bytes",
        "gauge",
        "Size of the program's JIT-compiled code.",
    );
    let mut xlated = Family::new(
        "apiary_program_xlated_bytes",
        "gauge",
        "Size of the program's translated BPF instructions.",
    );
    let mut mem = Family::new(
        "apiary_program_memlock_bytes",
        "gauge",
        "Memory the kernel accounts to the program.",
    );
    let mut links = Family::new(
        "apiary_program_links",
        "gauge",
        "Links (attach points) the program has.",
    );
    for p in &programs {
        let Some(id) = p.id else { continue };
        let id = id.to_string();
        let labels = [
            ("id", id.as_str()),
            ("name", p.name.as_str()),
            ("type", p.prog_type.as_str()),
        ];
        links.add(&labels, p.links.len());
        let info = sys::prog_fd_by_id(p.kernel_id)
            .and_then(|fd| sys::prog_info(fd.as_fd()).map(|i| (i, memlock(fd.as_fd()))));
        match info {
            Ok((i, m)) => {
                runs.add(&labels, i.run_cnt);
                secs.add(&labels, i.run_time_ns as f64 / 1e9);
                verified.add(&labels, i.verified_insns);
                jited.add(&labels, i.jited_len);
                xlated.add(&labels, i.xlated_len);
                if let Some(m) = m {
                    mem.add(&labels, m);
                }
            }
            Err(e) => {
                errors += 1;
                let _ = writeln!(
                    notes,
                    "# program {id} ({}): {}",
                    p.name,
                    e.to_string().replace('\n', " ")
                );
            }
        }
    }

    let mut slot_runs = Family::new(
        "apiary_chain_slot_runs_total",
        "counter",
        "Times the program in this chain slot ran, since the chain's dispatcher was last composed.",
    );
    let mut slot_verdicts = Family::new(
        "apiary_chain_slot_verdicts_total",
        "counter",
        "Verdicts the program in this chain slot returned, since the chain's dispatcher was last composed.",
    );
    let mut chain_programs =
        Family::new("apiary_chain_programs", "gauge", "Programs in the chain.");
    for c in &chains {
        let hook = hook_label(c);
        let netns = c.netns.clone().unwrap_or_default();
        chain_programs.add(
            &[("iface", &c.iface), ("netns", &netns), ("hook", &hook)],
            c.programs.len(),
        );
        for m in &c.programs {
            let (position, pid) = (m.position.to_string(), m.program_id.to_string());
            let labels = [
                ("iface", c.iface.as_str()),
                ("netns", netns.as_str()),
                ("hook", hook.as_str()),
                ("position", position.as_str()),
                ("program", m.name.as_str()),
                ("program_id", pid.as_str()),
            ];
            slot_runs.add(&labels, m.runs);
            for (verdict, n) in &m.verdicts {
                let mut l = labels.to_vec();
                l.push(("verdict", verdict.as_str()));
                slot_verdicts.add(&l, n);
            }
        }
    }

    // The maps of programs loaded with metric declarations (`load --metrics-config`, packages).
    let fixed = [
        &count,
        &runs,
        &secs,
        &verified,
        &jited,
        &xlated,
        &mem,
        &links,
        &chain_programs,
        &slot_runs,
        &slot_verdicts,
    ];
    let own: Vec<&str> = fixed
        .iter()
        .map(|f| f.name)
        .chain(["apiary_bpf_stats_enabled", "apiary_scrape_errors"])
        .collect();
    let (declared, declared_notes) = declared(manager, &programs, &own);
    errors += declared_notes.len() as u64;
    for n in &declared_notes {
        let _ = writeln!(notes, "# {}", n.replace('\n', " "));
    }

    let stats_on = stats_held || sysctl_stats_enabled();
    let mut stats = Family::new(
        "apiary_bpf_stats_enabled",
        "gauge",
        "Whether the kernel counts program run time and run count.",
    );
    stats.add(&[], u8::from(stats_on));
    let mut errs = Family::new(
        "apiary_scrape_errors",
        "gauge",
        "Objects this scrape could not read (see the comments).",
    );
    errs.add(&[], errors);

    let mut out = String::with_capacity(4096);
    for f in fixed.into_iter().chain([&stats, &errs]) {
        f.write(&mut out);
    }
    apiary::metrics::render::write(&declared, &mut out);
    out.push_str(&notes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        let mut f = Family::new("apiary_test_total", "counter", "Test.");
        f.add(&[("name", "we\"ird")], 3);
        let mut out = String::new();
        f.write(&mut out);
        assert_eq!(out, "# HELP apiary_test_total Test.\n# TYPE apiary_test_total counter\napiary_test_total{name=\"we\\\"ird\"} 3\n");
    }
}
