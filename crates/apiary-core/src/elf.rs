//! Inspecting BPF object files without loading them.
//!
//! This module owns apiary's reading of a clang-built BPF ELF object, following libbpf's
//! conventions: which functions are programs, how BTF-defined maps in `.maps` are declared, which
//! sections hold global variables and their initial bytes, and which symbols are externs resolved
//! at load time. It works on a byte slice and never touches the kernel, so `apiary inspect` and
//! validation can run unprivileged and be unit-tested.

use crate::btf::{Btf, BtfError, Type, TypeId};
use object::elf::{
    FileHeader64, SectionHeader64, SHF_EXECINSTR, SHN_UNDEF, SHT_NOBITS, SHT_SYMTAB, STB_GLOBAL,
    STB_LOCAL, STT_FUNC, STT_OBJECT,
};
use object::read::elf::{FileHeader, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{LittleEndian, SymbolIndex};
use serde::Serialize;
use std::collections::HashMap;

const EM_BPF: u16 = 247;
/// libbpf's LIBBPF_PIN_BY_NAME.
pub const PIN_BY_NAME: u32 = 1;
const BPF_INSN_SIZE: u64 = 8;

/// Why an object could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("ELF file is for machine {machine}, not BPF (247); compile with `clang -target bpf`")]
    NotBpf { machine: u16 },
    #[error("big-endian BPF objects are not supported; compile with `-target bpfel` or `-target bpf` on a little-endian host")]
    BigEndian,
    #[error("malformed BPF object: {reason}")]
    Malformed { reason: String },
    #[error("map {map}: {reason}")]
    BadMap { map: String, reason: String },
    #[error("object uses a legacy \"maps\" section (struct bpf_map_def), which libbpf 1.0+ cannot load; declare maps in SEC(\".maps\") with __uint()/__type()")]
    LegacyMaps,
    #[error("invalid BTF in .BTF section: {0}")]
    Btf(#[from] BtfError),
}

fn malformed(reason: impl Into<String>) -> ElfError {
    ElfError::Malformed {
        reason: reason.into(),
    }
}

/// Everything apiary learns about an object before loading it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectInfo {
    /// From the `license` section, NUL-trimmed.
    pub license: Option<String>,
    /// Programs in section order, then by offset within the section.
    pub programs: Vec<ProgramDef>,
    /// BTF-defined maps from `.maps`, in declaration (symbol offset) order.
    pub maps: Vec<MapDef>,
    /// Variables in `.rodata*`, `.data*` and `.bss*`, in section order then offset.
    pub globals: Vec<GlobalVar>,
    /// Undefined symbols resolved at load time (`.kconfig` values, `.ksyms` kernel symbols,
    /// kfuncs), in symbol-table order.
    pub externs: Vec<String>,
    pub has_btf: bool,
    pub has_btf_ext: bool,
    /// A `.debug_info` section (`-g`): types used only by local variables are there, not in BTF.
    pub has_dwarf: bool,
    #[serde(skip)]
    pub btf: Option<Btf>,
    /// The CO-RE relocations in `.BTF.ext` (empty without them, or when the section is
    /// unreadable: libbpf then says why at load).
    #[serde(skip)]
    pub core_relos: Vec<crate::btf::core::CoreRelo>,
}

impl ObjectInfo {
    pub fn program(&self, name: &str) -> Option<&ProgramDef> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn map(&self, name: &str) -> Option<&MapDef> {
        self.maps.iter().find(|m| m.name == name)
    }

    pub fn global(&self, name: &str) -> Option<&GlobalVar> {
        self.globals.iter().find(|g| g.name == name)
    }

    /// Whether map `name` is declared with `__uint(pinning, LIBBPF_PIN_BY_NAME)`.
    pub fn pinned_by_name(&self, name: &str) -> bool {
        self.map(name).is_some_and(|m| m.pinning == PIN_BY_NAME)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramDef {
    pub name: String,
    /// The ELF section, which libbpf uses to pick program type and attach point.
    pub section: String,
    pub insn_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapDef {
    pub name: String,
    pub map_type: u32,
    pub map_type_name: String,
    pub key_size: Option<u32>,
    pub value_size: Option<u32>,
    pub max_entries: Option<u32>,
    pub map_flags: u32,
    pub key_type: Option<TypeId>,
    pub value_type: Option<TypeId>,
    pub key_type_name: Option<String>,
    pub value_type_name: Option<String>,
    /// 0 = not pinned, 1 = pinned by name (LIBBPF_PIN_BY_NAME).
    pub pinning: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlobalVar {
    pub name: String,
    pub section: String,
    /// Offset within the section, from the symbol table.
    pub offset: u64,
    pub size: u64,
    /// The BTF VAR's declared type (qualifiers included), when the object has BTF.
    pub type_id: Option<TypeId>,
    pub type_name: Option<String>,
    /// Initial bytes; zeros for `.bss`.
    pub default: Vec<u8>,
    /// In `.rodata*`: frozen after load, so only settable before it.
    pub read_only: bool,
}

/// Kernel `enum bpf_map_type` values, in order, with libbpf's short names.
const MAP_TYPES: &[&str] = &[
    "unspec",
    "hash",
    "array",
    "prog_array",
    "perf_event_array",
    "percpu_hash",
    "percpu_array",
    "stack_trace",
    "cgroup_array",
    "lru_hash",
    "lru_percpu_hash",
    "lpm_trie",
    "array_of_maps",
    "hash_of_maps",
    "devmap",
    "sockmap",
    "cpumap",
    "xskmap",
    "sockhash",
    "cgroup_storage",
    "reuseport_sockarray",
    "percpu_cgroup_storage",
    "queue",
    "stack",
    "sk_storage",
    "devmap_hash",
    "struct_ops",
    "ringbuf",
    "inode_storage",
    "task_storage",
    "bloom_filter",
    "user_ringbuf",
    "cgrp_storage",
    "arena",
];

/// Name of a kernel `enum bpf_map_type` value (`27` → `"ringbuf"`); `"unknown"` if newer than
/// this table.
pub fn map_type_name(t: u32) -> &'static str {
    MAP_TYPES.get(t as usize).copied().unwrap_or("unknown")
}

/// Inverse of [`map_type_name`]; also accepts the kernel spelling (`BPF_MAP_TYPE_RINGBUF`) and
/// any letter case.
pub fn map_type_from_name(name: &str) -> Option<u32> {
    let lower = name.trim().to_ascii_lowercase();
    let short = lower.strip_prefix("bpf_map_type_").unwrap_or(&lower);
    MAP_TYPES
        .iter()
        .position(|n| *n == short)
        .and_then(|i| u32::try_from(i).ok())
}

type Sections<'a> = SectionTable<'a, FileHeader64<LittleEndian>, &'a [u8]>;
type Symbols<'a> = SymbolTable<'a, FileHeader64<LittleEndian>, &'a [u8]>;

/// One symbol with the fields inspection needs, decoded once.
struct SymInfo {
    name: String,
    section: Option<usize>,
    value: u64,
    size: u64,
    kind: u8,
    /// SHN_UNDEF specifically: absolute and common symbols also have no section index.
    undefined: bool,
}

/// Reads a BPF object: programs, maps, globals, externs, license and BTF.
pub fn inspect(bytes: &[u8]) -> Result<ObjectInfo, ElfError> {
    check_ident(bytes)?;
    let mut storage = Vec::new();
    let bytes = aligned(bytes, &mut storage);
    let endian = LittleEndian;
    let header =
        FileHeader64::<LittleEndian>::parse(bytes).map_err(|e| malformed(e.to_string()))?;
    let sections: Sections<'_> = header
        .sections(endian, bytes)
        .map_err(|e| malformed(e.to_string()))?;
    let symtab: Symbols<'_> = sections
        .symbols(endian, bytes, SHT_SYMTAB)
        .map_err(|e| malformed(e.to_string()))?;

    let names: Vec<String> = sections
        .iter()
        .map(|sh| {
            sections
                .section_name(endian, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .map_err(|e| malformed(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let find = |name: &str| names.iter().position(|n| n == name);

    if find("maps").is_some() {
        return Err(ElfError::LegacyMaps);
    }

    let section_data = |idx: usize| -> Result<&[u8], ElfError> {
        let sh = sections
            .section(object::SectionIndex(idx))
            .map_err(|e| malformed(e.to_string()))?;
        sh.data(endian, bytes).map_err(|_| {
            malformed(format!(
                "section {} extends past the end of the file",
                names.get(idx).map(String::as_str).unwrap_or("?")
            ))
        })
    };

    let license = match find("license") {
        Some(idx) => {
            let data = section_data(idx)?;
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            Some(String::from_utf8_lossy(&data[..end]).trim().to_string())
        }
        None => None,
    };

    let btf = match find(".BTF") {
        Some(idx) => Some(Btf::parse(section_data(idx)?)?),
        None => None,
    };

    let syms = read_symbols(&symtab)?;

    let programs = programs(&sections, &names, &syms)?;
    let maps = match find(".maps") {
        Some(idx) => {
            let btf = btf.as_ref().ok_or_else(|| {
                malformed("the .maps section needs BTF to describe its maps; compile with -g")
            })?;
            maps(btf, idx, &syms)?
        }
        None => Vec::new(),
    };
    let globals = globals(&sections, &names, &syms, btf.as_ref(), &section_data)?;

    let mut externs: Vec<String> = Vec::new();
    for s in &syms {
        if s.undefined && !s.name.is_empty() && !externs.contains(&s.name) {
            externs.push(s.name.clone());
        }
    }

    Ok(ObjectInfo {
        license,
        programs,
        maps,
        globals,
        externs,
        has_btf: btf.is_some(),
        has_btf_ext: find(".BTF.ext").is_some(),
        // A stripped object (see strip.rs) keeps an empty .debug_info header.
        has_dwarf: find(".debug_info")
            .and_then(|i| sections.section(object::SectionIndex(i)).ok())
            .is_some_and(|sh| sh.sh_size(endian) > 0),
        btf,
        core_relos: match find(".BTF.ext") {
            Some(idx) => crate::btf::core::core_relos(section_data(idx)?).unwrap_or_default(),
            None => Vec::new(),
        },
    })
}

/// The object name libbpf gives an object opened from `source` (a path, URL or image
/// reference): its last path component up to the first dot, in the characters a kernel
/// object name may hold; internal maps are named after it (`NAME.rodata`).
pub fn object_name(source: &str) -> String {
    let last = source
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(source);
    let base = last.split(['.', '@', ':']).next().unwrap_or(last);
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "obj".to_string()
    } else {
        name
    }
}

/// libbpf refuses `static` entry points ("program is static and not supported"), which aya,
/// cilium/ebpf and iproute2 load, and which bpfman's examples use. The binding of a function
/// symbol does not matter to the kernel, so a copy of the object with those symbols made global
/// loads the same code; `None` when there is nothing to change.
pub fn globalize_static_programs(bytes: &[u8]) -> Result<Option<Vec<u8>>, ElfError> {
    const SYM_SIZE: usize = 24;
    check_ident(bytes)?;
    let mut storage = Vec::new();
    let data = aligned(bytes, &mut storage);
    let endian = LittleEndian;
    let header = FileHeader64::<LittleEndian>::parse(data).map_err(|e| malformed(e.to_string()))?;
    let sections: Sections<'_> = header
        .sections(endian, data)
        .map_err(|e| malformed(e.to_string()))?;
    let Some(symtab_header) = sections.iter().find(|sh| sh.sh_type(endian) == SHT_SYMTAB) else {
        return Ok(None);
    };
    let base = usize::try_from(symtab_header.sh_offset(endian))
        .map_err(|_| malformed("symbol table offset out of range"))?;
    let symtab: Symbols<'_> = sections
        .symbols(endian, data, SHT_SYMTAB)
        .map_err(|e| malformed(e.to_string()))?;
    let mut out: Option<Vec<u8>> = None;
    for (idx, sym) in symtab.enumerate() {
        if sym.st_type() != STT_FUNC || sym.st_bind() != STB_LOCAL {
            continue;
        }
        let Some(sec) = symtab
            .symbol_section(endian, sym, idx)
            .map_err(|e| malformed(e.to_string()))?
        else {
            continue;
        };
        let sh = header_at(&sections, sec.0)?;
        let name = sections
            .section_name(endian, sh)
            .map_err(|e| malformed(e.to_string()))?;
        if !holds_programs(sh, name) {
            continue;
        }
        let at = idx
            .0
            .checked_mul(SYM_SIZE)
            .and_then(|o| o.checked_add(base + 4))
            .ok_or_else(|| malformed("symbol offset out of range"))?;
        let buf = out.get_or_insert_with(|| bytes.to_vec());
        let info = buf
            .get_mut(at)
            .ok_or_else(|| malformed("symbol table extends past the end of the file"))?;
        *info = (STB_GLOBAL << 4) | STT_FUNC;
    }
    Ok(out)
}

/// The `object` crate (without its `unaligned` feature) reads ELF structures in place and
/// rejects misaligned input, and callers' buffers (`include_bytes!`, slices into a larger file)
/// carry no alignment guarantee, so copy into an 8-aligned buffer when needed.
pub(crate) fn aligned<'a>(bytes: &'a [u8], storage: &'a mut Vec<u8>) -> &'a [u8] {
    const ALIGN: usize = 8;
    if bytes.as_ptr().align_offset(ALIGN) == 0 {
        return bytes;
    }
    *storage = vec![0u8; bytes.len() + ALIGN];
    // align_offset may in theory give up (usize::MAX); then the parser reports misalignment.
    let off = storage.as_ptr().align_offset(ALIGN).min(ALIGN);
    let dst = &mut storage[off..off + bytes.len()];
    dst.copy_from_slice(bytes);
    &storage[off..off + bytes.len()]
}

/// Whether `bytes` (at least the first 20 of a file) start a little-endian ELF64 for BPF. Checked
/// before the ELF parser runs, so the common mistakes (a text file, an x86 binary) get specific
/// errors instead of a parser message, and by a client before it sends a file to a daemon.
pub fn check_ident(bytes: &[u8]) -> Result<(), ElfError> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::NotElf);
    }
    let (Some(&class), Some(&data), Some(m)) = (bytes.get(4), bytes.get(5), bytes.get(18..20))
    else {
        return Err(malformed("truncated ELF header"));
    };
    let big_endian = match data {
        1 => false,
        2 => true,
        other => return Err(malformed(format!("unknown ELF data encoding {other}"))),
    };
    let machine = if big_endian {
        u16::from_be_bytes([m[0], m[1]])
    } else {
        u16::from_le_bytes([m[0], m[1]])
    };
    if machine != EM_BPF {
        return Err(ElfError::NotBpf { machine });
    }
    if big_endian {
        return Err(ElfError::BigEndian);
    }
    if class != 2 {
        return Err(malformed("32-bit ELF class; BPF objects are ELF64"));
    }
    Ok(())
}

fn read_symbols(symtab: &Symbols<'_>) -> Result<Vec<SymInfo>, ElfError> {
    let endian = LittleEndian;
    symtab
        .enumerate()
        .map(|(idx, sym): (SymbolIndex, _)| {
            let name = symtab
                .symbol_name(endian, sym)
                .map_err(|e| malformed(e.to_string()))?;
            let section = symtab
                .symbol_section(endian, sym, idx)
                .map_err(|e| malformed(e.to_string()))?;
            Ok(SymInfo {
                name: String::from_utf8_lossy(name).into_owned(),
                section: section.map(|s| s.0),
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                kind: sym.st_type(),
                undefined: sym.st_shndx(endian) == SHN_UNDEF,
            })
        })
        .collect()
}

/// libbpf's rule: every function in an executable section other than `.text` is a program.
fn holds_programs(sh: &SectionHeader64<LittleEndian>, name: &[u8]) -> bool {
    sh.sh_flags(LittleEndian) & u64::from(SHF_EXECINSTR) != 0 && name != b".text"
}

fn header_at<'a>(
    sections: &Sections<'a>,
    idx: usize,
) -> Result<&'a SectionHeader64<LittleEndian>, ElfError> {
    sections
        .section(object::SectionIndex(idx))
        .map_err(|e| malformed(e.to_string()))
}

/// libbpf treats every function in an executable section other than `.text` as a program,
/// whatever its binding: objects built for aya and cilium/ebpf often declare `static` entry
/// points. `.text` holds subprograms called from them.
fn programs(
    sections: &Sections<'_>,
    names: &[String],
    syms: &[SymInfo],
) -> Result<Vec<ProgramDef>, ElfError> {
    let endian = LittleEndian;
    let mut found: Vec<(usize, u64, ProgramDef)> = Vec::new();
    for s in syms {
        let Some(idx) = s.section else { continue };
        if s.kind != STT_FUNC || s.name.is_empty() {
            continue;
        }
        let sh = header_at(sections, idx)?;
        let section = names.get(idx).cloned().unwrap_or_default();
        if !holds_programs(sh, section.as_bytes()) {
            continue;
        }
        let end = s.value.checked_add(s.size);
        if end.is_none_or(|end| end > sh.sh_size(endian)) {
            return Err(malformed(format!(
                "program {} extends past the end of section {section}",
                s.name
            )));
        }
        found.push((
            idx,
            s.value,
            ProgramDef {
                name: s.name.clone(),
                section,
                insn_count: usize::try_from(s.size / BPF_INSN_SIZE).unwrap_or(usize::MAX),
            },
        ));
    }
    found.sort_by_key(|(idx, off, _)| (*idx, *off));
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

/// Reads one `__uint(name, N)` field: libbpf encodes N as the length of an array behind a
/// pointer so it lives only in BTF, costing no bytes in the section.
fn uint_field(btf: &Btf, map: &str, field: &str, ty: TypeId) -> Result<u32, ElfError> {
    let bad = || ElfError::BadMap {
        map: map.to_string(),
        reason: format!("field `{field}` must be declared as __uint({field}, N)"),
    };
    let Some(Type::Ptr { target }) = btf.get(btf.resolve(ty)) else {
        return Err(bad());
    };
    match btf.get(btf.resolve(*target)) {
        Some(Type::Array { len, .. }) => Ok(*len),
        _ => Err(bad()),
    }
}

/// Reads one `__type(name, T)` field, returning T's id.
fn type_field(btf: &Btf, map: &str, field: &str, ty: TypeId) -> Result<TypeId, ElfError> {
    match btf.get(btf.resolve(ty)) {
        Some(Type::Ptr { target }) => Ok(*target),
        _ => Err(ElfError::BadMap {
            map: map.to_string(),
            reason: format!("field `{field}` must be declared as __type({field}, T)"),
        }),
    }
}

/// Sizes may come from `__uint(key_size, N)`, from `__type(key, T)`, or both; libbpf refuses a
/// mismatch, and so does this.
fn merge_size(
    btf: &Btf,
    map: &str,
    what: &str,
    explicit: Option<u32>,
    ty: Option<TypeId>,
) -> Result<Option<u32>, ElfError> {
    let from_type = match ty {
        Some(t) => Some(btf.size_of(t).ok_or_else(|| ElfError::BadMap {
            map: map.to_string(),
            reason: format!("{what} type {} has no known size", btf.type_name(t)),
        })?),
        None => None,
    };
    match (explicit, from_type) {
        (Some(e), Some(t)) if e != t => Err(ElfError::BadMap {
            map: map.to_string(),
            reason: format!(
                "{what}_size {e} disagrees with {what} type {} ({t} bytes)",
                btf.type_name(ty.unwrap_or(0))
            ),
        }),
        (e, t) => Ok(e.or(t)),
    }
}

fn maps(btf: &Btf, maps_idx: usize, syms: &[SymInfo]) -> Result<Vec<MapDef>, ElfError> {
    let Some((_, Type::DataSec { vars, .. })) = btf.datasec(".maps") else {
        return Err(malformed(
            ".maps section has no matching DATASEC in BTF; compile with -g",
        ));
    };
    let offsets: HashMap<&str, u64> = syms
        .iter()
        .filter(|s| s.section == Some(maps_idx))
        .map(|s| (s.name.as_str(), s.value))
        .collect();

    let mut out: Vec<(u64, MapDef)> = Vec::new();
    for sv in vars {
        let Some(Type::Var { name, ty, .. }) = btf.get(sv.ty) else {
            return Err(malformed(format!(
                ".maps DATASEC entry {} is not a variable",
                sv.ty
            )));
        };
        let Some(Type::Struct { members, .. }) = btf.get(btf.resolve(*ty)) else {
            return Err(ElfError::BadMap {
                map: name.clone(),
                reason: format!(
                    "declared as {}, expected an anonymous struct of __uint/__type fields",
                    btf.type_name(*ty)
                ),
            });
        };
        let mut def = MapDef {
            name: name.clone(),
            map_type: 0,
            map_type_name: String::new(),
            key_size: None,
            value_size: None,
            max_entries: None,
            map_flags: 0,
            key_type: None,
            value_type: None,
            key_type_name: None,
            value_type_name: None,
            pinning: 0,
        };
        for m in members {
            let field = m.name.as_str();
            match field {
                "type" => def.map_type = uint_field(btf, name, field, m.ty)?,
                "key_size" => def.key_size = Some(uint_field(btf, name, field, m.ty)?),
                "value_size" => def.value_size = Some(uint_field(btf, name, field, m.ty)?),
                "max_entries" => def.max_entries = Some(uint_field(btf, name, field, m.ty)?),
                "map_flags" => def.map_flags = uint_field(btf, name, field, m.ty)?,
                "pinning" => def.pinning = uint_field(btf, name, field, m.ty)?,
                "key" => def.key_type = Some(type_field(btf, name, field, m.ty)?),
                "value" => def.value_type = Some(type_field(btf, name, field, m.ty)?),
                // numa_node, map_extra, and the initial contents of prog arrays and map-in-map
                // (`values`, `inner`) do not change how apiary presents the map.
                _ => {}
            }
        }
        def.key_size = merge_size(btf, name, "key", def.key_size, def.key_type)?;
        def.value_size = merge_size(btf, name, "value", def.value_size, def.value_type)?;
        def.key_type_name = def.key_type.map(|t| btf.type_name(t));
        def.value_type_name = def.value_type.map(|t| btf.type_name(t));
        def.map_type_name = map_type_name(def.map_type).to_string();
        let order = offsets.get(name.as_str()).copied().unwrap_or(u64::MAX);
        out.push((order, def));
    }
    // Stable sort: maps without a symbol keep their BTF order at the end.
    out.sort_by_key(|(off, _)| *off);
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

fn is_global_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"].iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn globals<'a>(
    sections: &Sections<'a>,
    names: &[String],
    syms: &[SymInfo],
    btf: Option<&Btf>,
    section_data: &dyn Fn(usize) -> Result<&'a [u8], ElfError>,
) -> Result<Vec<GlobalVar>, ElfError> {
    let endian = LittleEndian;
    let mut out: Vec<(usize, GlobalVar)> = Vec::new();
    for s in syms {
        let Some(idx) = s.section else { continue };
        if s.kind != STT_OBJECT {
            continue;
        }
        let Some(section) = names.get(idx) else {
            continue;
        };
        // A function's static locals are named `func.var` by clang (bpf_printk's format string
        // is `func.____fmt`): they are not variables anyone can set.
        if !is_global_section(section) || s.name.contains('.') {
            continue;
        }
        let sh = header_at(sections, idx)?;
        let end = s.value.checked_add(s.size);
        if end.is_none_or(|end| end > sh.sh_size(endian)) {
            return Err(malformed(format!(
                "variable {} extends past the end of section {section}",
                s.name
            )));
        }
        let default = if sh.sh_type(endian) == SHT_NOBITS {
            // sh_size is bounded by nothing for NOBITS; cap what a bogus symbol size can allocate.
            let size = usize::try_from(s.size)
                .ok()
                .filter(|n| *n <= bytes_limit())
                .ok_or_else(|| malformed(format!("variable {} is implausibly large", s.name)))?;
            vec![0u8; size]
        } else {
            let data = section_data(idx)?;
            let range = usize::try_from(s.value)
                .ok()
                .zip(end.and_then(|e| usize::try_from(e).ok()));
            range
                .and_then(|(a, b)| data.get(a..b))
                .ok_or_else(|| {
                    malformed(format!("variable {} lies outside its section data", s.name))
                })?
                .to_vec()
        };
        let type_id = btf.and_then(|b| b.datasec_var(section, &s.name));
        let type_name = btf.zip(type_id).map(|(b, t)| b.type_name(t));
        out.push((
            idx,
            GlobalVar {
                name: s.name.clone(),
                section: section.clone(),
                offset: s.value,
                size: s.size,
                type_id,
                type_name,
                default,
                read_only: section.starts_with(".rodata"),
            },
        ));
    }
    out.sort_by_key(|(idx, g)| (*idx, g.offset));
    Ok(out.into_iter().map(|(_, g)| g).collect())
}

/// Largest `.bss` variable inspect will materialise as zeros. The kernel caps a map value (and
/// so a global data section) well below this.
fn bytes_limit() -> usize {
    1 << 30
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf;
    use serde_json::json;

    /// Built from tests/fixtures/bpf/inspect.bpf.c by the fixtures crate's build script.
    static OBJ: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        std::fs::read(apiary_fixtures::object("inspect")).expect("fixture object was built")
    });

    fn info() -> ObjectInfo {
        inspect(&OBJ).expect("fixture object inspects")
    }

    #[test]
    fn lists_license_programs_and_externs() {
        let info = info();
        assert_eq!(info.license.as_deref(), Some("GPL"));
        assert!(info.has_btf && info.has_btf_ext);
        // Instruction counts depend on the compiler's flags; only the trivial ones are fixed.
        let progs: Vec<(&str, &str)> = info
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.section.as_str()))
            .collect();
        assert_eq!(
            progs,
            vec![
                ("handle_exec", "tracepoint/syscalls/sys_enter_execve"),
                ("handle_exit", "kprobe/do_exit"),
                ("handle_exit2", "kprobe/do_exit"),
                ("xdp_pass", "xdp"),
            ]
        );
        assert!(info.programs[0].insn_count > 10);
        assert_eq!(info.programs[3].insn_count, 2);
        assert_eq!(info.externs, vec!["LINUX_KERNEL_VERSION".to_string()]);
        let btf = info.btf.as_ref().unwrap();
        let funcs = btf.func_names();
        assert!(funcs.contains(&"helper".to_string()));
        assert!(!info.programs.iter().any(|p| p.name == "helper"));
    }

    #[test]
    fn reads_btf_defined_maps() {
        let info = info();
        let btf = info.btf.as_ref().unwrap();
        assert_eq!(info.maps.len(), 2);
        let events = &info.maps[0];
        assert_eq!(events.name, "events");
        assert_eq!(
            (events.map_type, events.map_type_name.as_str()),
            (27, "ringbuf")
        );
        assert_eq!(events.max_entries, Some(4096));
        assert_eq!((events.key_size, events.value_size), (None, None));
        assert_eq!(events.key_type, None);
        assert_eq!(events.pinning, 0);

        let counts = &info.maps[1];
        assert_eq!(counts.name, "counts");
        assert_eq!(
            (counts.map_type, counts.map_type_name.as_str()),
            (1, "hash")
        );
        assert_eq!(counts.max_entries, Some(1024));
        assert_eq!(counts.key_size, Some(8));
        assert_eq!(counts.value_size, Some(72));
        assert_eq!(counts.key_type_name.as_deref(), Some("struct key"));
        assert_eq!(counts.value_type_name.as_deref(), Some("struct event"));
        assert_eq!(counts.value_type, btf.find_struct("event"));
        assert_eq!(counts.pinning, 1);
        assert_eq!(info.map("counts"), Some(counts));
        assert_eq!(info.program("xdp_pass").map(|p| p.insn_count), Some(2));
        assert!(info.map("missing").is_none());
    }

    #[test]
    fn reads_globals_with_types_and_defaults() {
        let info = info();
        let btf = info.btf.as_ref().unwrap();
        type Row<'a> = (&'a str, &'a str, u64, u64, Option<&'a str>, bool);
        let summary: Vec<Row<'_>> = info
            .globals
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.section.as_str(),
                    g.offset,
                    g.size,
                    g.type_name.as_deref(),
                    g.read_only,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("target_pid", ".rodata", 0, 4, Some("u32"), true),
                ("prefix", ".rodata", 4, 8, Some("char[8]"), true),
                ("hits", ".data", 0, 8, Some("u64"), false),
                ("cur_state", ".data", 8, 4, Some("enum state"), false),
                ("total", ".bss", 0, 8, Some("u64"), false),
                ("scratch", ".bss", 8, 72, Some("struct event"), false),
            ]
        );
        let get = |n: &str| info.global(n).unwrap();
        let decode = |n: &str| {
            let g = get(n);
            btf::decode(btf, g.type_id.unwrap(), &g.default).unwrap()
        };
        assert_eq!(get("target_pid").default, 42u32.to_le_bytes());
        assert_eq!(decode("target_pid"), json!(42));
        assert_eq!(decode("prefix"), json!("abc"));
        assert_eq!(decode("hits"), json!(7));
        assert_eq!(decode("cur_state"), json!("STATE_RUNNING"));
        assert_eq!(get("scratch").default, vec![0u8; 72]);
        assert_eq!(decode("scratch")["comm"], json!(""));
        assert_eq!(decode("scratch")["st"], json!("STATE_IDLE"));

        // --set on a const volatile global goes through the qualifiers.
        let t = get("target_pid").type_id.unwrap();
        assert_eq!(btf::encode(btf, t, "7").unwrap(), 7u32.to_le_bytes());
        let p = get("prefix").type_id.unwrap();
        assert_eq!(btf::encode(btf, p, "xyz").unwrap(), b"xyz\0\0\0\0\0");
        assert!(btf::encode(btf, p, "too-long!").is_err());
    }

    #[test]
    fn serializes_without_btf() {
        let v = serde_json::to_value(info()).unwrap();
        assert!(v.get("btf").is_none());
        assert_eq!(v["maps"][1]["key_type_name"], json!("struct key"));
        assert_eq!(
            v["programs"][0]["section"],
            json!("tracepoint/syscalls/sys_enter_execve")
        );
    }

    #[test]
    fn rejects_non_elf_and_non_bpf() {
        assert!(matches!(inspect(b""), Err(ElfError::NotElf)));
        let err = inspect(b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(matches!(err, ElfError::NotElf));
        assert_eq!(err.to_string(), "not an ELF file");

        let mut x86 = OBJ.to_vec();
        x86[18..20].copy_from_slice(&62u16.to_le_bytes());
        assert!(matches!(
            inspect(&x86),
            Err(ElfError::NotBpf { machine: 62 })
        ));

        let mut be = OBJ.to_vec();
        be[5] = 2;
        be[18..20].copy_from_slice(&EM_BPF.to_be_bytes());
        assert!(matches!(inspect(&be), Err(ElfError::BigEndian)));

        let mut elf32 = OBJ.to_vec();
        elf32[4] = 1;
        assert!(matches!(inspect(&elf32), Err(ElfError::Malformed { .. })));
    }

    #[test]
    fn misaligned_input_is_accepted() {
        let mut buf = vec![0u8; OBJ.len() + 1];
        buf[1..].copy_from_slice(&OBJ);
        let shifted = &buf[1..];
        assert_ne!(shifted.as_ptr().align_offset(8), 0);
        let info = inspect(shifted).unwrap();
        assert_eq!(info.programs.len(), 4);
        assert_eq!(info.maps.len(), 2);
    }

    #[test]
    fn truncated_objects_are_errors() {
        for n in (0..OBJ.len()).step_by(7).chain([OBJ.len() - 1, 19, 63, 64]) {
            let r = inspect(&OBJ[..n]);
            assert!(r.is_err(), "prefix of {n} bytes inspected");
        }
    }

    #[test]
    fn corrupt_objects_never_panic() {
        // Overwrite each byte in turn; whatever inspect makes of it, it must return.
        let mut buf = OBJ.to_vec();
        let mut errors = 0;
        for i in (0..buf.len()).step_by(3) {
            let saved = buf[i];
            buf[i] = 0xff;
            if inspect(&buf).is_err() {
                errors += 1;
            }
            buf[i] = saved;
        }
        assert!(errors > 0);
    }

    #[test]
    fn btf_section_truncations_are_errors() {
        let info = info();
        let btf = info.btf.unwrap();
        assert_eq!(btf.type_name(btf.find_by_name("u64").unwrap()), "u64");
        let start = OBJ
            .windows(4)
            .position(|w| w == [0x9f, 0xeb, 1, 0])
            .expect("fixture contains BTF");
        let hdr = |o: usize| u32::from_le_bytes(OBJ[start + o..start + o + 4].try_into().unwrap());
        let len = 24 + hdr(12) as usize + hdr(20) as usize;
        let blob = &OBJ[start..start + len];
        assert_eq!(Btf::parse(blob).unwrap().len(), btf.len());
        for n in 0..len {
            assert!(
                Btf::parse(&blob[..n]).is_err(),
                "BTF prefix of {n} bytes parsed"
            );
        }
    }

    #[test]
    fn legacy_maps_section_is_reported() {
        let mut obj = OBJ.to_vec();
        let pos = obj
            .windows(6)
            .rposition(|w| w == b".maps\0")
            .expect("section name present");
        obj[pos..pos + 6].copy_from_slice(b"maps\0\0");
        assert!(matches!(inspect(&obj), Err(ElfError::LegacyMaps)));
    }

    #[test]
    fn map_type_names_round_trip() {
        assert_eq!(map_type_name(1), "hash");
        assert_eq!(map_type_name(2), "array");
        assert_eq!(map_type_name(6), "percpu_array");
        assert_eq!(map_type_name(27), "ringbuf");
        assert_eq!(map_type_name(9999), "unknown");
        for t in 0..MAP_TYPES.len() as u32 {
            assert_eq!(map_type_from_name(map_type_name(t)), Some(t));
        }
        assert_eq!(map_type_from_name("BPF_MAP_TYPE_LRU_HASH"), Some(9));
        assert_eq!(map_type_from_name("nope"), None);
    }

    #[test]
    fn object_names_follow_libbpf() {
        assert_eq!(object_name("/x/count_getppid.bpf.o"), "count_getppid");
        assert_eq!(object_name("https://h/p/prog.o"), "prog");
        assert_eq!(
            object_name("localhost:5000/bytecode/xdp-pass@sha256:ab"),
            "xdp_pass"
        );
        assert_eq!(object_name(".o"), "obj");
    }

    #[test]
    fn global_section_names() {
        assert!(is_global_section(".rodata"));
        assert!(is_global_section(".data.custom"));
        assert!(is_global_section(".bss"));
        assert!(!is_global_section(".maps"));
        assert!(!is_global_section(".kconfig"));
        assert!(!is_global_section(".database"));
    }
}
