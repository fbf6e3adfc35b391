use super::*;
use crate::program::ProgramType;

/// The JSON of every hook as the enum of struct variants wrote it before the hooks moved into
/// their own structs; stores hold these, so each must read back and be written again byte for
/// byte. Optional fields appear both set and left out.
const STORED: &[&str] = &[
    r#"{"type":"tracepoint","tracepoint":"syscalls/sys_enter_getppid"}"#,
    r#"{"type":"raw-tracepoint","tracepoint":"sched_switch"}"#,
    r#"{"type":"tp-btf"}"#,
    r#"{"type":"xdp","iface":"veth0","mode":"auto","priority":1000}"#,
    r#"{"type":"xdp","iface":"veth0","netns":"/var/run/netns/a","mode":"skb","priority":5,"proceed_on":["pass","drop"]}"#,
    r#"{"type":"tc","iface":"veth0","direction":"ingress","priority":1000}"#,
    r#"{"type":"tc","iface":"veth0","netns":"/var/run/netns/a","direction":"egress","priority":3,"proceed_on":["ok"],"legacy":true}"#,
    r#"{"type":"tcx","iface":"veth0","direction":"ingress","priority":5}"#,
    r#"{"type":"tcx","iface":"veth0","netns":"/proc/1/ns/net","direction":"egress","priority":0}"#,
    r#"{"type":"uprobe","target":"libc","offset":0,"retprobe":false}"#,
    r#"{"type":"uprobe","target":"/bin/true","fn_name":"main","offset":16,"retprobe":true,"pid":42}"#,
    r#"{"type":"usdt","target":"/usr/bin/app","provider":"app","name":"request","pid":7}"#,
    r#"{"type":"usdt","target":"libc","provider":"libc","name":"setjmp"}"#,
    r#"{"type":"kprobe","fn_name":"do_unlinkat","offset":0,"retprobe":true}"#,
    r#"{"type":"cgroup-skb","cgroup":"/sys/fs/cgroup/a","direction":"egress"}"#,
    r#"{"type":"cgroup-sock","cgroup":"/sys/fs/cgroup/a"}"#,
    r#"{"type":"cgroup-sock-addr","cgroup":"/sys/fs/cgroup/a"}"#,
    r#"{"type":"cgroup-sock-addr","cgroup":"/sys/fs/cgroup/a","hook":"connect4"}"#,
    r#"{"type":"cgroup-sockopt","cgroup":"/sys/fs/cgroup/a","hook":"setsockopt"}"#,
    r#"{"type":"cgroup-sysctl","cgroup":"/sys/fs/cgroup/a"}"#,
    r#"{"type":"netfilter","hook":"prerouting","family":"ipv6","priority":-100}"#,
    r#"{"type":"netfilter","hook":"input","family":"ipv4","priority":1,"netns":"/var/run/netns/b","defrag":true}"#,
    r#"{"type":"perf-event","event":"cpu-clock","frequency":99}"#,
    r#"{"type":"perf-event","event":"task-clock","frequency":7,"cpu":1}"#,
    r#"{"type":"sk-lookup","netns":"/var/run/netns/a"}"#,
    r#"{"type":"iter"}"#,
    r#"{"type":"fentry"}"#,
    r#"{"type":"fexit"}"#,
    r#"{"type":"lsm"}"#,
];

#[test]
fn stored_json_reads_and_writes_back_identically() {
    let mut seen = Vec::new();
    for j in STORED {
        let spec: AttachSpec = serde_json::from_str(j).unwrap_or_else(|e| panic!("{j}: {e}"));
        assert_eq!(&serde_json::to_string(&spec).unwrap(), j);
        seen.push(spec.program_type());
    }
    // Every hook is covered: each program type with an attach spec appears.
    for t in ALL_TYPES {
        if *t != ProgramType::SocketFilter {
            assert!(seen.contains(t), "no stored JSON for {t}");
        }
    }
}

#[test]
fn older_records_fill_defaults() {
    // Records written before the chain fields existed read as default chain members.
    let x: AttachSpec = serde_json::from_str(r#"{"type":"xdp","iface":"veth0"}"#).unwrap();
    assert_eq!(x.chain().map(|c| c.priority), Some(1000));
    assert_eq!(
        serde_json::to_string(&x).unwrap(),
        r#"{"type":"xdp","iface":"veth0","mode":"auto","priority":1000}"#
    );
}

#[test]
fn every_type_is_listed_once_and_answers_for_itself() {
    assert_eq!(ALL_TYPES.len(), TYPES.len());
    for (i, t) in ALL_TYPES.iter().enumerate() {
        assert_eq!(TYPES[i].ty, *t);
        assert_eq!(ALL_TYPES.iter().filter(|u| *u == t).count(), 1, "{t:?}");
    }
    for j in STORED {
        let spec: AttachSpec = serde_json::from_str(j).unwrap();
        // The serde tag is the type's name, so the table and the JSON agree.
        assert!(j.starts_with(&format!(r#"{{"type":"{}""#, spec.program_type().name())));
        assert!(!spec.describe().is_empty());
    }
}
