//! Replays the inputs the fuzzer found problems with (fuzz/regressions/TARGET/*) through the
//! same calls and checks as the fuzz targets in fuzz/fuzz_targets, so a fixed crash stays fixed
//! in the normal test suite, without a sanitizer or cargo-fuzz.

use apiary_core::btf::{self, Btf, BtfError};
use std::path::PathBuf;

/// The kept inputs of one fuzz target, by file name.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read input"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

/// `apiary_fuzz::split`: a u32 length, that many bytes, the rest.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (&[], data);
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(len)
}

/// fuzz_targets/btf_encode.rs: whatever encodes has the type's size and decodes back.
fn btf_encode(data: &[u8]) -> usize {
    let (blob, text) = split(data);
    let Ok(table) = Btf::parse(blob) else {
        return 0;
    };
    let text = String::from_utf8_lossy(text);
    let mut encoded = 0;
    for (id, _) in table.iter().take(2048) {
        let Ok(bytes) = btf::encode(&table, id, &text) else {
            continue;
        };
        encoded += 1;
        assert_eq!(
            Some(bytes.len()),
            table.size_of(id).map(|s| s as usize),
            "size of {}",
            table.type_name(id)
        );
        match btf::decode(&table, id, &bytes) {
            Ok(_) | Err(BtfError::TooComplex { .. }) => {}
            Err(e) => panic!(
                "{} encoded from {text:?} does not decode: {e}",
                table.type_name(id)
            ),
        }
    }
    encoded
}

#[test]
fn btf_encode_regressions() {
    for (name, data) in inputs("btf_encode") {
        eprintln!("{name}: {} types encoded", btf_encode(&data));
    }
}
