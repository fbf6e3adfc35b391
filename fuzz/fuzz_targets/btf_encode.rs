//! `--set NAME=VALUE` turns user text into a global's bytes using the object's BTF. Input: a
//! BTF blob and the text (see `apiary_fuzz::split`). Every type is tried; whatever encodes must
//! have the type's size and decode back.
#![no_main]

use apiary_core::btf::{self, Btf, BtfError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: apiary_fuzz::emit_seeds("btf_encode"), |data: &[u8]| {
    let (blob, text) = apiary_fuzz::split(data);
    let Ok(table) = Btf::parse(blob) else { return };
    let text = String::from_utf8_lossy(text);
    for (id, _) in table.iter().take(apiary_fuzz::MAX_TYPES) {
        let Ok(bytes) = btf::encode(&table, id, &text) else {
            continue;
        };
        let size = table.size_of(id);
        assert_eq!(
            Some(bytes.len()),
            size.map(|s| s as usize),
            "encoded {} bytes for {} of size {size:?}",
            bytes.len(),
            table.type_name(id)
        );
        // decode caps the number of values it produces (a 4 MB int array is settable but not
        // shown element by element); any other refusal means encode wrote what decode rejects.
        match btf::decode(&table, id, &bytes) {
            Ok(_) | Err(BtfError::TooComplex { .. }) => {}
            Err(e) => panic!("{} encoded from {text:?} does not decode: {e}", table.type_name(id)),
        }
    }
});
