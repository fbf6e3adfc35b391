//! `apiary update`: new code, same maps, same attach points, no gap.

mod common;

use common::*;

#[test]
fn update_keeps_the_counter_and_changes_behaviour() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    let link = a.attach(
        id,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let map = format!("{id}:counts");
    std::process::Command::new(apiary_fixtures::uprobe_target())
        .arg("3")
        .output()
        .unwrap();
    let before = a.counter(&map, 0);
    assert!(before >= 3);
    let old = a.json(&["get", "program", &id.to_string()]);

    let r = a.json(&[
        "update",
        &id.to_string(),
        "--path",
        fixture("minimal_v2").to_str().unwrap(),
    ]);
    assert_eq!(r["links_updated"], 1);
    assert_eq!(r["maps_kept"], 1);
    assert_ne!(r["new_kernel_id"], r["old_kernel_id"]);
    let after_update = a.counter(&map, 0);
    assert!(
        after_update >= before,
        "the map kept its value: {before} -> {after_update}"
    );
    std::process::Command::new(apiary_fixtures::uprobe_target())
        .arg("3")
        .output()
        .unwrap();
    let after = a.counter(&map, 0);
    assert!(
        after >= after_update + 3000,
        "the new code adds 1000 per call: {after_update} -> {after}"
    );

    let new = a.json(&["get", "program", &id.to_string()]);
    assert_eq!(new["links"], serde_json::json!([link]), "same link id");
    assert_eq!(new["kernel"]["id"], r["new_kernel_id"]);
    assert_ne!(new["tag"], old["tag"]);
    let old_kid = old["kernel_id"].as_u64().unwrap();
    assert!(
        eventually(5, || !Apiary::kernel_prog_ids().contains(&old_kid)),
        "the old code was freed"
    );
}

#[test]
fn mismatched_map_refuses_the_update_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    a.attach(
        id,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let before = (
        a.json(&["get", "program", &id.to_string()]),
        a.json(&["list", "links"]),
        a.pins(),
    );
    let e = a.fails(&[
        "update",
        &id.to_string(),
        "--path",
        fixture("minimal_badmap").to_str().unwrap(),
    ]);
    assert!(
        e.contains("map counts does not match") && e.contains("value size 8 -> 4"),
        "{e}"
    );
    let after = (
        a.json(&["get", "program", &id.to_string()]),
        a.json(&["list", "links"]),
        a.pins(),
    );
    assert_eq!(before.0["kernel_id"], after.0["kernel_id"]);
    assert_eq!(before.0["tag"], after.0["tag"]);
    assert_eq!(before.1, after.1);
    assert_eq!(before.2, after.2);
    let e = a.fails(&[
        "update",
        &id.to_string(),
        "--path",
        fixture("net").to_str().unwrap(),
    ]);
    assert!(e.contains("has no program \"count_getppid\""), "{e}");
}

#[test]
fn xdp_and_tc_programs_switch_in_place_under_traffic() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("net");
    let p = obj.to_str().unwrap();
    let xdp = a.load_one(&["--path", p, "--programs", "xdp:xdp_count"]);
    a.attach(xdp, &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b]);
    assert!(net.ping(3));
    let counted = a.counter(&format!("{xdp}:packets"), 0);
    // Same code, new global: the link switches to a program that drops ICMP.
    a.ok(&[
        "update",
        &xdp.to_string(),
        "--path",
        p,
        "--set",
        "verdict=1",
    ]);
    assert!(!net.ping(2), "the updated XDP program drops");
    assert!(
        a.counter(&format!("{xdp}:packets"), 0) >= counted + 2,
        "and counts into the same map"
    );
    a.ok(&[
        "update",
        &xdp.to_string(),
        "--path",
        p,
        "--set",
        "verdict=2",
    ]);
    assert!(net.ping(2), "and back");

    let tc = a.load_one(&["--path", p, "--programs", "tc:tc_count"]);
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
        ],
    );
    assert!(net.ping(2));
    a.ok(&[
        "update",
        &tc.to_string(),
        "--path",
        p,
        "--set",
        "tc_verdict=2",
    ]);
    assert!(!net.ping(2), "the replaced tc filter shoots the replies");
}
