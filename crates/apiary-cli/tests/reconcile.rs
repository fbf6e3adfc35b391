//! Reconcile after a "reboot" (bpffs wiped behind apiary's back) and after processes killed at
//! random points: the store and the kernel end up agreeing, and nothing is leaked.

mod common;

use common::*;
use std::collections::HashSet;
use std::process::Command;

fn getppid_calls(n: u32) {
    Command::new(apiary_fixtures::uprobe_target())
        .arg(n.to_string())
        .output()
        .unwrap();
}

#[test]
fn everything_comes_back_after_bpffs_is_wiped() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let minimal = fixture("minimal");
    let chain_obj = fixture("chain_basic");
    let net_obj = fixture("net");
    let owner = a.load_one(&["--path", minimal.to_str().unwrap()]);
    let borrower = a.load_one(&[
        "--path",
        minimal.to_str().unwrap(),
        "--map-owner-id",
        &owner.to_string(),
        "--set",
        "increment=3",
    ]);
    a.attach(
        borrower,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let c1 = a.load_one(&[
        "--path",
        chain_obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    let c2 = a.load_one(&[
        "--path",
        chain_obj.to_str().unwrap(),
        "--programs",
        "xdp:xdp_drop_port",
    ]);
    a.attach(
        c1,
        &[
            "xdp",
            "--iface",
            &net.if_b,
            "--netns",
            &net.ns_b,
            "--priority",
            "10",
        ],
    );
    a.attach(
        c2,
        &[
            "xdp",
            "--iface",
            &net.if_b,
            "--netns",
            &net.ns_b,
            "--priority",
            "20",
        ],
    );
    let tc = a.load_one(&[
        "--path",
        net_obj.to_str().unwrap(),
        "--programs",
        "tc:tc_count",
    ]);
    a.attach(
        tc,
        &[
            "tc",
            "--iface",
            &net.if_b,
            "--direction",
            "egress",
            "--netns",
            &net.ns_b,
            "--legacy",
        ],
    );
    let before = a.json(&["list", "programs"]);
    let old_kids: Vec<u64> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kernel_id"].as_u64().unwrap())
        .collect();
    assert!(
        a.ok(&["reconcile"]).contains("restored programs: none"),
        "a healthy state needs nothing"
    );

    // The "reboot": every pin gone (and the legacy tc filter, which lives in the qdisc), so the
    // kernel frees every program, map and link.
    std::fs::remove_dir_all(&a.bpffs).unwrap();
    let ok = Command::new("tc")
        .args(["-n", &net.ns_b, "qdisc", "del", "dev", &net.if_b, "clsact"])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(
        eventually(10, || {
            let live = Apiary::kernel_prog_ids();
            old_kids.iter().all(|k| !live.contains(k))
        }),
        "the wipe unloaded everything"
    );

    let r = a.json(&["reconcile"]);
    assert_eq!(r["restored_programs"].as_array().unwrap().len(), 5, "{r}");
    assert_eq!(r["reattached_links"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["rebuilt_chains"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");

    // Same ids, new kernel objects, and all of it running again.
    let after = a.json(&["list", "programs"]);
    assert_eq!(
        after
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect::<Vec<_>>(),
        before
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].clone())
            .collect::<Vec<_>>()
    );
    let live = Apiary::kernel_prog_ids();
    for p in after.as_array().unwrap() {
        assert!(live.contains(&p["kernel_id"].as_u64().unwrap()), "{p}");
    }
    getppid_calls(4);
    let v = a.counter(&format!("{owner}:counts"), 0);
    assert!(
        v >= 12 && v.is_multiple_of(3),
        "the borrower runs again, into the owner's map, with its global: {v}"
    );
    assert!(net.ping(3), "the XDP chain passes pings");
    assert!(
        a.counter(&format!("{c1}:hits"), 0) >= 3,
        "and its first program counts them"
    );
    assert!(
        a.counter(&format!("{tc}:packets"), 0) >= 3,
        "the legacy tc filter is back on egress"
    );
    let ch = a.json(&["get", "chain", &net.if_b, "xdp", "--netns", &net.ns_b]);
    assert_eq!(ch["programs"].as_array().unwrap().len(), 2);
    assert!(
        a.ok(&["reconcile"]).contains("restored programs: none"),
        "reconcile is idempotent"
    );
}

#[test]
fn unknown_pins_are_removed_and_reported() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    let kid = a.json(&["get", "program", &id.to_string()])["kernel_id"]
        .as_u64()
        .unwrap();
    // A leftover that no record explains: the same program pinned under an unknown id.
    let stray = a.bpffs.join("programs").join("999");
    let ok = Command::new("bpftool")
        .args([
            "prog",
            "pin",
            "id",
            &kid.to_string(),
            stray.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let r = a.json(&["reconcile"]);
    assert_eq!(
        r["removed_unknown_pins"],
        serde_json::json!([stray.to_str().unwrap()]),
        "{r}"
    );
    assert!(!stray.exists());
    assert!(
        a.json(&["get", "program", &id.to_string()])["kernel"].is_object(),
        "the real program is untouched"
    );
}

#[test]
fn processes_killed_at_random_points_leave_a_consistent_state() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("minimal");
    let p = obj.to_str().unwrap();
    let kernel_before: HashSet<u64> = Apiary::kernel_prog_ids().into_iter().collect();
    // A deterministic pseudo-random sequence of kill delays (no rand dependency needed).
    let mut seed: u64 = 0x9E3779B97F4A7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut ops = 0;
    let mut killed = 0;
    while ops < 120 {
        let ids = a.program_ids();
        let links: Vec<i64> = a
            .json(&["list", "links"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_i64().unwrap())
            .collect();
        let args: Vec<String> = match next() % 4 {
            0 | 1 => vec!["load".into(), "file".into(), "--path".into(), p.into()],
            2 if !ids.is_empty() => {
                let id = ids[(next() % ids.len() as u64) as usize];
                vec![
                    "attach".into(),
                    id.to_string(),
                    "tracepoint".into(),
                    "--tracepoint".into(),
                    "syscalls/sys_enter_getppid".into(),
                ]
            }
            3 if !links.is_empty() => vec![
                "detach".into(),
                links[(next() % links.len() as u64) as usize].to_string(),
            ],
            _ if !ids.is_empty() => vec![
                "unload".into(),
                "--force".into(),
                ids[(next() % ids.len() as u64) as usize].to_string(),
            ],
            _ => continue,
        };
        let mut child = a
            .cmd()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill somewhere in the first ~12 ms, where a load or attach does its kernel and store work.
        std::thread::sleep(std::time::Duration::from_micros(next() % 12_000));
        if child.try_wait().unwrap().is_none() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            killed += 1;
        }
        let _ = child.wait();
        ops += 1;
    }
    assert!(
        killed >= 10,
        "the test killed processes mid-operation ({killed} of {ops})"
    );
    let r = a.json(&["reconcile"]);
    assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");

    // The store and the kernel agree: every record has its pins and kernel objects...
    let programs = a.json(&["list", "programs"]);
    let live = Apiary::kernel_prog_ids();
    let mut ours: HashSet<u64> = HashSet::new();
    for prog in programs.as_array().unwrap() {
        let id = prog["id"].as_i64().unwrap();
        let d = a.json(&["get", "program", &id.to_string()]);
        let kid = d["kernel"]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("program {id} has no kernel object: {d}"));
        assert!(live.contains(&kid));
        ours.insert(kid);
    }
    for l in a.json(&["list", "links"]).as_array().unwrap() {
        let lid = l["id"].as_i64().unwrap();
        for (i, _) in l["kernel_link_ids"].as_array().unwrap().iter().enumerate() {
            assert!(
                a.bpffs
                    .join("links")
                    .join(lid.to_string())
                    .join(i.to_string())
                    .exists(),
                "link {lid} pin"
            );
        }
    }
    // ...and every pin has a record (reconcile removed the rest), so nothing is leaked.
    let pins = a.pins();
    let n_links: usize = a
        .json(&["list", "links"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kernel_link_ids"].as_array().unwrap().len())
        .sum();
    let n_maps = a.json(&["list", "maps"]).as_array().unwrap().len();
    assert_eq!(
        pins.len(),
        programs.as_array().unwrap().len() + n_links + n_maps,
        "pins: {pins:?}"
    );
    assert!(a.ok(&["reconcile"]).contains("removed unknown pins: none"));
    // Kernel programs made during the test are either recorded or gone.
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
    // Other tests in parallel may load count_getppid; ours settle to zero, theirs come and go.
    assert!(
        eventually(10, || leaked() == 0),
        "a program of a killed process was leaked"
    );
}

/// A load killed between pinning its program and its maps leaves a live program whose map pin
/// is missing: reconcile pins the kernel's map again, the same map.
#[test]
fn a_missing_map_pin_beside_a_live_program_is_made_again() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    let before = a.json(&["get", "program", &id.to_string()])["maps"][0]["kernel_id"].clone();
    let pin = a.bpffs.join(format!("maps/{id}/counts"));
    std::fs::remove_file(&pin).expect("remove the map pin");
    let r = a.json(&["reconcile"]);
    assert_eq!(r["repinned_maps"], serde_json::json!([pin]), "{r}");
    assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
    assert!(pin.exists());
    let after = a.json(&["get", "program", &id.to_string()])["maps"][0]["kernel_id"].clone();
    assert_eq!(before, after, "the same kernel map");
    a.ok(&["map", "dump", &format!("{id}:counts")]);
}

#[test]
fn a_usdt_link_comes_back_after_bpffs_is_wiped() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let dir = tempfile::tempdir().unwrap();
    let target = apiary_fixtures::copy_usdt_target(dir.path());
    let fire = |n: u32| {
        let out = Command::new(&target).arg(n.to_string()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = a.load_one(&[
        "--path",
        fixture("usdt").to_str().unwrap(),
        "--programs",
        "usdt:on_hit",
    ]);
    a.attach(
        id,
        &[
            "usdt",
            "--target",
            target.to_str().unwrap(),
            "--provider",
            "apiary",
            "--name",
            "hit",
        ],
    );
    let old = a.json(&["get", "program", &id.to_string()])["kernel_id"]
        .as_u64()
        .unwrap();
    std::fs::remove_dir_all(&a.bpffs).unwrap();
    assert!(
        eventually(10, || !Apiary::kernel_prog_ids().contains(&old)),
        "the wipe unloaded the program"
    );
    let r = a.json(&["reconcile"]);
    assert_eq!(r["reattached_links"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
    // The restored program has a new, empty spec map: the reattach wrote its specs again.
    assert_eq!(fire(3), "enabled 3 sum 3003");
    let stats = format!("{id}:usdt_stats");
    assert_eq!(a.counter(&stats, 0), 3);
    assert_eq!(a.counter(&stats, 2), 3003);
}

/// The restore runs on several threads; programs that share maps (pinned by name, or borrowed
/// from a map owner) are restored one after another so they come back sharing one map, while
/// unrelated programs restore beside them.
#[test]
fn programs_sharing_maps_come_back_sharing_them_after_a_parallel_restore() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let by_name = fixture("pin_by_name");
    let minimal = fixture("minimal");
    let mut sharing = Vec::new();
    for _ in 0..3 {
        sharing.push(a.load_one(&["--path", by_name.to_str().unwrap()]));
    }
    let owner = a.load_one(&["--path", minimal.to_str().unwrap()]);
    let borrower = a.load_one(&[
        "--path",
        minimal.to_str().unwrap(),
        "--map-owner-id",
        &owner.to_string(),
    ]);
    // Unrelated programs, so that the groups above restore beside others.
    let mut alone = Vec::new();
    for _ in 0..6 {
        alone.push(a.load_one(&["--path", minimal.to_str().unwrap()]));
    }
    for p in sharing.iter().chain([&owner, &borrower]).chain(&alone) {
        a.attach(
            *p,
            &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
        );
    }

    std::fs::remove_dir_all(&a.bpffs).unwrap();
    let report = a.json(&["reconcile"]);
    assert_eq!(
        report["restored_programs"].as_array().map(Vec::len),
        Some(11),
        "{report}"
    );
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");

    let map_id = |p: i64, name: &str| -> serde_json::Value {
        a.json(&["get", "program", &p.to_string()])["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("program {p} has no map {name}"))["kernel_id"]
            .clone()
    };
    let shared = map_id(sharing[0], "shared_calls");
    for p in &sharing[1..] {
        assert_eq!(
            map_id(*p, "shared_calls"),
            shared,
            "program {p} shares by name"
        );
    }
    assert_eq!(
        map_id(owner, "counts"),
        map_id(borrower, "counts"),
        "the borrower uses its owner's map again"
    );
    // And they run, counting into the shared maps.
    getppid_calls(10);
    let by_name_count = a.counter(&format!("{}:shared_calls", sharing[0]), 0);
    assert!(
        by_name_count >= 30,
        "three programs count into one map: {by_name_count}"
    );
    let owned = a.counter(&format!("{owner}:counts"), 0);
    assert!(owned >= 10, "owner and borrower count: {owned}");
}
