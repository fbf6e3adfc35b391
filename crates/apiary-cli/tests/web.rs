//! The web view (`apiary serve --web`) in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (tests/web/host.mjs). A chain of three XDP programs on a veth: the page shows
//! their boxes in run order, their counters rise without a reload when pings cross the veth, a
//! click shows a program's details and a map's decoded contents, and unloading a program removes
//! its box. Screenshots land in target/web-screenshots/.
//!
//! Also, without a browser: the JSON the page draws from, read-only answers, and the refusals
//! (a non-loopback address, a foreign Host header).
//!
//! scripts/web-tests.sh installs chromium and playwright-core (once). Without root, or when it
//! cannot, the browser test skips, except under APIARY_REQUIRE_PRIVILEGED=1.

mod common;

use common::daemon::{free_port, Daemon, DaemonOpts};
use common::kube;
use common::pki::make_pki;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require_privileged() -> bool {
    std::env::var("APIARY_REQUIRE_PRIVILEGED").as_deref() == Ok("1")
}

/// The cache with playwright-core, after scripts/web-tests.sh made sure it and chromium are there.
fn web_tests_dir() -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg(repo_root().join("scripts/web-tests.sh"))
        .output();
    let result = match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout
                .lines()
                .last()
                .and_then(|l| l.strip_prefix("APIARY_WEB_TESTS_DIR="))
            {
                Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
                _ => Err(format!(
                    "scripts/web-tests.sh failed ({}):\n{stdout}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )),
            }
        }
        Err(e) => Err(format!("cannot run scripts/web-tests.sh: {e}")),
    };
    match result {
        Ok(d) => Some(d),
        Err(e) if require_privileged() => {
            panic!("the browser could not be set up, and APIARY_REQUIRE_PRIVILEGED=1 forbids skipping:\n{e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// One HTTP/1.1 request; the whole answer (head and body).
/// Where the browser scripts save their screenshots.
fn screenshots() -> PathBuf {
    repo_root().join("target/web-screenshots")
}

/// Run the browser script tests/web/SCRIPT with `env` (and the playwright cache and the
/// screenshot directory). The script prints "STEP WHAT" when the test must act: `step(WHAT)`
/// acts, then the script is told to go on. Returns the steps in order; panics unless the script
/// ends with DONE and exit status 0.
fn drive(
    script: &str,
    dir: &Path,
    env: &[(&str, String)],
    mut step: impl FnMut(&str),
) -> Vec<String> {
    let mut child = Command::new("node")
        .arg(repo_root().join("tests/web").join(script))
        .env("APIARY_WEB_TESTS_DIR", dir)
        .env("APIARY_WEB_SHOTS", screenshots())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run node tests/web/{script}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut steps = Vec::new();
    let mut done = false;
    for line in stdout.lines() {
        let line = line.expect("read the script's output");
        match line.strip_prefix("STEP ") {
            Some(what) => {
                step(what);
                steps.push(what.to_string());
                writeln!(stdin, "go").expect("answer the script");
                stdin.flush().expect("flush");
            }
            None if line == "DONE" => done = true,
            None => eprintln!("script: {line}"),
        }
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = child.wait().expect("wait for node");
    eprintln!("{err}");
    assert!(
        status.success() && done,
        "the browser checks of {script} failed ({status}):\n{err}"
    );
    steps
}

fn http(addr: SocketAddr, method: &str, path: &str, host: &str) -> String {
    try_http(addr, method, path, host).expect("HTTP request to the web view")
}

/// A plain HTTP/1.1 request: the whole answer, or the I/O error (a TLS listener drops a plain
/// request at its first bytes, so writing the rest may fail).
fn try_http(addr: SocketAddr, method: &str, path: &str, host: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let text = http(addr, "GET", path, &addr.to_string());
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200 OK"),
        "{path}: {head}\n{body}"
    );
    assert!(head.contains("Content-Type: application/json"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn on(a: &Apiary, d: &Daemon, args: &[&str]) -> Value {
    let mut v = args.to_vec();
    v.extend(["-o", "json"]);
    let r = Run::from(
        a.cmd()
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(&v)
            .output()
            .expect("run apiary"),
    );
    assert!(r.ok, "apiary {args:?} failed:\n{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
}

/// A daemon with the web view, and a chain of three XDP programs on the veth's b side:
/// counter (priority 10), port dropper (20), counter (30). Returns their ids in run order.
fn chain_of_three(a: &Apiary, net: &NetPair) -> (Daemon, SocketAddr, Vec<i64>) {
    let web = free_port();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            extra: vec!["--web".into(), web.to_string()],
            ..Default::default()
        },
    );
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let mut ids = Vec::new();
    for (prog, prio) in [
        ("xdp_counter", "10"),
        ("xdp_drop_port", "20"),
        ("xdp_counter", "30"),
    ] {
        let loaded = on(
            a,
            &d,
            &[
                "load",
                "file",
                "--path",
                p,
                "--programs",
                &format!("xdp:{prog}"),
            ],
        );
        let id = loaded[0]["id"].as_i64().expect("id");
        on(
            a,
            &d,
            &[
                "attach",
                &id.to_string(),
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
                "--priority",
                prio,
            ],
        );
        ids.push(id);
    }
    (d, web, ids)
}

#[test]
fn the_page_draws_the_chain_counts_live_and_forgets_unloaded_programs() {
    if !privileged() {
        return;
    }
    let Some(dir) = web_tests_dir() else { return };
    let a = Apiary::new();
    let net = NetPair::new();
    let (d, web, ids) = chain_of_three(&a, &net);
    let ids_arg = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let steps = drive(
        "host.mjs",
        &dir,
        &[
            ("APIARY_WEB_URL", format!("http://{web}/")),
            ("APIARY_WEB_IFACE", net.if_b.clone()),
            ("APIARY_WEB_IDS", ids_arg),
        ],
        |step| match step {
            "ping" => assert!(net.ping(10), "ping across the veth"),
            s if s.starts_with("unload ") => {
                let id = s.trim_start_matches("unload ");
                assert_eq!(
                    id,
                    ids[1].to_string(),
                    "the script unloads the middle program"
                );
                on(&a, &d, &["unload", "--force", id]);
            }
            other => panic!("unknown step {other:?}"),
        },
    );
    let steps: Vec<&str> = steps
        .iter()
        .map(|s| s.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["ping", "unload"]);
    assert_screenshots(&[
        "1-chain.png",
        "2-counters.png",
        "3-details.png",
        "4-unloaded.png",
    ]);
    for id in [ids[0], ids[2]] {
        on(&a, &d, &["unload", "--force", &id.to_string()]);
    }
}

fn assert_screenshots(names: &[&str]) {
    for shot in names {
        let f = screenshots().join(shot);
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} ({len} bytes)", f.display());
    }
}

/// An application of the rollout fixture's XDP program on three nodes: a `generation` change
/// is a new revision, rolled out one node per batch with a 10-minute pause after each, so a
/// rollout stays at its first node while the test looks.
fn paused_rollout_app(name: &str, selector_label: &str, generation: u8) -> String {
    kube::rollout_fixture_app(
        name,
        selector_label,
        &[("generation", generation)],
        "    batchSize: 1\n    pause: 10m\n    healthGate:\n      window: 1s\n",
        kube::ROLLOUT_XDP,
    )
}

/// The cluster view (`apiary operator --web`) against the suite's real apiserver and agents on
/// simulated nodes: the JSON, then the page in Chromium: a node without an agent is drawn as
/// such and turns ready in place when its agent starts; a staged rollout shows its phase and
/// progress.
#[test]
fn the_cluster_view_draws_nodes_agents_and_a_rollout_live() {
    if !privileged() {
        return;
    }
    let Some(k) = kube::kube() else { return };
    let Some(dir) = web_tests_dir() else { return };
    k.install();
    let sel = format!("apiary-test/{}", unique("view").to_lowercase());
    let mut nodes = [
        kube::SimNode::new(&k, &[(&sel, "yes")]),
        kube::SimNode::new(&k, &[(&sel, "yes")]),
        kube::SimNode::without_agent(&k, &[(&sel, "yes")]),
    ];
    let app = unique("view-").to_lowercase();
    let _cleanup = kube::Cleanup {
        k: &k,
        apps: vec![app.clone()],
        namespace: None,
    };
    let web = free_port();
    let ns = kube::lease_namespace(&k);
    let operator = kube::Operator::start_with_args(
        &k.kubeconfig,
        &ns,
        &unique("op-web-"),
        &["--web", &web.to_string()],
    );
    k.ok(
        &["apply", "-f", "-"],
        Some(&paused_rollout_app(&app, &sel, 1)),
    );

    // The JSON: the application's row, a cell per selected node, the agent-less one named.
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let row = || -> Option<Value> {
        let text = std::net::TcpStream::connect(web)
            .ok()
            .map(|_| http(web, "GET", "/api/cluster", &web.to_string()))?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        let v: Value = serde_json::from_str(body).ok()?;
        v["applications"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == app.as_str())
            .cloned()
    };
    let cells_are = |want: [&str; 3]| {
        row().is_some_and(|r| {
            names
                .iter()
                .zip(want)
                .all(|(n, w)| r["cells"][n.as_str()]["state"] == w)
        })
    };
    assert!(
        eventually(60, || cells_are(["ready", "ready", "no-agent"])),
        "row: {:?}\n{}",
        row(),
        operator.log_text()
    );
    let view = get_json(web, "/api/cluster");
    let col = |n: &str| {
        view["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|c| c["name"] == n).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(col(&names[0])["agent"], "running", "{view}");
    assert_eq!(col(&names[2])["agent"], "missing", "{view}");
    // The page and its script are the operator's; the host view's JSON is not.
    let page = http(web, "GET", "/", &web.to_string());
    assert!(page.contains("/cluster.js"), "{page}");
    assert!(http(web, "GET", "/api/host", &web.to_string()).starts_with("HTTP/1.1 404"));

    let steps = drive(
        "cluster.mjs",
        &dir,
        &[
            ("APIARY_WEB_URL", format!("http://{web}/")),
            ("APIARY_WEB_APP", app.clone()),
            ("APIARY_WEB_NODES", names.join(",")),
        ],
        |step| match step {
            "start" => nodes[2].start(&k),
            "rollout" => {
                k.ok(
                    &["apply", "-f", "-"],
                    Some(&paused_rollout_app(&app, &sel, 2)),
                );
            }
            other => panic!("unknown step {other:?}"),
        },
    );
    assert_eq!(steps, ["start", "rollout"]);
    assert_screenshots(&["5-cluster.png", "6-rollout.png"]);
    // What the page drew is what the JSON says: one node on the target revision.
    let r = row().expect("the row");
    assert_eq!(r["rollout"]["updated"], 1, "{r}");
    assert_eq!(r["rollout"]["total"], 3, "{r}");
}

#[test]
fn the_json_is_read_only_and_served_to_loopback_names_only() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let (d, web, ids) = chain_of_three(&a, &net);
    assert!(net.ping(5));

    let host = get_json(web, "/api/host");
    let iface = host["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["iface"] == net.if_b.as_str())
        .unwrap_or_else(|| panic!("no {} in {host}", net.if_b));
    assert!(
        iface["netns"].as_str().unwrap_or("").ends_with(&net.ns_b),
        "{iface}"
    );
    let hook = &iface["hooks"][0];
    assert_eq!(hook["hook"], "xdp");
    assert_eq!(hook["chain"], true);
    let slots = hook["programs"].as_array().expect("programs");
    let order: Vec<i64> = slots
        .iter()
        .map(|s| s["program_id"].as_i64().unwrap())
        .collect();
    assert_eq!(order, ids);
    let prios: Vec<i64> = slots
        .iter()
        .map(|s| s["priority"].as_i64().unwrap())
        .collect();
    assert_eq!(prios, [10, 20, 30]);
    // The pings went through all three (none of them drops ICMP).
    for s in slots {
        assert!(s["runs"].as_u64().unwrap() >= 5, "{s}");
        assert!(s["verdicts"]["pass"].as_u64().unwrap_or(0) >= 5, "{s}");
    }
    // Each program with its own counter map, which the map endpoint decodes.
    let brief = &host["programs"][ids[0].to_string()];
    assert_eq!(brief["name"], "xdp_counter");
    let maps = brief["maps"].as_array().expect("maps");
    assert!(!maps.is_empty(), "{brief}");
    let detail = get_json(web, &format!("/api/program/{}", ids[0]));
    assert_eq!(detail["name"], "xdp_counter");
    // (The kernel's run count of a chain member stays 0: the dispatcher runs a copy of its
    // instructions, so the slot counters above are the ones that count.)
    assert_eq!(detail["kernel"]["name"], "xdp_counter", "{detail}");
    assert!(detail["attach_points"][0]
        .as_str()
        .unwrap_or("")
        .contains(&net.if_b));
    let hits = detail["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "hits")
        .unwrap_or_else(|| panic!("no hits map in {detail}"));
    let dump = get_json(web, &format!("/api/map/{}", hits["kernel_id"]));
    assert_eq!(dump["decoded"], true, "{dump}");
    assert!(
        dump["entries"][0]["value"].as_u64().unwrap_or(0) >= 5,
        "{dump}"
    );

    // Links off any interface are grouped by family; programs without a link are listed too.
    let minimal = fixture("minimal");
    let tp = on(
        &a,
        &d,
        &[
            "load",
            "file",
            "--path",
            minimal.to_str().unwrap(),
            "tracepoint",
            "--tracepoint",
            "syscalls/sys_enter_getppid",
        ],
    );
    let tp_id = tp[0]["id"].as_i64().expect("id");
    let loose = on(
        &a,
        &d,
        &["load", "file", "--path", minimal.to_str().unwrap()],
    );
    let loose_id = loose[0]["id"].as_i64().expect("id");
    let host = get_json(web, "/api/host");
    let group = |kind: &str| -> Vec<Value> {
        host["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["kind"] == kind)
            .unwrap_or_else(|| panic!("no group {kind} in {host}"))["programs"]
            .as_array()
            .expect("programs")
            .clone()
    };
    let tps = group("tracepoints");
    assert_eq!(tps.len(), 1, "{host}");
    assert_eq!(tps[0]["program_id"].as_i64(), Some(tp_id));
    assert!(
        tps[0]["attach_point"]
            .as_str()
            .unwrap_or("")
            .contains("sys_enter_getppid"),
        "{host}"
    );
    let loose_ids: Vec<i64> = group("not attached")
        .iter()
        .filter_map(|p| p["program_id"].as_i64())
        .collect();
    assert_eq!(loose_ids, [loose_id], "{host}");
    for id in [tp_id, loose_id] {
        on(&a, &d, &["unload", "--force", &id.to_string()]);
    }

    // The page and its assets, self-contained.
    let page = http(web, "GET", "/", &web.to_string());
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'self'"));
    assert!(page.contains("<script src=\"/app.js\">"));
    for asset in ["/app.js", "/style.css", "/icon.svg"] {
        assert!(
            http(web, "GET", asset, "localhost").starts_with("HTTP/1.1 200 OK"),
            "{asset}"
        );
    }
    assert!(http(web, "GET", "/api/program/999999", "localhost").starts_with("HTTP/1.1 404"));
    assert!(http(web, "GET", "/api/program/x", "localhost").starts_with("HTTP/1.1 400"));
    assert!(http(web, "GET", "/nope", "localhost").starts_with("HTTP/1.1 404"));
    // Read-only.
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = http(web, m, "/api/host", "localhost");
        assert!(r.starts_with("HTTP/1.1 405"), "{m}: {r}");
    }
    // A page of another site whose name resolves to 127.0.0.1 is refused.
    let r = http(web, "GET", "/api/host", "attacker.example:80");
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    assert!(!r.contains("xdp_counter"));
    for id in &ids {
        on(&a, &d, &["unload", "--force", &id.to_string()]);
    }
}

#[test]
fn a_non_loopback_web_address_is_refused() {
    let a = Apiary::new();
    let r = a.run(&[
        "serve",
        "--socket",
        a.state.path().join("s.sock").to_str().unwrap(),
        "--web",
        "0.0.0.0:8080",
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("loopback") && r.stderr.contains("SSH tunnel"),
        "{}",
        r.stderr
    );
    // The operator's cluster view follows the same rules, before it talks to any cluster.
    let r = a.run(&["operator", "--web", "0.0.0.0:8080"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("loopback"), "{}", r.stderr);
    let r = a.run(&[
        "operator",
        "--web",
        "0.0.0.0:8080",
        "--web-tls-cert",
        "c.pem",
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains("--web-tls-key"), "{}", r.stderr);
}

/// `curl` over HTTPS trusting the test CA: (status code, body); status 0 when no HTTP answer
/// came (refused handshake).
fn curl(ca: &Path, url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn beyond_loopback_the_view_needs_tls_and_a_client_certificate_or_the_token() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let pki = make_pki();
    let token = "web-token-0123456789abcdef";
    std::fs::write(pki.path("token"), format!("{token}\n")).unwrap();
    let web = free_port();
    let p = |n: &str| pki.path(n).display().to_string();
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            extra: vec![
                "--web".into(),
                web.to_string(),
                "--web-tls-cert".into(),
                p("server.pem"),
                "--web-tls-key".into(),
                p("server.key"),
                "--web-client-ca".into(),
                p("ca.pem"),
                "--web-token-file".into(),
                p("token"),
            ],
            ..Default::default()
        },
    );
    let ca = pki.path("ca.pem");
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", web.port());
    let host_json = |(code, body): (u16, String)| {
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(v["interfaces"].is_array(), "{v}");
    };

    // Plain HTTP gets no page: an error or an answer without the view.
    let plain = try_http(web, "GET", "/api/host", "localhost");
    assert!(
        plain
            .as_ref()
            .map_or(true, |p| !p.contains("\"interfaces\"")),
        "{plain:?}"
    );
    // TLS without credentials: refused, and told what would do.
    let (code, body) = curl(&ca, &url("/api/host"), &[]);
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("/login?token=") && body.contains("client certificate"),
        "{body}"
    );
    let (code, _) = curl(&ca, &url("/"), &[]);
    assert_eq!(code, 401);
    // The token as a bearer header; a wrong one is refused.
    host_json(curl(
        &ca,
        &url("/api/host"),
        &["-H", &format!("Authorization: Bearer {token}")],
    ));
    let (code, _) = curl(
        &ca,
        &url("/api/host"),
        &["-H", "Authorization: Bearer web-token-0123456789abcdeX"],
    );
    assert_eq!(code, 401);
    // A browser: /login sets the cookie (Secure, HttpOnly) and sends it to the page.
    let jar = pki.path("cookies");
    let jar_s = jar.display().to_string();
    let (code, _) = curl(&ca, &url("/login?token=nope"), &["-c", &jar_s]);
    assert_eq!(code, 401);
    let (code, _) = curl(&ca, &url(&format!("/login?token={token}")), &["-c", &jar_s]);
    assert_eq!(code, 303);
    let cookies = std::fs::read_to_string(&jar).unwrap();
    assert!(
        cookies.contains("#HttpOnly_") && cookies.contains("__Host-apiary-web"),
        "{cookies}"
    );
    host_json(curl(&ca, &url("/api/host"), &["-b", &jar_s]));
    let (code, page) = curl(&ca, &url("/"), &["-b", &jar_s]);
    assert!(code == 200 && page.contains("<html"), "{code}: {page}");
    // A client certificate of the CA admits; one of another CA fails the handshake.
    host_json(curl(
        &ca,
        &url("/api/host"),
        &["--cert", &p("client.pem"), "--key", &p("client.key")],
    ));
    let (code, body) = curl(
        &ca,
        &url("/api/host"),
        &["--cert", &p("intruder.pem"), "--key", &p("intruder.key")],
    );
    assert_eq!(code, 0, "a certificate of another CA was accepted: {body}");
    // Still read-only with credentials.
    let (code, _) = curl(
        &ca,
        &url("/api/host"),
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    );
    assert_eq!(code, 405);
    drop(d);
}

#[test]
fn a_web_token_that_is_too_short_or_tls_without_credentials_stops_the_start() {
    let a = Apiary::new();
    let pki = make_pki();
    std::fs::write(pki.path("token"), "short\n").unwrap();
    let p = |n: &str| pki.path(n).display().to_string();
    let serve = |extra: &[String]| {
        Run::from(
            a.cmd()
                .args(["serve", "--socket"])
                .arg(a.state.path().join("s.sock"))
                .args(["--web", "0.0.0.0:0"])
                .args(extra)
                .output()
                .expect("run apiary serve"),
        )
    };
    let tls = vec![
        "--web-tls-cert".into(),
        p("server.pem"),
        "--web-tls-key".into(),
        p("server.key"),
    ];
    let r = serve(&tls);
    assert!(
        !r.ok && r.stderr.contains("--web-client-ca") && r.stderr.contains("--web-token-file"),
        "{}",
        r.stderr
    );
    let mut with_token = tls.clone();
    with_token.extend(["--web-token-file".into(), p("token")]);
    let r = serve(&with_token);
    assert!(
        !r.ok && r.stderr.contains("at least 16 characters"),
        "{}",
        r.stderr
    );
    let r = serve(&[]);
    assert!(!r.ok && r.stderr.contains("loopback"), "{}", r.stderr);
}
