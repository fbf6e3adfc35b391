//! Cost of reading an object's DWARF and converting its event struct, the work `apiary run`,
//! `inspect` and `package` add for objects whose event struct is not in BTF.
//! `cargo bench -p apiary-core --bench dwarf [-- OBJECT.bpf.o]`; without an object, the
//! dwarf_event fixture. Tools built against a full vmlinux.h carry far more DWARF than the
//! fixture: pass one to see that case.

use apiary_core::dwarf::DebugInfo;
use apiary_core::events;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| apiary_fixtures::object("dwarf_event"));
    let bytes = std::fs::read(&path).expect("object");
    let n = 20;
    let t0 = Instant::now();
    let mut dies = 0;
    for _ in 0..n {
        let d = DebugInfo::read(&bytes).expect("read").expect("has DWARF");
        dies = d.candidates().len();
    }
    let read = t0.elapsed().as_secs_f64() / n as f64;
    let info = apiary_core::elf::inspect(&bytes).expect("inspect");
    let maps: Vec<String> = info
        .maps
        .iter()
        .filter(|m| matches!(m.map_type_name.as_str(), "ringbuf" | "perf_event_array"))
        .map(|m| m.name.clone())
        .collect();
    let t0 = Instant::now();
    let mut chosen = String::new();
    for _ in 0..n {
        let mut i = info.clone();
        for m in &maps {
            if let Ok(Some(t)) = events::event_type(&mut i, &bytes, m, None) {
                chosen = i
                    .btf
                    .as_ref()
                    .map(|b| b.type_name(t.id))
                    .unwrap_or_default();
            }
        }
    }
    let choose = t0.elapsed().as_secs_f64() / n as f64;
    println!(
        "{}: {} bytes of .debug_info-bearing object; read DWARF {:.2} ms ({} candidate structs); \
         choose and convert the event type of {} map(s) {:.2} ms ({})",
        path.display(),
        bytes.len(),
        read * 1e3,
        dies,
        maps.len(),
        choose * 1e3,
        chosen
    );
}
