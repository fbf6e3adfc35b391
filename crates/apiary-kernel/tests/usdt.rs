//! Kernel tests for USDT attach: spec ids (the links' BPF cookies) never collide between
//! attachments of programs that share one spec map, detaching frees them, and every attachment
//! reads the probe's arguments.
//!
//! Needs root; skips without it unless APIARY_REQUIRE_PRIVILEGED=1.

use apiary_core::AttachSpec;
use apiary_kernel::attach::usdt_spec_ids;
use apiary_kernel::{attach, load, maps, sys, AttachContext, Attachment, LoadRequest};
use apiary_kernel::{LoadedObject, ProgramSelect};
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;

fn load_usdt() -> LoadedObject {
    let bytes = std::fs::read(apiary_fixtures::object("usdt")).expect("fixture object");
    let req = LoadRequest {
        object: &bytes,
        source: "usdt",
        programs: ["on_hit", "on_hit_auto"]
            .iter()
            .map(|p| ProgramSelect {
                ty: None,
                name: p.to_string(),
            })
            .collect(),
        globals: Vec::new(),
        reuse_maps: Vec::new(),
        object_name: None,
        core_btf: None,
    };
    load(&req).expect("load usdt fixture")
}

fn attach_usdt(obj: &LoadedObject, program: &str) -> Vec<OwnedFd> {
    let spec = AttachSpec::Usdt(apiary_core::types::usdt::UsdtAttach {
        target: apiary_fixtures::usdt_target().display().to_string(),
        provider: "apiary".into(),
        name: "hit".into(),
        pid: None,
    });
    let prog = obj.program_fd(program).expect("program");
    match attach(prog, &spec, &AttachContext::default()).expect("attach usdt") {
        Attachment::Links(l) => l,
        Attachment::TcFilter(_) => panic!("a usdt attach makes links"),
    }
}

fn ids(links: &[OwnedFd]) -> HashSet<u64> {
    links
        .iter()
        .flat_map(|l| usdt_spec_ids(l.as_fd()).expect("link info"))
        .collect()
}

fn hits(obj: &LoadedObject) -> u64 {
    let fd = obj.map_fd("usdt_stats").expect("usdt_stats");
    let info = sys::map_info(fd).expect("map info");
    let key = 0u32.to_ne_bytes();
    let v = maps::lookup(fd, &info, &key)
        .expect("lookup")
        .expect("entry 0");
    u64::from_ne_bytes(v[0][..8].try_into().expect("u64"))
}

fn fire(n: u32) {
    let out = Command::new(apiary_fixtures::usdt_target())
        .arg(n.to_string())
        .output()
        .expect("run usdt_target");
    assert!(out.status.success());
}

#[test]
fn spec_ids_are_disjoint_and_freed_on_detach() {
    if !apiary_fixtures::privileged() {
        return;
    }
    let obj = load_usdt();
    // Both programs use the object's one spec map: their attachments share its id space.
    let a = attach_usdt(&obj, "on_hit");
    let b = attach_usdt(&obj, "on_hit");
    let c = attach_usdt(&obj, "on_hit_auto");
    let (ia, ib, ic) = (ids(&a), ids(&b), ids(&c));
    // The probe's two sites read their arguments alike: one spec each attachment.
    assert_eq!(
        (ia.len(), ib.len(), ic.len()),
        (1, 1, 1),
        "{ia:?} {ib:?} {ic:?}"
    );
    assert!(ia.is_disjoint(&ib) && ia.is_disjoint(&ic) && ib.is_disjoint(&ic));
    fire(4);
    assert_eq!(hits(&obj), 12, "three attachments, four hits each");

    // Dropping an attachment's links frees its id for the next attach.
    let freed = ia.clone();
    drop(a);
    let d = attach_usdt(&obj, "on_hit");
    assert_eq!(ids(&d), freed);
    fire(2);
    assert_eq!(hits(&obj), 18);
    drop((b, c, d));
    fire(5);
    assert_eq!(hits(&obj), 18, "no links, no hits");
}
