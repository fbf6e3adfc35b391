//! `apiary run` decodes every ring buffer / perf buffer record with a `Format` compiled from the
//! object's BTF; records come from BPF programs and may be any length. Input: a BTF blob and a
//! record (see `apiary_fuzz::split`). The JSON written for a record must parse as JSON, and what
//! is written must stay proportionate to the record (found here: unescaped member names, types
//! whose size overflows, zero-size and overlapping members written billions of times; the
//! inputs are replayed by crates/apiary-core/tests/fuzz_regressions.rs).
#![no_main]

use apiary_core::btf::Btf;
use apiary_core::events::Format;
use libfuzzer_sys::fuzz_target;

/// Output past this for one record is a finding.
const MAX_OUTPUT: usize = 1 << 20;

fuzz_target!(init: apiary_fuzz::emit_seeds("event_format"), |data: &[u8]| {
    let (blob, record) = apiary_fuzz::split(data);
    let Ok(table) = Btf::parse(blob) else { return };
    for (id, _) in table.iter().take(apiary_fuzz::MAX_TYPES) {
        let Some(f) = Format::new(&table, id) else { continue };
        let _ = f.columns();
        let mut json = String::new();
        f.write_json(record, &mut json);
        let mut tagged = String::new();
        f.write_json_tagged(record, "\"_map\":\"events\"", &mut tagged);
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            panic!("event JSON for {} does not parse ({e}): {json}", f.type_name());
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&tagged) {
            panic!("tagged event JSON for {} does not parse ({e}): {tagged}", f.type_name());
        }
        let mut row = String::new();
        f.write_row(record, &mut row);
        assert!(
            json.len() < MAX_OUTPUT && row.len() < MAX_OUTPUT,
            "{}: {} bytes written for a {}-byte record",
            f.type_name(),
            json.len().max(row.len()),
            record.len()
        );
    }
});
