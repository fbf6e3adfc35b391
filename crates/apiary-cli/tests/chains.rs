//! Multi-program XDP and TC chains, proven with real traffic between two network namespaces.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};

fn udp(net: &NetPair, port: u16, n: usize) {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range({n}): s.sendto(b'x',('{}',{port}))",
        net.ip_b
    );
    let ok = Command::new("ip")
        .args(["netns", "exec", &net.ns_a, "python3", "-c", &code])
        .status()
        .unwrap()
        .success();
    assert!(ok, "send UDP");
    // Let the packets cross the veth before counters are read.
    std::thread::sleep(std::time::Duration::from_millis(50));
}

/// Count UDP datagrams arriving on `port` in ns b while `f` runs.
fn received(net: &NetPair, port: u16, f: impl FnOnce()) -> usize {
    let code = format!(
        "import socket,sys,select\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nprint('ready',flush=True)\nn=0\nwhile True:\n  r=select.select([s,sys.stdin],[],[])[0]\n  if s in r:\n    s.recv(64); n+=1\n  elif sys.stdin in r:\n    break\ns.setblocking(False)\ntry:\n  while True:\n    s.recv(64); n+=1\nexcept Exception:\n  pass\nprint(n)"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.ns_b, "python3", "-c", &code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    f();
    // The receiver counts until its stdin closes (after the sender is done), however slowly a
    // loaded machine starts the sender.
    drop(child.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    child.wait().unwrap();
    rest.trim().parse().unwrap_or(0)
}

fn hits(a: &Apiary, id: i64) -> u64 {
    a.counter(&format!("{id}:hits"), 0)
}

fn xdp(a: &Apiary, net: &NetPair, id: i64, extra: &[&str]) -> i64 {
    let mut args = vec!["xdp", "--iface", &net.if_b, "--netns", &net.ns_b];
    args.extend(extra);
    a.attach(id, &args)
}

fn chain(a: &Apiary, net: &NetPair, hook: &str) -> Value {
    a.json(&["get", "chain", &net.if_b, hook, "--netns", &net.ns_b])
}

#[test]
fn order_short_circuit_and_the_proceed_on_drop_trap() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let counter = a.load_one(&["--path", p, "--programs", "xdp:xdp_counter"]);
    let dropper = a.load_one(&["--path", p, "--programs", "xdp:xdp_drop_port"]);
    // Dropper first: packets to port 9999 stop there, the counter never sees them.
    xdp(&a, &net, dropper, &["--priority", "10"]);
    let counter_link = xdp(&a, &net, counter, &["--priority", "20"]);
    let c0 = hits(&a, counter);
    let got = received(&net, 9999, || udp(&net, 9999, 20));
    assert_eq!(got, 0, "the dropper dropped them");
    assert_eq!(hits(&a, dropper), 20);
    assert!(
        hits(&a, counter) - c0 < 5,
        "short-circuit: the counter did not see the dropped packets"
    );
    let other = received(&net, 8888, || udp(&net, 8888, 10));
    assert_eq!(other, 10, "other ports pass both programs");

    // Re-prioritised, the counter runs first and sees everything.
    a.ok(&["detach", &counter_link.to_string()]);
    let counter_link = xdp(&a, &net, counter, &["--priority", "5"]);
    let c1 = hits(&a, counter);
    assert_eq!(received(&net, 9999, || udp(&net, 9999, 20)), 0);
    assert!(
        hits(&a, counter) - c1 >= 20,
        "the counter (priority 5) now sees the packets before the drop"
    );
    assert_eq!(
        hits(&a, dropper),
        40,
        "the dropper's map kept its value across every change"
    );

    // Three programs: a dropper that proceeds on drop lets a later program's verdict win.
    a.ok(&["detach", &counter_link.to_string()]);
    let chain_json = chain(&a, &net, "xdp");
    let dropper_link = chain_json["programs"][0]["link_id"].as_i64().unwrap();
    a.ok(&["detach", &dropper_link.to_string()]);
    xdp(
        &a,
        &net,
        dropper,
        &["--priority", "10", "--proceed-on", "drop,pass"],
    );
    let late = a.load_one(&["--path", p, "--programs", "xdp:xdp_counter"]);
    xdp(&a, &net, counter, &["--priority", "1"]);
    xdp(&a, &net, late, &["--priority", "30"]);
    let got = received(&net, 9999, || udp(&net, 9999, 10));
    assert_eq!(
        got, 10,
        "proceed-on drop: the last program's pass wins, the 'dropped' packets arrive"
    );
    assert!(hits(&a, late) >= 10);

    // Per-slot counters: runs and verdicts by name, in run order.
    let c = chain(&a, &net, "xdp");
    let progs = c["programs"].as_array().unwrap();
    assert_eq!(progs.len(), 3);
    assert_eq!(
        progs
            .iter()
            .map(|p| p["priority"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 10, 30]
    );
    assert_eq!(progs[1]["proceed_on"], serde_json::json!(["drop", "pass"]));
    assert!(progs[1]["verdicts"]["drop"].as_u64().unwrap() >= 10, "{c}");
    assert!(progs[0]["runs"].as_u64().unwrap() >= progs[2]["runs"].as_u64().unwrap());
    let table = a.ok(&["get", "chain", &net.if_b, "xdp", "--netns", &net.ns_b]);
    assert!(
        table.contains("PROCEED-ON") && table.contains("drop,pass"),
        "{table}"
    );
}

#[test]
fn detaching_the_middle_program_keeps_the_others_working() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let ids: Vec<i64> = (0..3)
        .map(|_| a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]))
        .collect();
    let links: Vec<i64> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| xdp(&a, &net, *id, &["--priority", &(10 * (i + 1)).to_string()]))
        .collect();
    assert!(net.ping(3));
    let before: Vec<u64> = ids.iter().map(|i| hits(&a, *i)).collect();
    assert!(before.iter().all(|h| *h >= 3));
    a.ok(&["detach", &links[1].to_string()]);
    // Read after the detach: a stray packet (ARP, IPv6 ND) may have passed just before it.
    let middle = hits(&a, ids[1]);
    assert!(net.ping(3));
    assert!(hits(&a, ids[0]) >= before[0] + 3);
    assert_eq!(
        hits(&a, ids[1]),
        middle,
        "the detached program no longer runs"
    );
    assert!(hits(&a, ids[2]) >= before[2] + 3);
    // Unloading the rest (forced) takes the chain and its link away.
    a.ok(&[
        "unload",
        "--force",
        &ids[0].to_string(),
        &ids[2].to_string(),
    ]);
    assert!(a.json(&["list", "chains"]).as_array().unwrap().is_empty());
    assert!(net.ping(2), "no dispatcher left on the interface");
}

#[test]
fn sixty_four_programs_each_with_its_own_map_all_run() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let mut ids = Vec::new();
    for i in 0..64 {
        let id = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
        xdp(&a, &net, id, &["--priority", &(i + 1).to_string()]);
        ids.push(id);
    }
    assert!(net.ping(3));
    for id in &ids {
        assert!(hits(&a, *id) >= 3, "program {id} ran");
    }
    let c = chain(&a, &net, "xdp");
    assert_eq!(c["programs"].as_array().unwrap().len(), 64);
}

#[test]
fn chained_blocks_with_callbacks_global_functions_and_globals() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_features");
    let p = obj.to_str().unwrap();
    let lp = a.load_one(&["--path", p, "--programs", "xdp:xdp_loop"]);
    let gl = a.load_one(&["--path", p, "--programs", "xdp:xdp_global"]);
    let gv = a.load_one(&["--path", p, "--programs", "xdp:xdp_globals"]);
    xdp(&a, &net, lp, &["--priority", "1"]);
    xdp(&a, &net, gl, &["--priority", "2"]);
    xdp(&a, &net, gv, &["--priority", "3"]);
    assert!(net.ping(2));
    let r = |id: i64, k: u64| a.counter(&format!("{id}:results"), k);
    assert!(r(lp, 3) >= 8, "bpf_loop callback ran 4 times per packet");
    assert!(r(gl, 4) >= 2, "global subprogram ran");
    assert!(r(gv, 5) >= 14, ".rodata value 7 per packet");
    assert!(r(gv, 6) >= 2, ".bss counter");
    assert!(r(gv, 7) >= 10, ".data value");
}

#[test]
fn no_packet_is_lost_while_the_chain_changes_twenty_times() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let base = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    xdp(&a, &net, base, &["--priority", "500"]);
    let extra = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    let mut ping = Command::new("ip")
        .args([
            "netns", "exec", &net.ns_a, "ping", "-f", "-c", "100000", "-W", "1", &net.ip_b,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    for i in 0..10 {
        let l = xdp(&a, &net, extra, &["--priority", &(100 + i).to_string()]);
        a.ok(&["detach", &l.to_string()]);
    }
    // Every change happened while the flood was still running.
    assert!(
        ping.try_wait().unwrap().is_none(),
        "the flood ended before the 20 changes did; raise its count"
    );
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stats = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_default()
        .to_string();
    assert!(
        stats.contains(" 0% packet loss"),
        "flood ping across 20 chain changes: {stats}"
    );
    assert!(
        hits(&a, base) >= 100000,
        "every echo request went through the chain"
    );
}

#[test]
fn two_processes_join_the_same_chain_at_once() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let x = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    let y = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    let spawn = |id: i64| {
        a.cmd()
            .args([
                "attach",
                &id.to_string(),
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut c1, mut c2) = (spawn(x), spawn(y));
    assert!(c1.wait().unwrap().success() && c2.wait().unwrap().success());
    let c = chain(&a, &net, "xdp");
    assert_eq!(
        c["programs"].as_array().unwrap().len(),
        2,
        "both joined: {c}"
    );
    assert!(net.ping(2));
    assert!(hits(&a, x) >= 2 && hits(&a, y) >= 2);
}

#[test]
fn tc_chains_on_ingress_and_egress_with_tc_verdicts() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let tc = |id: i64, dir: &str, prio: &str| {
        a.attach(
            id,
            &[
                "tc",
                "--iface",
                &net.if_b,
                "--direction",
                dir,
                "--priority",
                prio,
                "--netns",
                &net.ns_b,
            ],
        )
    };
    let drop_in = a.load_one(&["--path", p, "--programs", "tc:tc_drop_port"]);
    let count_in = a.load_one(&["--path", p, "--programs", "tc:tc_counter"]);
    tc(drop_in, "ingress", "10");
    tc(count_in, "ingress", "20");
    let c0 = hits(&a, count_in);
    assert_eq!(
        received(&net, 9999, || udp(&net, 9999, 10)),
        0,
        "TC_ACT_SHOT on ingress"
    );
    assert_eq!(hits(&a, drop_in), 10);
    assert!(
        hits(&a, count_in) - c0 < 5,
        "the counter did not see what the dropper shot"
    );
    let c1 = hits(&a, count_in);
    assert_eq!(received(&net, 7777, || udp(&net, 7777, 5)), 5);
    assert!(hits(&a, count_in) - c1 >= 5, "and saw what passed it");

    let count_out = a.load_one(&["--path", p, "--programs", "tc:tc_counter"]);
    let shoot_out = a.load_one(&[
        "--path",
        p,
        "--programs",
        "tc:tc_counter",
        "--set",
        "tc_verdict=2",
    ]);
    tc(count_out, "egress", "1");
    assert!(net.ping(2));
    assert!(hits(&a, count_out) >= 2, "egress chain counts the replies");
    tc(shoot_out, "egress", "2");
    assert!(!net.ping(2), "a shot verdict on egress stops the replies");
    let c = chain(&a, &net, "tc-egress");
    assert_eq!(c["direction"], "egress");
    assert!(
        c["programs"][1]["verdicts"]["shot"].as_u64().unwrap() >= 2,
        "{c}"
    );
    assert_eq!(a.json(&["list", "chains"]).as_array().unwrap().len(), 2);
}

#[test]
fn bad_chain_requests_leave_the_running_chain_untouched() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let good = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    xdp(&a, &net, good, &["--priority", "10"]);
    let before = chain(&a, &net, "xdp");
    let tcp = a.load_one(&["--path", p, "--programs", "tc:tc_counter"]);
    let frags = a.load_one(&["--path", p, "--programs", "xdp:xdp_frags_count"]);
    let other = a.load_one(&["--path", p, "--programs", "xdp:xdp_count_pass"]);
    let g = good.to_string();
    let o = other.to_string();
    for (args, want) in [
        (
            vec!["attach", &o, "xdp", "--iface", "nosuch0"],
            "interface \"nosuch0\" does not exist",
        ),
        (
            vec![
                "attach",
                &o,
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
                "--priority",
                "0",
            ],
            "priorities run from 1",
        ),
        (
            vec![
                "attach",
                &o,
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
                "--priority",
                "1001",
            ],
            "priorities run from 1",
        ),
        (
            vec![
                "attach",
                &o,
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
                "--proceed-on",
                "pass,bogus",
            ],
            "unknown xdp proceed-on value \"bogus\"",
        ),
        (
            vec![
                "attach",
                &o,
                "tc",
                "--iface",
                &net.if_b,
                "--direction",
                "ingress",
                "--netns",
                &net.ns_b,
                "--proceed-on",
                "pass",
            ],
            "unknown tc proceed-on value \"pass\"",
        ),
        (
            vec![
                "attach",
                &tcp.to_string(),
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
            ],
            "cannot be attached as xdp",
        ),
        (
            vec![
                "attach",
                &frags.to_string(),
                "xdp",
                "--iface",
                &net.if_b,
                "--netns",
                &net.ns_b,
            ],
            "frags",
        ),
        (
            vec![
                "get",
                "chain",
                &net.if_b,
                "tc-ingress",
                "--netns",
                &net.ns_b,
            ],
            "chain tc on",
        ),
        (vec!["get", "chain", &net.if_b, "sideways"], "unknown hook"),
    ] {
        let r = a.run(&args);
        assert!(!r.ok, "{args:?} should fail");
        assert!(
            r.stderr.contains(want),
            "{args:?}: expected {want:?} in {}",
            r.stderr
        );
        let now = chain(&a, &net, "xdp");
        assert_eq!(
            now["dispatcher_kernel_id"], before["dispatcher_kernel_id"],
            "{args:?} changed the chain"
        );
        assert_eq!(now["programs"].as_array().unwrap().len(), 1);
    }
    assert!(net.ping(2), "the chain still runs");
    assert!(
        a.json(&["list", "links", "--program", &g])
            .as_array()
            .unwrap()
            .len()
            == 1
    );
}

#[test]
fn a_chain_past_the_counter_limit_is_refused_clearly() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let id = a.load_one(&[
        "--path",
        fixture("chain_basic").to_str().unwrap(),
        "--programs",
        "xdp:xdp_count_pass",
    ]);
    // One program may hold several slots; 124 counted slots is the limit of one stats value.
    for _ in 0..124 {
        xdp(&a, &net, id, &[]);
    }
    let before = chain(&a, &net, "xdp");
    let e = a.fails(&[
        "attach",
        &id.to_string(),
        "xdp",
        "--iface",
        &net.if_b,
        "--netns",
        &net.ns_b,
    ]);
    assert!(e.contains("chain too large") || e.contains("124"), "{e}");
    assert_eq!(
        chain(&a, &net, "xdp")["dispatcher_kernel_id"],
        before["dispatcher_kernel_id"]
    );
    assert!(net.ping(2));
    assert!(hits(&a, id) >= 2 * 124);
}

/// A member's counters keep adding up when the chain is recomposed around it (another program
/// joins or leaves, or the member is updated): each recomposition loads a new dispatcher.
#[test]
fn counters_are_cumulative_across_recompositions() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let net = NetPair::new();
    let obj = fixture("chain_basic");
    let p = obj.to_str().unwrap();
    let first = a.load_one(&["--path", p, "--programs", "xdp:xdp_counter"]);
    xdp(&a, &net, first, &["--priority", "10"]);
    let runs = |a: &Apiary| -> u64 {
        chain(a, &net, "xdp")["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["program_id"] == first)
            .map(|m| m["runs"].as_u64().unwrap())
            .unwrap()
    };
    assert!(net.ping(4));
    let before = runs(&a);
    assert!(before >= 4, "{before}");
    // A second member joins: a new dispatcher replaces the old one.
    let second = a.load_one(&["--path", p, "--programs", "xdp:xdp_counter"]);
    let l2 = xdp(&a, &net, second, &["--priority", "20"]);
    let joined = runs(&a);
    assert!(joined >= before, "kept across a join: {joined} < {before}");
    assert!(net.ping(3));
    let after = runs(&a);
    assert!(after >= before + 3, "{after} < {before} + 3");
    // And when it leaves again.
    a.ok(&["detach", &l2.to_string()]);
    assert!(runs(&a) >= after, "kept across a leave");
}
