//! The CO-RE cache relocates exactly as the kernel's whole BTF does: the instructions libbpf hands
//! the kernel are the same (up to the map descriptors of each load), and the minimal BTF is a
//! small fraction of the kernel's. Also: the kernel's whole BTF survives being written back.
//!
//! Loading needs root; skips without it unless APIARY_REQUIRE_PRIVILEGED=1.

use apiary_core::btf::{self, Btf};
use apiary_kernel::core_cache::CoreCache;
use apiary_kernel::{load, LoadRequest, LoadedObject};
use std::path::PathBuf;

fn load_with(bytes: &[u8], core_btf: Option<PathBuf>) -> LoadedObject {
    load(&LoadRequest {
        object: bytes,
        source: "core",
        programs: Vec::new(),
        globals: Vec::new(),
        reuse_maps: Vec::new(),
        object_name: None,
        core_btf,
    })
    .expect("load")
}

/// The relocated instructions with the map descriptors of `ld_imm64` map loads cleared (each
/// load has its own descriptors).
fn relocated(obj: &LoadedObject, program: &str) -> Vec<u8> {
    let mut insns = obj.program_insns(program).expect("instructions");
    let mut i = 0;
    while i + 16 <= insns.len() {
        let (code, src) = (insns[i], insns[i + 1] >> 4);
        if code == 0x18 {
            if (1..=6).contains(&src) {
                insns[i + 4..i + 8].fill(0);
            }
            i += 16;
        } else {
            i += 8;
        }
    }
    insns
}

#[test]
fn a_cached_load_relocates_as_the_whole_kernel_btf_does() {
    if !apiary_fixtures::privileged() {
        return;
    }
    let bytes = std::fs::read(apiary_fixtures::object("core")).expect("fixture");
    let info = apiary_core::elf::inspect(&bytes).expect("inspect");
    assert!(
        !info.core_relos.is_empty(),
        "the fixture has CO-RE relocations"
    );

    let dir = tempfile_dir();
    let cache = CoreCache::new(&dir);
    assert_eq!(cache.lookup(&bytes), None);
    let entry = cache
        .fill(&bytes, &info)
        .expect("an entry for a CO-RE object");
    assert_eq!(cache.lookup(&bytes), Some(entry.clone()));
    let whole = std::fs::metadata("/sys/kernel/btf/vmlinux")
        .expect("vmlinux BTF")
        .len();
    let small = std::fs::metadata(&entry).expect("entry").len();
    assert!(
        small * 20 < whole,
        "minimal BTF {small} B vs the kernel's {whole} B"
    );

    let plain = load_with(&bytes, None);
    let cached = load_with(&bytes, Some(entry.clone()));
    for p in &plain.programs {
        assert_eq!(
            relocated(&plain, &p.name),
            relocated(&cached, &p.name),
            "program {}: the same instructions with the minimal BTF",
            p.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kernel_btf_survives_being_written_back() {
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").expect("vmlinux BTF");
    let kernel = Btf::parse(&raw).expect("parse");
    let types: Vec<_> = kernel.iter().map(|(_, t)| t.clone()).collect();
    let again = Btf::parse(&btf::write::write(&types)).expect("written BTF parses");
    assert_eq!(again.len(), kernel.len());
    for ((id, a), (_, b)) in kernel.iter().zip(again.iter()) {
        assert_eq!(a, b, "type {id}");
    }
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("apiary-core-cache-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
