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

/// Run `f` on a thread inside network namespace `ns` (setns changes only that thread).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with an open namespace fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns");
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// BPF_MAP_UPDATE_ELEM of a pinned map, key u32 0 → the socket fd (what an application does
/// to hand its socket to an sk_lookup program).
fn put_socket(pin: &std::path::Path, sock: i32) {
    use std::ffi::CString;
    let path = CString::new(pin.to_str().unwrap()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64; // pathname
                                    // SAFETY: BPF_OBJ_GET with a zeroed attr holding a NUL-terminated path.
    let map = unsafe { libc::syscall(libc::SYS_bpf, 7, attr.as_ptr(), 128) };
    assert!(map >= 0, "BPF_OBJ_GET {}", std::io::Error::last_os_error());
    let key = 0u32;
    let value = sock as u64;
    let mut attr = [0u64; 16];
    attr[0] = map as u64; // map_fd (low 32 bits)
    attr[1] = &key as *const u32 as u64;
    attr[2] = &value as *const u64 as u64;
    // SAFETY: BPF_MAP_UPDATE_ELEM with pointers to live key and value.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 2, attr.as_ptr(), 128) };
    assert_eq!(
        r,
        0,
        "BPF_MAP_UPDATE_ELEM {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: closing the map fd we opened.
    unsafe { libc::close(map as i32) };
}

/// sk_lookup steers connections to ports nobody listens on to the socket the test chose.
#[test]
fn sk_lookup_steers_connections_to_a_chosen_socket() {
    if !privileged() {
        return;
    }
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let a = Apiary::new();
    let net = NetPair::new();
    let connect = |port: u16| {
        in_netns(&net.ns_b, || {
            std::net::TcpStream::connect_timeout(
                &format!("127.0.0.1:{port}").parse().unwrap(),
                std::time::Duration::from_secs(2),
            )
        })
    };
    assert!(connect(7005).is_err(), "nothing listens on 7005");

    let listener = in_netns(&net.ns_b, || {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    });
    let id = a.load_one(&["--path", fixture("sk_lookup").to_str().unwrap()]);
    put_socket(
        &a.bpffs.join(format!("maps/{id}/target_socket")),
        listener.as_raw_fd(),
    );
    let link = a.attach(id, &["sk-lookup", "--netns", &net.ns_b]);

    let mut c = connect(7005).expect("steered to the chosen socket");
    c.write_all(b"hi").unwrap();
    let (mut s, _) = listener.accept().expect("accepted by the chosen socket");
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    assert_eq!(a.counter(&format!("{id}:steered"), 0), 1);
    // Outside the range, lookups go on as usual.
    assert!(connect(8000).is_err());

    a.ok(&["detach", &link.to_string()]);
    assert!(
        connect(7005).is_err(),
        "detached: nothing listens on 7005 again"
    );
}
