//! The daemon survives its own death: `kill -9` and a restart, a "reboot" (bpffs wiped while it
//! was down), and kills at random points while it works. On start it reconciles the store with
//! the kernel; afterwards everything recorded is listed and proven running, nothing is leaked.

mod common;

use common::daemon::{Daemon, DaemonOpts};
use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::process::Command;

fn via(a: &Apiary, d: &Daemon, args: &[&str]) -> Run {
    let out = a
        .cmd()
        .arg("--endpoint")
        .arg(d.endpoint())
        .args(args)
        .output()
        .expect("run apiary");
    Run::from(out)
}

fn json(a: &Apiary, d: &Daemon, args: &[&str]) -> Value {
    let mut v = args.to_vec();
    v.extend(["-o", "json"]);
    let r = via(a, d, &v);
    assert!(
        r.ok,
        "apiary {args:?} via the daemon failed:\n{}{}\n{}",
        r.stdout,
        r.stderr,
        d.log_text()
    );
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
}

fn kill9(d: &Daemon) {
    // SAFETY: signalling the daemon this test started.
    unsafe {
        libc::kill(d.pid() as i32, libc::SIGKILL);
    }
}

fn counter(a: &Apiary, d: &Daemon, map: &str) -> u64 {
    let v = json(a, d, &["map", "dump", map]);
    v["entries"][0]["value"].as_u64().unwrap_or(0)
}

/// Programs and a chain, made through the daemon. Returns (counter program, chain programs).
fn populate(a: &Apiary, d: &Daemon, net: &NetPair) -> (i64, Vec<i64>) {
    let load = |args: &[&str]| -> i64 {
        let mut v = vec!["load", "file"];
        v.extend(args);
        json(a, d, &v)[0]["id"].as_i64().unwrap()
    };
    let minimal = fixture("minimal");
    let chain_obj = fixture("chain_basic");
    let tp = load(&["--path", minimal.to_str().unwrap()]);
    json(
        a,
        d,
        &[
            "attach",
            &tp.to_string(),
            "tracepoint",
            "--tracepoint",
            "syscalls/sys_enter_getppid",
        ],
    );
    let mut chain = Vec::new();
    for prio in ["10", "20"] {
        let id = load(&[
            "--path",
            chain_obj.to_str().unwrap(),
            "--programs",
            "xdp:xdp_count_pass",
        ]);
        json(
            a,
            d,
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
        chain.push(id);
    }
    (tp, chain)
}

fn prove_running(a: &Apiary, d: &Daemon, net: &NetPair, tp: i64, chain: &[i64]) {
    let before = counter(a, d, &format!("{tp}:counts"));
    Command::new(apiary_fixtures::uprobe_target())
        .arg("3")
        .output()
        .unwrap();
    assert!(
        counter(a, d, &format!("{tp}:counts")) >= before + 3,
        "the tracepoint program runs"
    );
    let hits: Vec<u64> = chain
        .iter()
        .map(|c| counter(a, d, &format!("{c}:hits")))
        .collect();
    assert!(net.ping(3));
    for (c, h) in chain.iter().zip(hits) {
        assert!(
            counter(a, d, &format!("{c}:hits")) >= h + 3,
            "chain program {c} runs"
        );
    }
    let ch = json(
        a,
        d,
        &["get", "chain", &net.if_b, "xdp", "--netns", &net.ns_b],
    );
    let order: Vec<i64> = ch["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["program_id"].as_i64().unwrap())
        .collect();
    assert_eq!(order, chain, "the chain keeps its order");
}

#[test]
fn kill_nine_and_restart_keeps_everything_listed_and_running() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let (tp, chain) = populate(&a, &d, &net);
    let before = json(&a, &d, &["list", "programs"]);
    kill9(&d);
    drop(d);
    // Programs run on without the daemon: they are pinned.
    assert!(net.ping(2));
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    assert_eq!(
        json(&a, &d, &["list", "programs"]),
        before,
        "the same programs, same kernel objects"
    );
    prove_running(&a, &d, &net, tp, &chain);
}

#[test]
fn a_reboot_is_reconciled_when_the_daemon_starts() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let (tp, chain) = populate(&a, &d, &net);
    let listed = json(&a, &d, &["list", "programs"]);
    let ids: Vec<Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    let old: Vec<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kernel_id"].as_u64().unwrap())
        .collect();
    kill9(&d);
    drop(d);
    // The "reboot": bpffs is empty again, so the kernel drops every program, map and link.
    std::fs::remove_dir_all(&a.bpffs).unwrap();
    assert!(eventually(10, || {
        let live = Apiary::kernel_prog_ids();
        old.iter().all(|k| !live.contains(k))
    }));
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    assert!(
        eventually(10, || d.log_text().contains("reconcil")),
        "the daemon reports its reconcile: {}",
        d.log_text()
    );
    let after: Vec<Value> = json(&a, &d, &["list", "programs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(after, ids);
    for id in &after {
        let g = json(&a, &d, &["get", "program", &id.to_string()]);
        assert!(
            g["kernel"].is_object(),
            "program {id} is back in the kernel: {g}"
        );
    }
    // The restore ran on several threads with loader processes of their own; they are gone once
    // it is done, and the daemon keeps its one loader process.
    let loaders = children(d.pid());
    assert!(
        loaders.len() <= 1,
        "loader processes left after the restore: {loaders:?}"
    );
    prove_running(&a, &d, &net, tp, &chain);
}

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the comm may hold spaces, so split after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

#[test]
fn killing_the_daemon_at_random_points_leaks_nothing() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("minimal");
    let p = obj.to_str().unwrap();
    let kernel_before: HashSet<u64> = Apiary::kernel_prog_ids().into_iter().collect();
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let mut kills = 0;
    for op in 0..110 {
        let ids: Vec<String> = json(&a, &d, &["list", "programs"])
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].to_string())
            .collect();
        let links: Vec<String> = json(&a, &d, &["list", "links"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].to_string())
            .collect();
        let args: Vec<String> = match next() % 4 {
            0 | 1 => vec!["load".into(), "file".into(), "--path".into(), p.into()],
            2 if !ids.is_empty() => vec![
                "attach".into(),
                ids[(next() % ids.len() as u64) as usize].clone(),
                "tracepoint".into(),
                "--tracepoint".into(),
                "syscalls/sys_enter_getppid".into(),
            ],
            3 if !links.is_empty() => vec![
                "detach".into(),
                links[(next() % links.len() as u64) as usize].clone(),
            ],
            _ if !ids.is_empty() => vec![
                "unload".into(),
                "--force".into(),
                ids[(next() % ids.len() as u64) as usize].clone(),
            ],
            _ => continue,
        };
        let mut child = a
            .cmd()
            .arg("--endpoint")
            .arg(d.endpoint())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if op % 3 == 0 {
            // Kill the daemon somewhere inside the request it is serving.
            std::thread::sleep(std::time::Duration::from_micros(500 + next() % 8_000));
            kill9(&d);
            kills += 1;
            let _ = child.wait();
            drop(d);
            d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
        } else {
            let _ = child.wait();
        }
    }
    assert!(kills >= 30);
    // A last restart reconciles; then store, pins and kernel agree.
    kill9(&d);
    drop(d);
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let programs = json(&a, &d, &["list", "programs"]);
    let live = Apiary::kernel_prog_ids();
    let mut ours = HashSet::new();
    for prog in programs.as_array().unwrap() {
        let g = json(&a, &d, &["get", "program", &prog["id"].to_string()]);
        let kid = g["kernel"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("recorded but not in the kernel: {g}"));
        assert!(live.contains(&kid));
        ours.insert(kid);
    }
    let links = json(&a, &d, &["list", "links"]);
    let n_links: usize = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kernel_link_ids"].as_array().unwrap().len())
        .sum();
    let n_maps = json(&a, &d, &["list", "maps"]).as_array().unwrap().len();
    assert_eq!(
        a.pins().len(),
        programs.as_array().unwrap().len() + n_links + n_maps,
        "no orphan pins: {:?}",
        a.pins()
    );
    let leaked = || {
        Apiary::kernel_prog_ids()
            .into_iter()
            .filter(|k| !kernel_before.contains(k) && !ours.contains(k))
            .filter(|k| {
                let out = Command::new("bpftool")
                    .args(["prog", "show", "id", &k.to_string()])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("count_getppid")
            })
            .count()
    };
    assert!(eventually(10, || leaked() == 0), "a program was leaked");
}
