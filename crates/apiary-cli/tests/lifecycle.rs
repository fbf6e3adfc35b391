//! Load/attach/detach/unload across processes: map sharing, refusals that protect running
//! programs, listing what the kernel holds, and eight processes at once.

mod common;

use common::*;

#[test]
fn map_owner_sharing_and_unload_order() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let m = fixture("minimal");
    let p = m.to_str().unwrap();
    let owner = a.load_one(&["--path", p]);
    let borrower = a.load_one(&[
        "--path",
        p,
        "--map-owner-id",
        &owner.to_string(),
        "--set",
        "increment=100",
    ]);
    let own = a.json(&["get", "program", &owner.to_string()]);
    let bor = a.json(&["get", "program", &borrower.to_string()]);
    let counts_id = |v: &serde_json::Value| {
        v["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "counts")
            .unwrap()["kernel_id"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        counts_id(&own),
        counts_id(&bor),
        "the borrower uses the owner's counts map"
    );
    assert_eq!(bor["map_owner_id"].as_i64(), Some(owner));
    // Only the borrower runs; the owner's map sees its increments of 100.
    a.attach(
        borrower,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    std::process::Command::new(apiary_fixtures::uprobe_target())
        .arg("3")
        .output()
        .unwrap();
    let v = a.counter(&format!("{owner}:counts"), 0);
    assert!(
        v >= 300 && v.is_multiple_of(100),
        "shared map written by the borrower: {v}"
    );

    let e = a.fails(&["unload", "--force", &owner.to_string()]);
    assert!(
        e.contains("owns maps still used by program(s)") && e.contains(&borrower.to_string()),
        "{e}"
    );
    assert_eq!(a.program_ids().len(), 2, "refused unload changed nothing");
    // Together, in any order: the borrower goes first.
    a.ok(&[
        "unload",
        "--force",
        &owner.to_string(),
        &borrower.to_string(),
    ]);
    assert!(a.program_ids().is_empty());
    assert!(a.pins().is_empty(), "pins left: {:?}", a.pins());
}

#[test]
fn unload_refuses_attached_programs_unless_forced() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let id = a.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    let l1 = a.attach(
        id,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getppid"],
    );
    let e = a.fails(&[
        "attach",
        &id.to_string(),
        "tracepoint",
        "--tracepoint",
        "syscalls/sys_enter_getppid",
    ]);
    assert!(e.contains("already attached there"), "{e}");
    let l2 = a.attach(
        id,
        &["tracepoint", "--tracepoint", "syscalls/sys_enter_getpid"],
    );
    let e = a.fails(&["unload", &id.to_string()]);
    assert!(
        e.contains(&format!("ids {l1}, {l2}")) && e.contains("--force"),
        "{e}"
    );
    let kid = a.json(&["get", "program", &id.to_string()])["kernel_id"]
        .as_u64()
        .unwrap();
    assert!(Apiary::kernel_prog_ids().contains(&kid));
    a.ok(&["detach", &l1.to_string()]);
    assert_eq!(a.json(&["list", "links"]).as_array().unwrap().len(), 1);
    a.ok(&["unload", "--force", &id.to_string()]);
    assert!(
        eventually(5, || !Apiary::kernel_prog_ids().contains(&kid)),
        "the kernel freed the program"
    );
    assert!(a.pins().is_empty());
}

#[test]
fn list_all_includes_programs_apiary_does_not_manage() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let b = Apiary::new();
    let theirs = b.load_one(&["--path", fixture("minimal").to_str().unwrap()]);
    let their_kid = b.json(&["get", "program", &theirs.to_string()])["kernel_id"]
        .as_u64()
        .unwrap();
    let mine = a.json(&["list", "programs"]);
    assert!(mine.as_array().unwrap().is_empty());
    let all = a.json(&["list", "programs", "--all"]);
    let found = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kernel_id"].as_u64() == Some(their_kid))
        .expect("listed");
    assert_eq!(found["managed"], false);
    assert!(found["id"].is_null());
    assert_eq!(found["type"], "tracepoint");
    let table = a.ok(&["list", "programs", "--all"]);
    assert!(table.lines().next().unwrap().starts_with("ID"));
    assert!(table.contains("count_getppid"));
    assert!(a.json(&["list", "maps", "--all"]).as_array().unwrap().len() >= 2);
    // YAML output parses as the same data.
    let y = a.ok(&["list", "programs", "--all", "-o", "yaml"]);
    assert!(y.contains("managed: false"));
}

#[test]
fn eight_processes_load_and_unload_concurrently() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let obj = fixture("minimal");
    let bin = env!("CARGO_BIN_EXE_apiary");
    // Each worker is a shell loop of 25 load+unload pairs, so eight real processes race.
    let script = format!(
        "set -e; for i in $(seq 25); do id=$({bin} -o json load file --path {} -m worker=$W | sed -n 's/.*\"id\": \\([0-9]*\\).*/\\1/p' | head -1); {bin} unload $id >/dev/null; done",
        obj.display()
    );
    let kernel_before: std::collections::HashSet<u64> =
        Apiary::kernel_prog_ids().into_iter().collect();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            a.cmd(); // same env as the instance
            std::process::Command::new("sh")
                .args(["-c", &script])
                .env("W", w.to_string())
                .env("APIARY_STATE_DIR", a.state.path())
                .env("APIARY_BPFFS", &a.bpffs)
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success(), "a worker failed");
    }
    assert!(
        a.program_ids().is_empty(),
        "every load was unloaded and recorded as such"
    );
    assert!(a.json(&["list", "maps"]).as_array().unwrap().is_empty());
    assert!(a.pins().is_empty(), "no pins left: {:?}", a.pins());
    // No count_getppid program from these 200 loads is left in the kernel.
    let ours_left = || {
        Apiary::kernel_prog_ids()
            .into_iter()
            .filter(|k| !kernel_before.contains(k))
            .any(|k| {
                let out = std::process::Command::new("bpftool")
                    .args(["prog", "show", "id", &k.to_string()])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("count_getppid")
            })
    };
    // Other tests may load count_getppid in parallel; a leak would stay, theirs come and go.
    assert!(
        eventually(10, || !ours_left()),
        "a count_getppid program was leaked"
    );
    // And the store survived intact: a new load still works and gets a fresh id.
    let id = a.load_one(&["--path", obj.to_str().unwrap()]);
    assert!(id > 200, "ids are never reused: {id}");
}
