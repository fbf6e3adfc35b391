//! `apiary inspect`, `load` and `image build` read BPF objects from users and registries:
//! inspection must return an error for anything malformed, never panic or run away. Beyond
//! inspect itself this walks what callers do next with its result: decode each global's default
//! through BTF, name map key/value types, find event types, and build image labels.
#![no_main]

use apiary_core::{btf, elf, events};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: apiary_fuzz::emit_seeds("elf_inspect"), |data: &[u8]| {
    let Ok(mut info) = elf::inspect(data) else { return };
    for g in &info.globals {
        if let (Some(b), Some(t)) = (info.btf.as_ref(), g.type_id) {
            let _ = btf::decode(b, t, &g.default);
            let _ = b.type_name(t);
        }
    }
    let maps: Vec<(String, String)> = info
        .maps
        .iter()
        .map(|m| (m.name.clone(), m.map_type_name.clone()))
        .collect();
    for (name, ty) in &maps {
        let _ = elf::map_type_from_name(ty);
        // Reads the object's DWARF too when BTF lacks an event type.
        let _ = events::event_type(&mut info, data, name, None);
    }
    let _ = apiary_oci::image::labels_for_object(data);
    // What `apiary inspect` prints goes through serde.
    let _ = serde_json::to_string(&info);
});
