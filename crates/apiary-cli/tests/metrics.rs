//! Map-derived metrics: a `.bpf.c` with a counter hash map keyed by pid/comm, a log2 histogram
//! array, a per-CPU array and a ring buffer (event struct in `prog.h`), with its declarations in
//! `prog.metrics.yaml` beside it.
//!
//! * `apiary run prog.bpf.c --metrics ADDR --otlp-endpoint URL`: the events decode on stdout,
//!   the scrape passes `promtool check metrics` and holds the numbers the run's own map dump
//!   shows, and an OTLP receiver decoding with the official definitions (PyPI's
//!   opentelemetry-proto, tests/otlp/receiver.py) gets the same numbers and every event as a
//!   log record.
//! * The daemon: the object loaded with `--metrics-config`, its maps on the WHOLE `/metrics`
//!   endpoint, which promtool accepts.
//!
//! Privileged: skipped without root unless APIARY_REQUIRE_PRIVILEGED=1.

mod common;

use common::daemon::{free_port, Daemon, DaemonOpts};
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const SOURCE: &str = include_str!("metrics/prog.bpf.c");
const HEADER: &str = include_str!("metrics/prog.h");
const DECLS: &str = include_str!("metrics/prog.metrics.yaml");
/// getppid() calls the target makes: sequence numbers 1..=10 fall in log2 slots 0 (1),
/// 1 (2, 3), 2 (4..7) and 3 (8..10).
const CALLS: u32 = 10;
const SLOTS: [u64; 4] = [1, 2, 4, 3];

fn privileged() -> bool {
    apiary_fixtures::privileged()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The source tree in a temp dir, and a cache directory for the build.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("prog.bpf.c"), SOURCE).unwrap();
    std::fs::write(dir.path().join("prog.h"), HEADER).unwrap();
    std::fs::write(dir.path().join("prog.metrics.yaml"), DECLS).unwrap();
    dir
}

/// The fixture process that calls getppid() `CALLS` times once released.
struct Target(Child);

impl Target {
    fn new() -> Target {
        Target(
            Command::new(apiary_fixtures::uprobe_target())
                .args([CALLS.to_string().as_str(), "wait"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn target"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn release(mut self) {
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

/// A child killed if the test fails before it is stopped: an `apiary run` without a duration
/// must not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Lines of a child's stream, as they come.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Receive until `done` accepts what came, or fail after a generous bound.
fn collect_until(
    rx: &Receiver<String>,
    what: &str,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !done(&got) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => panic!("{what}: never complete; got {got:#?}"),
        }
    }
    got
}

/// The OTLP receiver: the official definitions in a cached venv (scripts/otlp.sh).
struct OtlpReceiver {
    child: Child,
    port: u16,
    lines: Receiver<String>,
}

impl OtlpReceiver {
    fn start() -> OtlpReceiver {
        let setup = Command::new("sh")
            .arg(root().join("scripts/otlp.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/otlp.sh");
        let out = String::from_utf8_lossy(&setup.stdout);
        let python = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("APIARY_OTLP_PYTHON="))
            .unwrap_or_else(|| panic!("scripts/otlp.sh failed ({}): {out}", setup.status));
        let mut child = Command::new(python)
            .arg(root().join("tests/otlp/receiver.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let lines = lines(child.stdout.take().unwrap());
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the receiver says its port");
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver: {first}"));
        OtlpReceiver { child, port, lines }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// `promtool check metrics` on the exposition text: no errors, no lint complaints.
fn promtool(text: &str) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the endpoint:\n{}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `metric` whose labels include every `label="value"`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name_labels, value) = l.rsplit_once(' ')?;
        let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        if name != metric
            || !labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            return None;
        }
        value.parse().ok()
    })
}

/// Cumulative bucket counts the declared histogram must show for `SLOTS`, by `le`.
fn expected_buckets() -> Vec<(String, f64)> {
    let mut cum = 0;
    (0..16)
        .map(|i| {
            cum += SLOTS.get(i).copied().unwrap_or(0);
            (format!("{}", 1u64 << (i + 1)), cum as f64)
        })
        .collect()
}

/// `key`: labels from the counter map's key beside pid; `extra`: labels on every series.
fn check_scrape(text: &str, pid: &str, key: &[(&str, &str)], extra: &[(&str, &str)]) {
    let mut l = vec![("pid", pid)];
    l.extend(key);
    l.extend(extra);
    assert_eq!(
        sample(text, "getppid_calls_total", &l),
        Some(f64::from(CALLS)),
        "{text}"
    );
    assert_eq!(
        sample(text, "getppid_depth", &l),
        Some(f64::from(CALLS % 4)),
        "{text}"
    );
    for (le, n) in expected_buckets() {
        let mut l = extra.to_vec();
        l.push(("le", &le));
        assert_eq!(
            sample(text, "getppid_call_seq_bucket", &l),
            Some(n),
            "bucket le={le}:\n{text}"
        );
    }
    assert_eq!(
        sample(text, "getppid_call_seq_count", extra),
        Some(f64::from(CALLS))
    );
    // Per-CPU values summed.
    let mut l = vec![("index", "0")];
    l.extend(extra);
    assert_eq!(
        sample(text, "getppid_calls_all_cpus_total", &l),
        Some(f64::from(CALLS)),
        "{text}"
    );
}

/// The attribute `key` of an OTLP data point or log record, as MessageToDict renders it.
fn attr<'a>(point: &'a Value, key: &str) -> Option<&'a Value> {
    point["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[test]
fn run_serves_map_metrics_and_pushes_them_with_events_over_otlp() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = tree();
    let receiver = OtlpReceiver::start();
    let target = Target::new();
    let pid = target.pid().to_string();
    let metrics = free_port();
    let child = a
        .cmd()
        .env("APIARY_CACHE_DIR", t.path().join("cache"))
        .args(["run", t.path().join("prog.bpf.c").to_str().unwrap()])
        .args(["-o", "json", "--set", &format!("target_tgid={pid}")])
        .args(["--metrics", &metrics.to_string()])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", receiver.port),
        ])
        .args(["--otlp-interval", "200ms"])
        .args([
            "--dump-map",
            "counts",
            "--dump-map",
            "hist",
            "--interval",
            "1h",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn apiary run");
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let err = lines(child.stderr.take().unwrap());
    let notes = collect_until(&err, "apiary run's setup", |n| {
        n.last().is_some_and(|l| l.starts_with("running"))
    });
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("serving metrics at http://")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n == "metrics from map(s) counts, hist, totals"),
        "{notes:?}"
    );
    let out = lines(child.stdout.take().unwrap());
    target.release();

    // Decoded events: the struct from prog.h, by field name.
    let events: Vec<Value> = collect_until(&out, "events", |l| {
        l.iter().filter(|l| l.contains("\"seq\"")).count() == CALLS as usize
    })
    .iter()
    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
    .filter(|v: &Value| v.get("seq").is_some())
    .collect();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=u64::from(CALLS)).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e["pid"].to_string() == pid));
    let comm = events[0]["comm"].as_str().unwrap().to_string();
    assert!(comm.starts_with("uprobe_target"), "{comm}");

    // The scrape: the maps' numbers (every event was counted before it was sent).
    let text = http_get(metrics, "/metrics");
    promtool(&text);
    check_scrape(&text, &pid, &[("comm", &comm)], &[]);
    assert_eq!(
        sample(&text, "apiary_run_events_total", &[]),
        Some(f64::from(CALLS))
    );
    assert!(sample(
        &text,
        "apiary_run_program_runs_total",
        &[("program", "on_getppid")]
    )
    .is_some_and(|n| n >= f64::from(CALLS)));
    assert!(text.contains("# TYPE getppid_call_seq histogram"), "{text}");
    assert_eq!(
        sample(&text, "apiary_run_otlp_logs_dropped_total", &[]),
        Some(0.0),
        "{text}"
    );

    // The same numbers in the run's own map dump, printed when it stops.
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let rest: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(child.wait().unwrap().success(), "run exits 0 on Ctrl-C");
    let dump = |map: &str| -> Vec<Value> {
        rest.iter()
            .rev()
            .find(|v| v["_map"] == map)
            .unwrap_or_else(|| panic!("no dump of {map}: {rest:?}"))["entries"]
            .as_array()
            .unwrap()
            .clone()
    };
    let counts = dump("counts");
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[0]["key"]["pid"].to_string(), pid);
    assert_eq!(counts[0]["key"]["comm"], comm.as_str());
    assert_eq!(
        Some(counts[0]["value"]["calls"].as_f64().unwrap()),
        sample(&text, "getppid_calls_total", &[("pid", &pid)])
    );
    assert_eq!(
        Some(counts[0]["value"]["depth"].as_f64().unwrap()),
        sample(&text, "getppid_depth", &[("pid", &pid)])
    );
    let hist: Vec<u64> = dump("hist")
        .iter()
        .map(|e| e["value"].as_u64().unwrap())
        .collect();
    assert_eq!(&hist[..4], &SLOTS);

    // OTLP: the final push (after the last event) and every event as a log record.
    let mut last_metrics = None;
    let mut records = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while records.len() < CALLS as usize || last_metrics.is_none() {
        let l = receiver
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "the receiver got {} log records and metrics {}",
                    records.len(),
                    last_metrics.is_some()
                )
            });
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v.get("error").is_none(), "receiver: {v}");
        let req = &v["request"];
        match v["path"].as_str() {
            Some("/v1/logs") => {
                for rl in req["resourceLogs"].as_array().unwrap() {
                    for sl in rl["scopeLogs"].as_array().unwrap() {
                        records.extend(sl["logRecords"].as_array().unwrap().iter().cloned());
                    }
                }
            }
            Some("/v1/metrics") => {
                let m = &req["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
                let calls = m
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == "getppid_calls");
                // Pushes before the events were handled show fewer calls; wait for all.
                let done =
                    calls.is_some_and(|c| c["sum"]["dataPoints"][0]["asInt"] == CALLS.to_string());
                if done {
                    last_metrics = Some(m.clone());
                }
            }
            other => panic!("unexpected path {other:?}"),
        }
    }
    let m = last_metrics.unwrap();
    let by_name = |n: &str| -> &Value {
        m.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap_or_else(|| panic!("no OTLP metric {n}: {m}"))
    };
    let calls = by_name("getppid_calls");
    assert_eq!(calls["sum"]["isMonotonic"], true);
    assert_eq!(
        calls["sum"]["aggregationTemporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let p = &calls["sum"]["dataPoints"][0];
    assert_eq!(attr(p, "pid").unwrap()["stringValue"], pid.as_str());
    assert_eq!(attr(p, "comm").unwrap()["stringValue"], comm.as_str());
    let depth = &by_name("getppid_depth")["gauge"]["dataPoints"][0];
    assert_eq!(depth["asInt"], (CALLS % 4).to_string());
    let h = &by_name("getppid_call_seq")["histogram"]["dataPoints"][0];
    assert_eq!(h["count"], CALLS.to_string());
    let buckets: Vec<u64> = h["bucketCounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(&buckets[..4], &SLOTS);
    assert_eq!(buckets.iter().sum::<u64>(), u64::from(CALLS));
    let bounds: Vec<f64> = h["explicitBounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_f64().unwrap())
        .collect();
    assert_eq!(&bounds[..4], &[2.0, 4.0, 8.0, 16.0]);
    let all = &by_name("getppid_calls_all_cpus")["sum"]["dataPoints"][0];
    assert_eq!(all["asInt"], CALLS.to_string());

    // Log records: attributes are the event's fields.
    let mut seqs: Vec<String> = records
        .iter()
        .map(|r| {
            assert_eq!(r["eventName"], "events");
            assert_eq!(attr(r, "pid").unwrap()["intValue"], pid.as_str());
            assert_eq!(attr(r, "comm").unwrap()["stringValue"], comm.as_str());
            attr(r, "seq").unwrap()["intValue"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    seqs.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(seqs, (1..=CALLS).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn daemon_metrics_include_the_declared_maps_of_its_programs() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = tree();
    let built = a
        .cmd()
        .env("APIARY_CACHE_DIR", t.path().join("cache"))
        .args(["build", t.path().join("prog.bpf.c").to_str().unwrap()])
        .args(["-o", t.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    // The package carries the declarations found beside the source.
    let pkg: Value =
        serde_json::from_slice(&std::fs::read(t.path().join("out/prog.package.json")).unwrap())
            .unwrap();
    assert_eq!(pkg["metrics"]["prefix"], "getppid");
    assert_eq!(pkg["metrics"]["maps"][0]["labels"][1], "comm");
    let inspected = a.ok(&[
        "inspect",
        t.path().join("out/prog.package.json").to_str().unwrap(),
    ]);
    assert!(
        inspected.contains("getppid_call_seq (histogram) from map hist"),
        "{inspected}"
    );

    let receiver = OtlpReceiver::start();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            metrics: true,
            extra: vec![
                "--otlp-endpoint".into(),
                format!("http://127.0.0.1:{}", receiver.port),
                "--otlp-interval".into(),
                "200ms".into(),
            ],
            ..Default::default()
        },
    );
    let target = Target::new();
    let pid = target.pid().to_string();
    let r = a
        .cmd()
        .args(["--endpoint", &d.endpoint(), "-o", "json"])
        .args(["load", "file", "--path"])
        .arg(t.path().join("out/prog.bpf.o"))
        .args(["--set", &format!("target_tgid={pid}")])
        .arg("--metrics-config")
        .arg(t.path().join("prog.metrics.yaml"))
        .args(["--programs", "tracepoint:on_getppid,tracepoint:on_getpid"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    let loaded: Value = serde_json::from_slice(&r.stdout).unwrap();
    let loaded = loaded.as_array().unwrap();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    let id = loaded.iter().find(|p| p["name"] == "on_getppid").unwrap()["id"]
        .as_i64()
        .unwrap()
        .to_string();
    assert!(loaded.iter().all(|p| p["metadata"]["apiary.dev/metrics"]
        .as_str()
        .is_some_and(|m| m.contains("getppid"))));
    let r = a
        .cmd()
        .args(["--endpoint", &d.endpoint()])
        .args(["attach", &id, "tracepoint", "--tracepoint"])
        .arg("syscalls/sys_enter_getppid")
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    target.release();

    let addr = d.metrics.unwrap();
    let labels = [("program_id", id.as_str()), ("program", "on_getppid")];
    let mut text = String::new();
    assert!(
        eventually(20, || {
            text = http_get(addr, "/metrics");
            sample(&text, "getppid_calls_total", &labels) == Some(f64::from(CALLS))
        }),
        "{text}"
    );
    // The whole endpoint: the daemon's own families and the declared ones together.
    promtool(&text);
    check_scrape(&text, &pid, &[], &labels);
    // Both programs carry the declarations; the maps they share are exported once, with the
    // first, though on_getpid's instructions use only `totals`.
    assert_eq!(
        sample(&text, "apiary_scrape_errors", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("getppid_calls_total{"))
            .count(),
        1,
        "{text}"
    );
    assert!(sample(&text, "apiary_programs", &[]).is_some());

    // serve --otlp-endpoint pushes the same declared metrics, labelled with the program.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let l = receiver
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the daemon pushes the declared metrics over OTLP");
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(v["path"], "/v1/metrics", "{v}");
        let metrics = &v["request"]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        let Some(calls) = metrics
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "getppid_calls"))
        else {
            continue;
        };
        let p = &calls["sum"]["dataPoints"][0];
        // Pushes from before the calls (no entry yet) may still be queued: wait for the count.
        if p["asInt"] != CALLS.to_string() {
            continue;
        }
        assert_eq!(attr(p, "program_id").unwrap()["stringValue"], id.as_str());
        assert_eq!(attr(p, "pid").unwrap()["stringValue"], pid.as_str());
        break;
    }
}

#[test]
fn declarations_that_do_not_fit_are_refused() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = tree();
    let cmd = || {
        let mut c = a.cmd();
        c.env("APIARY_CACHE_DIR", t.path().join("cache"));
        c
    };
    // A build with a malformed prog.metrics.yaml fails and names the file.
    std::fs::write(
        t.path().join("prog.metrics.yaml"),
        "maps:\n  - map: counts\n    metrics: [{name: x, type: countr}]\n",
    )
    .unwrap();
    let r = cmd()
        .args(["build", t.path().join("prog.bpf.c").to_str().unwrap()])
        .args(["-o", t.path().join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(
        err.contains("prog.metrics.yaml") && err.contains("countr"),
        "{err}"
    );
    // A declared map the program lacks: the run stops before it starts.
    std::fs::write(t.path().join("prog.metrics.yaml"), DECLS).unwrap();
    let other = t.path().join("other.yaml");
    std::fs::write(
        &other,
        "maps:\n  - map: nosuch\n    metrics: [{name: x, type: gauge}]\n",
    )
    .unwrap();
    let r = cmd()
        .args(["run", t.path().join("prog.bpf.c").to_str().unwrap()])
        .args(["--metrics-config", other.to_str().unwrap()])
        .args(["--metrics", "127.0.0.1:0", "--duration", "30s"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("the program has no map nosuch"), "{err}");
    assert!(!err.contains("running"), "{err}");
}
