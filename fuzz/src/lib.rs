//! Shared pieces of apiary's fuzz targets: the two-part input layout some targets use, and the
//! seed corpora, which are generated from the real BPF fixtures at run time (never committed as
//! binaries) so they follow the fixtures as those change.

pub mod seeds;

/// Splits an input into two parts: a little-endian u32 length, that many bytes, the rest.
/// Targets that need a type table and a value (BTF + record, BTF + text) read them this way,
/// so mutations of the value keep the table intact. Short inputs give an empty first part.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (&[], data);
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(len)
}

/// The inverse of [`split`], for writing seeds.
pub fn join(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + first.len() + second.len());
    out.extend_from_slice(&(first.len() as u32).to_le_bytes());
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

/// Type ids a target walks per input: real objects have a few hundred types, and a hostile
/// table with millions would only make each run slow, not reach new code.
pub const MAX_TYPES: usize = 2048;

/// Writes `target`'s seeds into `$APIARY_FUZZ_SEED_DIR` when that is set (bench/fuzz.sh sets it
/// on a first run); called from each target's init, before libFuzzer reads its corpus dirs.
pub fn emit_seeds(target: &str) {
    let Some(dir) = std::env::var_os("APIARY_FUZZ_SEED_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    match seeds::write(target, &dir) {
        Ok(n) => eprintln!(
            "apiary-fuzz: wrote {n} seeds for {target} to {}",
            dir.display()
        ),
        Err(e) => {
            eprintln!("apiary-fuzz: cannot write seeds for {target}: {e}");
            std::process::exit(1);
        }
    }
}
