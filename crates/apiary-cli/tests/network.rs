//! XDP, TC and TCX programs counting and dropping pings between two network namespaces.

mod common;

use common::*;

#[test]
fn xdp_counts_then_drops_pings() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("net");
    let p = obj.to_str().unwrap();
    let counter = a.load_one(&["--path", p, "--programs", "xdp:xdp_count"]);
    let link = a.attach(
        counter,
        &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b],
    );
    assert!(net.ping(5), "an XDP program that passes lets pings through");
    assert!(a.counter(&format!("{counter}:packets"), 0) >= 5);

    // An XDP program that this apiary does not manage (here: another instance's) holds the
    // interface after ours is gone: joining is refused with a clear error.
    a.ok(&["detach", &link.to_string()]);
    let other = Apiary::new();
    let theirs = other.load_one(&["--path", p, "--programs", "xdp:xdp_count"]);
    other.attach(theirs, &["xdp", "--iface", &net.if_b, "--netns", &net.ns_b]);
    let dropper = a.load_one(&[
        "--path",
        p,
        "--programs",
        "xdp:xdp_count",
        "--set",
        "verdict=1",
    ]);
    let e = a.fails(&[
        "attach",
        &dropper.to_string(),
        "xdp",
        "--iface",
        &net.if_b,
        "--netns",
        &net.ns_b,
    ]);
    assert!(
        e.contains("already in use") && e.contains("does not manage"),
        "{e}"
    );
    other.ok(&["unload", "--force", &theirs.to_string()]);

    a.attach(
        dropper,
        &[
            "xdp", "--iface", &net.if_b, "--netns", &net.ns_b, "--mode", "skb",
        ],
    );
    assert!(!net.ping(3), "the dropper drops ICMP");
    assert!(
        a.counter(&format!("{dropper}:packets"), 0) >= 3,
        "and counted what it dropped"
    );
    a.ok(&["unload", "--force", &dropper.to_string()]);
    assert!(net.ping(2), "traffic flows again after unload");
}

#[test]
fn tc_ingress_and_egress_count_and_drop() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("net");
    let p = obj.to_str().unwrap();
    // SEC("tc") and SEC("classifier") alike; ingress in a chain (TCX dispatcher), egress as a
    // legacy cls_bpf filter.
    let ing = a.load_one(&["--path", p, "--programs", "tc:tc_count"]);
    let egr = a.load_one(&["--path", p, "--programs", "tc:cls_count"]);
    a.attach(
        ing,
        &[
            "tc",
            "--iface",
            &net.if_b,
            "--direction",
            "ingress",
            "--netns",
            &net.ns_b,
        ],
    );
    let egr_link = a.attach(
        egr,
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
    let e = a.fails(&[
        "attach",
        &ing.to_string(),
        "tc",
        "--iface",
        &net.if_b,
        "--direction",
        "egress",
        "--netns",
        &net.ns_b,
        "--legacy",
    ]);
    assert!(
        e.contains("already in use"),
        "one legacy filter per hook: {e}"
    );
    assert!(net.ping(4));
    assert!(
        a.counter(&format!("{ing}:packets"), 0) >= 4,
        "ingress saw the echo requests"
    );
    assert!(
        a.counter(&format!("{egr}:packets"), 0) >= 4,
        "egress saw the replies"
    );

    // Replace the egress counter with one that shoots ICMP, in a chain: replies never leave.
    a.ok(&["detach", &egr_link.to_string()]);
    let shot = a.load_one(&[
        "--path",
        p,
        "--programs",
        "tc:tc_count",
        "--set",
        "tc_verdict=2",
    ]);
    a.attach(
        shot,
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
    assert!(!net.ping(2), "TC_ACT_SHOT on egress drops the replies");
    assert!(a.counter(&format!("{shot}:packets"), 0) >= 2);
}

#[test]
fn tcx_runs_in_priority_order() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("net");
    let p = obj.to_str().unwrap();
    let tcx = |prio: &str, id: i64| {
        a.attach(
            id,
            &[
                "tcx",
                "--iface",
                &net.if_b,
                "--direction",
                "ingress",
                "--priority",
                prio,
                "--netns",
                &net.ns_b,
            ],
        )
    };
    // A counter that passes to the next program, and a dropper.
    let counter = a.load_one(&["--path", p, "--programs", "tcx:tcx_count"]);
    let dropper = a.load_one(&[
        "--path",
        p,
        "--programs",
        "tcx:tcx_count",
        "--set",
        "tcx_verdict=2",
    ]);
    let l_drop = tcx("10", dropper);
    tcx("20", counter);
    assert!(!net.ping(3), "the dropper (priority 10) runs first");
    assert_eq!(
        a.counter(&format!("{counter}:packets"), 0),
        0,
        "so the counter never sees a packet"
    );
    assert!(a.counter(&format!("{dropper}:packets"), 0) >= 3);

    // Re-attach the dropper behind the counter: now the counter sees every packet first.
    a.ok(&["detach", &l_drop.to_string()]);
    tcx("30", dropper);
    let before = a.counter(&format!("{dropper}:packets"), 0);
    assert!(!net.ping(3));
    assert!(
        a.counter(&format!("{counter}:packets"), 0) >= 3,
        "counter (20) now runs before the dropper (30)"
    );
    assert!(a.counter(&format!("{dropper}:packets"), 0) >= before + 3);

    // A third program with a priority between them lands between them.
    let middle = a.load_one(&["--path", p, "--programs", "tcx:tcx_count"]);
    tcx("25", middle);
    assert!(!net.ping(2));
    assert!(
        a.counter(&format!("{middle}:packets"), 0) >= 2,
        "priority 25 runs before the dropper at 30"
    );
}

/// A netfilter program on the input hook of a network namespace counts pings, and a dropping
/// one at a lower priority stops them.
#[test]
fn netfilter_counts_then_drops_pings_in_a_netns() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("netfilter");
    let p = obj.to_str().unwrap();
    let counter = a.load_one(&["--path", p]);
    let link = a.attach(
        counter,
        &[
            "netfilter",
            "--hook",
            "input",
            "--family",
            "ipv4",
            "--priority",
            "10",
            "--netns",
            &net.ns_b,
        ],
    );
    let l = a.json(&["get", "link", &link.to_string()]);
    assert!(
        l["attach_point"]
            .as_str()
            .unwrap()
            .starts_with("netfilter ipv4 input prio=10"),
        "{l}"
    );
    assert!(net.ping(3), "an accepting program lets pings through");
    let counts = format!("{counter}:nf_packets");
    assert!(a.counter(&counts, 0) >= 3, "it saw the echo requests");

    // The same priority on the same hook is taken.
    let dropper = a.load_one(&["--path", p, "--set", "verdict=0"]);
    let e = a.fails(&[
        "attach",
        &dropper.to_string(),
        "netfilter",
        "--hook",
        "input",
        "--priority",
        "10",
        "--netns",
        &net.ns_b,
    ]);
    assert!(e.contains("priority 10") || e.contains("in use"), "{e}");
    a.attach(
        dropper,
        &[
            "netfilter",
            "--hook",
            "input",
            "--priority",
            "-5",
            "--netns",
            &net.ns_b,
        ],
    );
    let before = a.counter(&counts, 0);
    assert!(!net.ping(2), "the dropper runs first and drops");
    assert_eq!(a.counter(&counts, 0), before, "dropped before the counter");
    let e = a.fails(&[
        "attach",
        &dropper.to_string(),
        "netfilter",
        "--hook",
        "sideways",
        "--priority",
        "1",
    ]);
    assert!(e.contains("unknown netfilter hook"), "{e}");
}
