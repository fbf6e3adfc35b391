//! Removing DWARF from a BPF object. `-g` makes clang emit both BTF (what libbpf and the kernel
//! use: CO-RE relocations, line info, map and global types) and DWARF (for debuggers); with
//! `vmlinux.h` the DWARF is nearly all of the object. Loading never reads it (libbpf skips
//! `.debug_*` sections and their relocations), so packages drop it; the one thing apiary reads
//! from DWARF, event structs clang left out of BTF, is carried by the package instead (see
//! `apiary::package`).
//!
//! The debug sections keep their headers, emptied, rather than being removed: removing one
//! would renumber the sections after it and with them every symbol's section index, while an
//! empty section changes nothing else. The file is laid out anew without their bytes.

use object::elf::{FileHeader64, SectionHeader64, SHT_NOBITS, SHT_NULL, SHT_REL, SHT_RELA};
use object::read::elf::{FileHeader, SectionHeader};
use object::LittleEndian;

#[derive(Debug, thiserror::Error)]
pub enum StripError {
    #[error("cannot strip the object: {reason}")]
    Malformed { reason: String },
}

fn malformed(reason: impl ToString) -> StripError {
    StripError::Malformed {
        reason: reason.to_string(),
    }
}

/// Size of an ELF64 file header and of one section header.
const EHDR: usize = 64;
const SHDR: usize = 64;

/// The object with its DWARF sections (and their relocation sections) emptied, or the same
/// bytes when it has none. Only little-endian ELF64 (what apiary loads) is rewritten.
pub fn strip_debug(object: &[u8]) -> Result<Vec<u8>, StripError> {
    let e = LittleEndian;
    // The parser reads headers in place, which needs 8-byte alignment.
    let mut storage = Vec::new();
    let object = crate::elf::aligned(object, &mut storage);
    let header = FileHeader64::<LittleEndian>::parse(object).map_err(malformed)?;
    let sections = header.sections(e, object).map_err(malformed)?;
    let is_debug_name = |sh: &SectionHeader64<LittleEndian>| {
        sections
            .section_name(e, sh)
            .is_ok_and(|n| n.starts_with(b".debug_"))
    };
    let debug: Vec<bool> = sections
        .iter()
        .map(|sh| {
            let t = sh.sh_type(e);
            let target = sh.sh_info(e) as usize;
            is_debug_name(sh)
                || ((t == SHT_REL || t == SHT_RELA)
                    && sections
                        .section(object::SectionIndex(target))
                        .is_ok_and(&is_debug_name))
        })
        .collect();
    // Only relocatable objects (what clang writes for BPF) are laid out anew: program
    // headers would point into the old layout.
    if !debug.iter().any(|d| *d) || header.e_phnum(e) != 0 {
        return Ok(object.to_vec());
    }
    let shnum = sections.len();
    if header.e_shentsize(e) as usize != SHDR {
        return Err(malformed("unexpected section header size"));
    }
    let mut out = object
        .get(..EHDR)
        .ok_or_else(|| malformed("truncated header"))?
        .to_vec();
    // New (offset, size) per section, data laid out in index order.
    let mut placed = Vec::with_capacity(shnum);
    for (sh, dbg) in sections.iter().zip(&debug) {
        let t = sh.sh_type(e);
        if t == SHT_NULL || t == SHT_NOBITS {
            placed.push((sh.sh_offset(e), sh.sh_size(e)));
            continue;
        }
        let align = sh.sh_addralign(e).clamp(1, 4096) as usize;
        while out.len() % align != 0 {
            out.push(0);
        }
        let offset = out.len() as u64;
        if *dbg {
            placed.push((offset, 0));
            continue;
        }
        let data = sh.data(e, object).map_err(malformed)?;
        out.extend_from_slice(data);
        placed.push((offset, data.len() as u64));
    }
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let shoff = out.len() as u64;
    for (sh, (offset, size)) in sections.iter().zip(placed) {
        let mut h: SectionHeader64<LittleEndian> = *sh;
        h.sh_offset.set(e, offset);
        h.sh_size.set(e, size);
        out.extend_from_slice(object::bytes_of(&h));
    }
    // e_shoff sits at byte 0x28 of an ELF64 header.
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::strip_debug;
    use crate::elf::inspect;

    #[test]
    fn garbage_is_an_error() {
        assert!(strip_debug(b"not an elf").is_err());
    }

    /// Everything libbpf and apiary read survives; only DWARF goes, and a second strip changes
    /// nothing.
    #[test]
    fn stripping_keeps_programs_maps_and_btf() {
        for name in ["dwarf_event", "varlen", "events", "core"] {
            let path = apiary_fixtures::object(name);
            let full = std::fs::read(&path).unwrap();
            let stripped = strip_debug(&full).unwrap();
            let (a, b) = (inspect(&full).unwrap(), inspect(&stripped).unwrap());
            assert!(a.has_dwarf && !b.has_dwarf, "{name}");
            assert!(stripped.len() < full.len(), "{name}");
            let names = |i: &crate::elf::ObjectInfo| {
                (
                    i.programs
                        .iter()
                        .map(|p| (p.name.clone(), p.section.clone()))
                        .collect::<Vec<_>>(),
                    i.maps.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                    i.globals.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
                )
            };
            assert_eq!(names(&a), names(&b), "{name}");
            assert_eq!(a.has_btf_ext, b.has_btf_ext, "{name}");
            assert_eq!(
                a.btf.as_ref().map(|b| b.len()),
                b.btf.as_ref().map(|b| b.len()),
                "{name}: BTF untouched"
            );
            assert_eq!(strip_debug(&stripped).unwrap(), stripped, "{name}");
        }
    }
}
