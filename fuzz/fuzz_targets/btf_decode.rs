//! Map dumps and `inspect` show values by decoding raw bytes through BTF the object brought:
//! both the type table and the bytes are hostile. Input: a BTF blob and value bytes (see
//! `apiary_fuzz::split`); every type in the table is decoded, named and sized.
#![no_main]

use apiary_core::btf::{self, Btf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: apiary_fuzz::emit_seeds("btf_decode"), |data: &[u8]| {
    let (blob, value) = apiary_fuzz::split(data);
    let Ok(table) = Btf::parse(blob) else { return };
    for (id, t) in table.iter().take(apiary_fuzz::MAX_TYPES) {
        let name = table.type_name(id);
        let _ = table.size_of(id);
        let _ = table.resolve(id);
        if let Some(n) = t.name() {
            let _ = table.find_by_name(n);
            let _ = table.find_struct(n);
        }
        let _ = table.find_by_name(&name);
        if let Ok(v) = btf::decode(&table, id, value) {
            // Whatever decode produces is shown as JSON; it must serialise.
            let _ = serde_json::to_string(&v).expect("decoded value serialises");
        }
    }
    for (_, sec) in table.datasecs() {
        if let Some(n) = sec.name() {
            let _ = table.datasec(n);
        }
    }
    let _ = table.func_names();
});
