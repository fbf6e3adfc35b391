//! Types from an object's DWARF (`.debug_info`), for the ones clang leaves out of BTF.
//!
//! clang emits BTF only for types reachable from globals, maps and function signatures. An
//! event struct that is only the type of a local variable (`struct event e = {};` handed to
//! `bpf_perf_event_output`, or a `bpf_ringbuf_reserve` result cast to `struct event *`) is in
//! the DWARF that `-g` produces but not in BTF. This module owns reading that DWARF: the debug
//! sections of a relocatable BPF object with their `.rel.debug_*` relocations applied, the
//! named structs, unions, enums and typedefs in it, and the conversion of one of them (with
//! everything it refers to) into the project's BTF [`Type`] model, appended to the object's
//! [`Btf`], so decoding never needs to know where a type came from.
//!
//! Input is untrusted: recursion is depth-limited, the number of converted types is capped and
//! every reference is checked, so bad DWARF yields a [`DwarfError`] or a missing type, never a
//! panic.

use crate::btf::{Btf, BtfError, Member, Type, TypeId};
use gimli::{constants as dw, AttributeValue, DwTag, EndianSlice, LittleEndian, SectionId};
use object::elf::{FileHeader64, SHT_SYMTAB};
use object::read::elf::{FileHeader, Rel, Rela, SectionHeader, Sym};
use std::collections::HashMap;

/// A struct nested deeper than this is a cycle or hostile input.
const MAX_DEPTH: usize = 64;
/// One conversion never adds more types than this (a real event struct needs a few dozen).
const MAX_TYPES: usize = 100_000;

// BPF relocation types (linux/elf-em.h does not name them; llvm's BPF backend does). Debug
// sections use the ABS ones; the others are accepted because they mean the same arithmetic.
const R_BPF_64_64: u32 = 1;
const R_BPF_64_ABS64: u32 = 2;
const R_BPF_64_ABS32: u32 = 3;
const R_BPF_64_NODYLD32: u32 = 4;
const R_BPF_64_32: u32 = 10;

/// Why the debug information of an object could not be read or converted.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("cannot read the object's debug sections: {reason}")]
    Elf { reason: String },
    #[error("malformed DWARF in .debug_info: {reason}")]
    Malformed { reason: String },
    #[error("DWARF type {name} is too deeply nested or refers to too many types to convert")]
    TooComplex { name: String },
    #[error("DWARF type {name} converts to invalid BTF: {source}")]
    Btf {
        name: String,
        #[source]
        source: BtfError,
    },
}

fn elf_err(e: impl std::fmt::Display) -> DwarfError {
    DwarfError::Elf {
        reason: e.to_string(),
    }
}

fn dwarf_err(e: gimli::Error) -> DwarfError {
    DwarfError::Malformed {
        reason: e.to_string(),
    }
}

/// One debugging information entry, with just the attributes type conversion needs.
#[derive(Debug, Default, Clone)]
struct Die {
    tag: u16,
    name: Option<String>,
    /// Index of the DW_AT_type entry in the same unit.
    ty: Option<usize>,
    byte_size: Option<u64>,
    bit_size: Option<u64>,
    /// DWARF 2/3 bitfields: bits from the most significant bit of the storage unit.
    bit_offset: Option<u64>,
    /// DWARF 4+ bitfields: bits from the start of the enclosing struct.
    data_bit_offset: Option<u64>,
    member_location: Option<u64>,
    encoding: Option<u64>,
    count: Option<u64>,
    upper_bound: Option<u64>,
    lower_bound: Option<u64>,
    const_s: Option<i64>,
    const_u: Option<u64>,
    declaration: bool,
    /// A direct child of a compile unit: a type declared at file scope.
    top_level: bool,
    /// DW_AT_decl_file, as an index into the unit's line-program file table.
    decl_file: Option<u64>,
    /// The source file declaring a top-level entry, resolved from `decl_file`.
    file: Option<String>,
    children: Vec<usize>,
}

/// A struct or union defined at file scope that could be an event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// What [`DebugInfo::import`] takes: the struct's tag name, or the typedef's name for
    /// `typedef struct { ... } event_t;`.
    pub name: String,
    pub size: u64,
    pub is_union: bool,
    /// The source file that declares it, as the compiler recorded it (`vmlinux.h`,
    /// `/usr/include/linux/bpf.h`, `opensnoop.h`).
    pub file: Option<String>,
}

impl Candidate {
    /// Declared in a kernel header: a generated `vmlinux*.h` or a system header. Such structs
    /// are in an object's DWARF because the program touches kernel data, never as its record.
    pub fn from_kernel_header(&self) -> bool {
        self.file.as_deref().is_some_and(|f| {
            let base = f.rsplit('/').next().unwrap_or(f);
            base.starts_with("vmlinux") || f.starts_with("/usr/include/")
        })
    }
}

/// The type entries of an object's DWARF.
#[derive(Debug, Clone, Default)]
pub struct DebugInfo {
    dies: Vec<Die>,
}

/// Copies the `.debug_*` sections of a relocatable ELF object and applies their relocations.
/// Clang leaves the cross-section offsets in `.debug_info` (abbreviations, string offsets,
/// line tables) as REL entries against section symbols, whose value is 0, so the stored values
/// are already right for those; symbols with a value (functions in a multi-function section)
/// are not, so relocations are applied rather than assumed away.
fn debug_sections(bytes: &[u8]) -> Result<HashMap<String, Vec<u8>>, DwarfError> {
    let mut storage = Vec::new();
    let bytes = crate::elf::aligned(bytes, &mut storage);
    let endian = object::LittleEndian;
    let header = FileHeader64::<object::LittleEndian>::parse(bytes).map_err(elf_err)?;
    let sections = header.sections(endian, bytes).map_err(elf_err)?;
    let symtab = sections
        .symbols(endian, bytes, SHT_SYMTAB)
        .map_err(elf_err)?;
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    let mut index_of: HashMap<usize, String> = HashMap::new();
    for (i, sh) in sections.iter().enumerate() {
        let name = sections.section_name(endian, sh).map_err(elf_err)?;
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(".debug_") {
            let data = sh.data(endian, bytes).map_err(elf_err)?;
            out.insert(name.clone(), data.to_vec());
            index_of.insert(i, name);
        }
    }
    let sym_value = |idx: u32| -> u64 {
        if idx == 0 {
            return 0;
        }
        symtab
            .symbol(object::SymbolIndex(idx as usize))
            .map(|s| s.st_value(endian))
            .unwrap_or(0)
    };
    for sh in sections.iter() {
        let target = sh.sh_info(endian) as usize;
        let Some(name) = index_of.get(&target) else {
            continue;
        };
        let Some(data) = out.get_mut(name) else {
            continue;
        };
        if let Some((rels, _)) = sh.rel(endian, bytes).map_err(elf_err)? {
            for r in rels {
                let (off, sym, ty) = (r.r_offset(endian), r.r_sym(endian), r.r_type(endian));
                apply(data, off, ty, sym_value(sym), None);
            }
        }
        if let Some((relas, _)) = sh.rela(endian, bytes).map_err(elf_err)? {
            for r in relas {
                let (off, sym, ty, add) = (
                    r.r_offset(endian),
                    r.r_sym(endian, false),
                    r.r_type(endian, false),
                    r.r_addend(endian),
                );
                apply(data, off, ty, sym_value(sym), Some(add));
            }
        }
    }
    Ok(out)
}

/// One relocation: S + A, where A is the stored value for REL and the explicit addend for RELA.
/// Relocations out of range or of other types are skipped: the worst outcome is a wrong name,
/// which the reader treats like any other bad reference.
fn apply(data: &mut [u8], off: u64, ty: u32, sym: u64, addend: Option<i64>) {
    let off = off as usize;
    let width = match ty {
        R_BPF_64_64 | R_BPF_64_ABS64 => 8,
        R_BPF_64_ABS32 | R_BPF_64_NODYLD32 | R_BPF_64_32 => 4,
        _ => return,
    };
    let Some(slot) = off
        .checked_add(width)
        .and_then(|end| data.get_mut(off..end))
    else {
        return;
    };
    let mut b = [0u8; 8];
    b[..width].copy_from_slice(slot);
    let stored = u64::from_le_bytes(b);
    let v = sym.wrapping_add(addend.map(|a| a as u64).unwrap_or(stored));
    slot.copy_from_slice(&v.to_le_bytes()[..width]);
}

/// The path of file `index` of the unit's line program (directory joined when relative).
fn file_name(
    dwarf: &gimli::Dwarf<EndianSlice<'_, LittleEndian>>,
    unit: &gimli::Unit<EndianSlice<'_, LittleEndian>>,
    index: u64,
) -> Option<String> {
    let header = unit.line_program.as_ref()?.header();
    let entry = header.file(index)?;
    let text = |v| {
        dwarf
            .attr_string(unit, v)
            .ok()
            .map(|s| s.to_string_lossy().into_owned())
    };
    let name = text(entry.path_name())?;
    if name.starts_with('/') {
        return Some(name);
    }
    match entry.directory(header).and_then(text) {
        Some(dir) if !dir.is_empty() => Some(format!("{dir}/{name}")),
        _ => Some(name),
    }
}

fn udata(v: &AttributeValue<EndianSlice<'_, LittleEndian>>) -> Option<u64> {
    v.udata_value()
}

/// `DW_AT_data_member_location` is a constant in DWARF 3+; older producers write an expression,
/// which for C members is always `DW_OP_plus_uconst N`.
fn member_location(v: &AttributeValue<EndianSlice<'_, LittleEndian>>) -> Option<u64> {
    if let Some(n) = v.udata_value() {
        return Some(n);
    }
    let expr = v.exprloc_value()?;
    let bytes = expr.0.slice();
    if bytes.first() != Some(&dw::DW_OP_plus_uconst.0) {
        return None;
    }
    let mut n: u64 = 0;
    for (i, b) in bytes[1..].iter().enumerate() {
        if i >= 10 {
            return None;
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

impl DebugInfo {
    /// Reads the DWARF of a BPF object; `None` when it has no `.debug_info` (not built with `-g`).
    pub fn read(object: &[u8]) -> Result<Option<DebugInfo>, DwarfError> {
        let sections = debug_sections(object)?;
        if !sections.contains_key(".debug_info") {
            return Ok(None);
        }
        let empty: Vec<u8> = Vec::new();
        let owned = gimli::DwarfSections::load(|id: SectionId| {
            Ok::<_, DwarfError>(sections.get(id.name()).unwrap_or(&empty))
        })?;
        let dwarf = owned.borrow(|s| EndianSlice::new(s.as_slice(), LittleEndian));
        let mut info = DebugInfo::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(dwarf_err)? {
            let unit = dwarf.unit(header).map_err(dwarf_err)?;
            info.read_unit(&dwarf, &unit)?;
        }
        Ok(Some(info))
    }

    fn read_unit(
        &mut self,
        dwarf: &gimli::Dwarf<EndianSlice<'_, LittleEndian>>,
        unit: &gimli::Unit<EndianSlice<'_, LittleEndian>>,
    ) -> Result<(), DwarfError> {
        let mut at: HashMap<usize, usize> = HashMap::new();
        let mut refs: Vec<(usize, usize)> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        let mut cursor = unit.entries();
        while let Some(entry) = cursor.next_dfs().map_err(dwarf_err)? {
            let depth = usize::try_from(entry.depth()).unwrap_or(0);
            stack.truncate(depth);
            let idx = self.dies.len();
            let mut die = Die {
                tag: entry.tag().0,
                top_level: depth == 1,
                ..Die::default()
            };
            for attr in entry.attrs() {
                let v = attr.value();
                match attr.name() {
                    dw::DW_AT_name => {
                        if let Ok(s) = dwarf.attr_string(unit, v) {
                            die.name = Some(s.to_string_lossy().into_owned());
                        }
                    }
                    dw::DW_AT_type => {
                        if let AttributeValue::UnitRef(o) = v {
                            refs.push((idx, o.0));
                        }
                    }
                    dw::DW_AT_byte_size => die.byte_size = udata(&v),
                    dw::DW_AT_bit_size => die.bit_size = udata(&v),
                    dw::DW_AT_bit_offset => die.bit_offset = udata(&v),
                    dw::DW_AT_data_bit_offset => die.data_bit_offset = udata(&v),
                    dw::DW_AT_data_member_location => die.member_location = member_location(&v),
                    dw::DW_AT_encoding => {
                        die.encoding = match v {
                            AttributeValue::Encoding(e) => Some(u64::from(e.0)),
                            other => udata(&other),
                        }
                    }
                    dw::DW_AT_count => die.count = udata(&v),
                    dw::DW_AT_upper_bound => die.upper_bound = udata(&v),
                    dw::DW_AT_lower_bound => die.lower_bound = udata(&v),
                    dw::DW_AT_const_value => {
                        die.const_s = v.sdata_value();
                        die.const_u = v.udata_value();
                    }
                    dw::DW_AT_declaration => {
                        die.declaration = matches!(v, AttributeValue::Flag(true))
                    }
                    dw::DW_AT_decl_file if depth == 1 => {
                        die.decl_file = match v {
                            AttributeValue::FileIndex(i) => Some(i),
                            other => udata(&other),
                        }
                    }
                    _ => {}
                }
            }
            if let Some(&parent) = stack.last() {
                if let Some(p) = self.dies.get_mut(parent) {
                    p.children.push(idx);
                }
            }
            at.insert(entry.offset().0, idx);
            self.dies.push(die);
            stack.push(idx);
        }
        for (idx, off) in refs {
            let target = at.get(&off).copied();
            if let Some(d) = self.dies.get_mut(idx) {
                d.ty = target;
            }
        }
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        let first = at.values().copied().min().unwrap_or(self.dies.len());
        for d in self.dies.iter_mut().skip(first) {
            let Some(i) = d.decl_file else { continue };
            d.file = names
                .entry(i)
                .or_insert_with(|| file_name(dwarf, unit, i))
                .clone();
        }
        Ok(())
    }

    fn die(&self, idx: usize) -> Option<&Die> {
        self.dies.get(idx)
    }

    /// Follows typedefs and qualifiers (not pointers) to the entry that defines the layout.
    fn strip(&self, mut idx: usize) -> usize {
        for _ in 0..MAX_DEPTH {
            match self.die(idx) {
                Some(d)
                    if matches!(
                        DwTag(d.tag),
                        dw::DW_TAG_typedef
                            | dw::DW_TAG_const_type
                            | dw::DW_TAG_volatile_type
                            | dw::DW_TAG_restrict_type
                            | dw::DW_TAG_atomic_type
                    ) =>
                {
                    match d.ty {
                        Some(t) => idx = t,
                        None => return idx,
                    }
                }
                _ => return idx,
            }
        }
        idx
    }

    fn is_record(&self, idx: usize) -> bool {
        self.die(idx).is_some_and(|d| {
            matches!(
                DwTag(d.tag),
                dw::DW_TAG_structure_type | dw::DW_TAG_union_type | dw::DW_TAG_class_type
            ) && !d.declaration
        })
    }

    /// The file-scope definition called `name`. `struct x`, `union x` and `enum x` restrict
    /// the kind; a bare name matches a struct, union, enum, typedef or base type, preferring
    /// struct and union tags (what `--event-type event` means) over typedefs.
    fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        let (tags, bare): (&[DwTag], &str) = if let Some(r) = name.strip_prefix("struct ") {
            (
                &[dw::DW_TAG_structure_type, dw::DW_TAG_class_type],
                r.trim(),
            )
        } else if let Some(r) = name.strip_prefix("union ") {
            (&[dw::DW_TAG_union_type], r.trim())
        } else if let Some(r) = name.strip_prefix("enum ") {
            (&[dw::DW_TAG_enumeration_type], r.trim())
        } else {
            (
                &[
                    dw::DW_TAG_structure_type,
                    dw::DW_TAG_union_type,
                    dw::DW_TAG_class_type,
                    dw::DW_TAG_enumeration_type,
                    dw::DW_TAG_typedef,
                    dw::DW_TAG_base_type,
                ],
                name,
            )
        };
        // Definitions first: a `struct x;` declaration may come before the full type. Nested
        // definitions count too (a struct defined inside another is still file-scope in C).
        tags.iter().find_map(|tag| {
            self.dies
                .iter()
                .position(|d| d.tag == tag.0 && !d.declaration && d.name.as_deref() == Some(bare))
        })
    }

    /// Structs and unions defined at file scope with a name (their own, or a typedef's for an
    /// anonymous one) that are not embedded by value in another such struct: the shapes an
    /// event record can have. In declaration order.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut embedded = vec![false; self.dies.len()];
        for d in &self.dies {
            if !matches!(
                DwTag(d.tag),
                dw::DW_TAG_structure_type | dw::DW_TAG_union_type | dw::DW_TAG_class_type
            ) {
                continue;
            }
            for &c in &d.children {
                let Some(m) = self.die(c) else { continue };
                if m.tag != dw::DW_TAG_member.0 {
                    continue;
                }
                // Through arrays too: `struct span spans[4]` embeds struct span.
                let mut t = m.ty.map(|t| self.strip(t));
                for _ in 0..MAX_DEPTH {
                    match t.and_then(|i| self.die(i)) {
                        Some(a) if a.tag == dw::DW_TAG_array_type.0 => {
                            t = a.ty.map(|x| self.strip(x))
                        }
                        _ => break,
                    }
                }
                if let Some(slot) = t.and_then(|i| embedded.get_mut(i)) {
                    *slot = true;
                }
            }
        }
        let mut out: Vec<Candidate> = Vec::new();
        for (i, d) in self.dies.iter().enumerate() {
            if !d.top_level {
                continue;
            }
            let (name, rec) = match DwTag(d.tag) {
                dw::DW_TAG_typedef => match (d.name.as_ref(), d.ty) {
                    // Only `typedef struct { ... } name;`: a typedef of a named struct is the
                    // struct under a second name and is listed by its tag.
                    (Some(n), Some(t))
                        if self.is_record(t) && self.die(t).is_some_and(|s| s.name.is_none()) =>
                    {
                        (n.clone(), t)
                    }
                    _ => continue,
                },
                _ if self.is_record(i) => match &d.name {
                    Some(n) => (n.clone(), i),
                    None => continue,
                },
                _ => continue,
            };
            if embedded.get(rec).copied().unwrap_or(false) {
                continue;
            }
            let Some(r) = self.die(rec) else { continue };
            if out.iter().any(|c| c.name == name) {
                continue;
            }
            out.push(Candidate {
                name,
                size: r.byte_size.unwrap_or(0),
                is_union: r.tag == dw::DW_TAG_union_type.0,
                file: d.file.clone(),
            });
        }
        out
    }

    /// Converts the type called `name` (see [`DebugInfo::find`] for the spelling) and what it
    /// refers to into BTF types appended to `btf`; returns its id, or `None` if the DWARF has
    /// no such type. Pointers keep only the name of a struct they point to (as a forward
    /// declaration): an event shows addresses, and following them could pull in half a kernel.
    pub fn import(&self, name: &str, btf: &mut Btf) -> Result<Option<TypeId>, DwarfError> {
        let Some(idx) = self.find(name) else {
            return Ok(None);
        };
        let base = TypeId::try_from(btf.len()).map_err(|_| DwarfError::TooComplex {
            name: name.to_string(),
        })?;
        let mut c = Converter {
            info: self,
            base,
            types: Vec::new(),
            memo: HashMap::new(),
            index_type: None,
            name,
        };
        let id = c.convert(Some(idx), false, 0)?;
        btf.append(c.types).map_err(|source| DwarfError::Btf {
            name: name.to_string(),
            source,
        })?;
        Ok(Some(id))
    }
}

struct Converter<'a> {
    info: &'a DebugInfo,
    base: TypeId,
    types: Vec<Type>,
    /// Entry (and whether it was reached through a pointer) to its new id.
    memo: HashMap<(usize, bool), TypeId>,
    index_type: Option<TypeId>,
    name: &'a str,
}

impl Converter<'_> {
    fn too_complex(&self) -> DwarfError {
        DwarfError::TooComplex {
            name: self.name.to_string(),
        }
    }

    fn reserve(&mut self) -> Result<(TypeId, usize), DwarfError> {
        if self.types.len() >= MAX_TYPES {
            return Err(self.too_complex());
        }
        let pos = self.types.len();
        let id = TypeId::try_from(pos)
            .ok()
            .and_then(|p| self.base.checked_add(p))
            .ok_or_else(|| self.too_complex())?;
        self.types.push(Type::Void);
        Ok((id, pos))
    }

    fn add(&mut self, t: Type) -> Result<TypeId, DwarfError> {
        let (id, pos) = self.reserve()?;
        self.types[pos] = t;
        Ok(id)
    }

    /// BTF arrays name an index type; clang uses an int called `__ARRAY_SIZE_TYPE__`.
    fn index(&mut self) -> Result<TypeId, DwarfError> {
        if let Some(i) = self.index_type {
            return Ok(i);
        }
        let id = self.add(Type::Int {
            name: "__ARRAY_SIZE_TYPE__".into(),
            size: 4,
            signed: false,
            is_bool: false,
            is_char: false,
            bits: 32,
            offset: 0,
        })?;
        self.index_type = Some(id);
        Ok(id)
    }

    /// `behind_pointer`: the entry is a pointer's target, so structs and unions become forward
    /// declarations.
    fn convert(
        &mut self,
        idx: Option<usize>,
        behind_pointer: bool,
        depth: usize,
    ) -> Result<TypeId, DwarfError> {
        let Some(idx) = idx else { return Ok(0) };
        if depth > MAX_DEPTH {
            return Err(self.too_complex());
        }
        if let Some(id) = self.memo.get(&(idx, behind_pointer)) {
            return Ok(*id);
        }
        let Some(d) = self.info.die(idx) else {
            return Ok(0);
        };
        let d = d.clone();
        let name = d.name.clone().unwrap_or_default();
        let (id, pos) = self.reserve()?;
        // Recorded before recursing so a type that reaches itself ends at this id.
        self.memo.insert((idx, behind_pointer), id);
        let next = depth + 1;
        let t = match DwTag(d.tag) {
            dw::DW_TAG_base_type => {
                let size = d.byte_size.unwrap_or(0) as u32;
                match d.encoding.map(|e| e as u8) {
                    Some(e) if e == dw::DW_ATE_float.0 => Type::Float { name, size },
                    enc => {
                        // Mirrors clang's BTF: `char` is a signed INT without the CHAR flag, so
                        // types from DWARF and from BTF decode alike.
                        let signed = enc == Some(dw::DW_ATE_signed.0)
                            || enc == Some(dw::DW_ATE_signed_char.0);
                        Type::Int {
                            name,
                            size,
                            signed,
                            is_bool: enc == Some(dw::DW_ATE_boolean.0),
                            is_char: false,
                            bits: size.saturating_mul(8),
                            offset: 0,
                        }
                    }
                }
            }
            dw::DW_TAG_pointer_type | dw::DW_TAG_reference_type => Type::Ptr {
                target: self.convert(d.ty, true, next)?,
            },
            dw::DW_TAG_typedef => Type::Typedef {
                name,
                target: self.convert(d.ty, behind_pointer, next)?,
            },
            dw::DW_TAG_const_type => Type::Const {
                target: self.convert(d.ty, behind_pointer, next)?,
            },
            dw::DW_TAG_volatile_type => Type::Volatile {
                target: self.convert(d.ty, behind_pointer, next)?,
            },
            dw::DW_TAG_restrict_type => Type::Restrict {
                target: self.convert(d.ty, behind_pointer, next)?,
            },
            // `_Atomic T` has T's layout, and BTF has no kind for it.
            dw::DW_TAG_atomic_type => Type::Volatile {
                target: self.convert(d.ty, behind_pointer, next)?,
            },
            dw::DW_TAG_enumeration_type => {
                let signed = match d
                    .ty
                    .map(|t| self.info.strip(t))
                    .and_then(|t| self.info.die(t))
                {
                    Some(u) => {
                        u.encoding == Some(u64::from(dw::DW_ATE_signed.0))
                            || u.encoding == Some(u64::from(dw::DW_ATE_signed_char.0))
                    }
                    None => d
                        .children
                        .iter()
                        .filter_map(|&c| self.info.die(c))
                        .any(|e| e.const_s.is_some_and(|v| v < 0) && e.const_u.is_none()),
                };
                let values = d
                    .children
                    .iter()
                    .filter_map(|&c| self.info.die(c))
                    .filter(|e| e.tag == dw::DW_TAG_enumerator.0)
                    .map(|e| {
                        let v = if signed {
                            e.const_s.unwrap_or(0)
                        } else {
                            e.const_u.map(|u| u as i64).or(e.const_s).unwrap_or(0)
                        };
                        (e.name.clone().unwrap_or_default(), v)
                    })
                    .collect();
                Type::Enum {
                    name,
                    size: d.byte_size.unwrap_or(4) as u32,
                    signed,
                    values,
                }
            }
            dw::DW_TAG_array_type => {
                let elem = self.convert(d.ty, behind_pointer, next)?;
                let dims: Vec<u32> = d
                    .children
                    .iter()
                    .filter_map(|&c| self.info.die(c))
                    .filter(|s| s.tag == dw::DW_TAG_subrange_type.0)
                    .map(|s| {
                        // No count and no bound: a flexible array member (`char data[]`).
                        let n = s.count.or_else(|| {
                            s.upper_bound
                                .map(|u| u.saturating_sub(s.lower_bound.unwrap_or(0)) + 1)
                        });
                        u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX)
                    })
                    .collect();
                let index = self.index()?;
                // `int a[2][3]` is an array of 2 arrays of 3: build from the innermost.
                let mut t = elem;
                for (i, len) in dims.iter().enumerate().rev() {
                    let a = Type::Array {
                        elem: t,
                        index,
                        len: *len,
                    };
                    if i == 0 {
                        self.types[pos] = a;
                        return Ok(id);
                    }
                    t = self.add(a)?;
                }
                // No subrange at all: nothing says how many, like a flexible array.
                Type::Array {
                    elem,
                    index,
                    len: 0,
                }
            }
            dw::DW_TAG_structure_type | dw::DW_TAG_union_type | dw::DW_TAG_class_type => {
                let is_union = d.tag == dw::DW_TAG_union_type.0;
                if behind_pointer || d.declaration {
                    Type::Fwd { name, is_union }
                } else {
                    let mut members = Vec::new();
                    for &c in &d.children {
                        let Some(m) = self.info.die(c) else { continue };
                        if m.tag != dw::DW_TAG_member.0 {
                            continue;
                        }
                        let m = m.clone();
                        let ty = self.convert(m.ty, false, next)?;
                        let byte_off = m.member_location.unwrap_or(0);
                        let (bit_offset, bitfield_size) = match (m.bit_size, m.data_bit_offset) {
                            (Some(bits), Some(abs)) => (abs, bits),
                            (Some(bits), None) => {
                                // Big-endian numbering from the storage unit's top bit; on a
                                // little-endian target the unit's low bit is bit 0.
                                let unit = m
                                    .byte_size
                                    .or_else(|| {
                                        m.ty.map(|t| self.info.strip(t))
                                            .and_then(|t| self.info.die(t))
                                            .and_then(|t| t.byte_size)
                                    })
                                    .unwrap_or(0);
                                let from_top = m.bit_offset.unwrap_or(0);
                                let low = (unit * 8).saturating_sub(from_top).saturating_sub(bits);
                                (byte_off * 8 + low, bits)
                            }
                            (None, _) => (byte_off * 8, 0),
                        };
                        members.push(Member {
                            name: m.name.clone().unwrap_or_default(),
                            ty,
                            bit_offset: u32::try_from(bit_offset)
                                .map_err(|_| self.too_complex())?,
                            bitfield_size: u32::try_from(bitfield_size)
                                .map_err(|_| self.too_complex())?,
                        });
                    }
                    let size = d.byte_size.unwrap_or(0) as u32;
                    if is_union {
                        Type::Union {
                            name,
                            size,
                            members,
                        }
                    } else {
                        Type::Struct {
                            name,
                            size,
                            members,
                        }
                    }
                }
            }
            // Function types, `void`, and anything else an event cannot hold by value.
            _ => {
                self.memo.insert((idx, behind_pointer), 0);
                self.types.truncate(pos);
                return Ok(0);
            }
        };
        self.types[pos] = t;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(apiary_fixtures::object(name)).expect("fixture")
    }

    /// (name, byte offset, bitfield bits) of each member of struct `name` in `btf`.
    fn layout(btf: &Btf, id: TypeId) -> Vec<(String, u32, u32)> {
        match btf.get(btf.resolve(id)) {
            Some(Type::Struct { members, .. } | Type::Union { members, .. }) => members
                .iter()
                .map(|m| (m.name.clone(), m.bit_offset, m.bitfield_size))
                .collect(),
            other => panic!("not a struct: {other:?}"),
        }
    }

    #[test]
    fn a_struct_only_in_dwarf_converts_with_clang_layout() {
        let bytes = fixture("dwarf_event");
        let info = elf::inspect(&bytes).expect("inspect");
        assert!(info.has_dwarf);
        let mut btf = info.btf.clone().expect("btf");
        assert!(
            btf.find_struct("event").is_none(),
            "clang leaves a local variable's struct out of BTF"
        );
        let dbg = DebugInfo::read(&bytes).expect("read").expect("has DWARF");
        let cands = dbg.candidates();
        let event = cands.iter().find(|c| c.name == "event").expect("event");
        assert!(
            event
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("bpf/dwarf_event.bpf.c")),
            "{event:?}"
        );
        assert!(!event.from_kernel_header());
        let kernel = Candidate {
            file: Some("libbpf-tools/x86/vmlinux.h".into()),
            ..event.clone()
        };
        assert!(kernel.from_kernel_header());
        let names: Vec<String> = cands.into_iter().map(|c| c.name).collect();
        assert!(names.contains(&"event".to_string()), "{names:?}");
        assert!(
            !names.contains(&"span".to_string()) && !names.contains(&"extra_t".to_string()),
            "structs embedded in another are parts, not records: {names:?}"
        );
        let before = btf.len();
        let id = dbg
            .import("event", &mut btf)
            .expect("import")
            .expect("found");
        assert!(!btf.is_native(id) && id as usize >= before);
        assert_eq!(btf.type_name(id), "struct event");
        assert_eq!(btf.size_of(id), Some(80));
        // Offsets as clang lays out the C struct; bitfields are numbered from the low bit of
        // their byte (little-endian), converted from DWARF's DW_AT_bit_offset.
        let want: Vec<(String, u32, u32)> = [
            ("pid", 0, 0),
            ("delta", 32, 0),
            ("ts", 64, 0),
            ("op", 128, 0),
            ("comm", 160, 0),
            ("range", 288, 0),
            ("samples", 320, 0),
            ("major", 368, 4),
            ("minor", 372, 3),
            ("urgent", 375, 1),
            ("u", 384, 0),
            ("where", 448, 0),
            ("ok", 512, 0),
            ("extra", 544, 0),
        ]
        .iter()
        .map(|(n, o, b)| (n.to_string(), *o, *b))
        .collect();
        assert_eq!(layout(&btf, id), want);
        let member = |name: &str| match btf.get(id) {
            Some(Type::Struct { members, .. }) => members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.ty)
                .expect("member"),
            _ => unreachable!(),
        };
        assert_eq!(btf.type_name(member("pid")), "pid_t_");
        assert_eq!(btf.type_name(member("op")), "enum op");
        assert_eq!(btf.type_name(member("comm")), "char[16]");
        assert_eq!(btf.type_name(member("where")), "void *");
        assert_eq!(btf.type_name(member("extra")), "extra_t");
        let extra = btf.resolve(member("extra"));
        let grid = layout(&btf, extra)[0].clone();
        assert_eq!(grid, ("grid".to_string(), 0, 0));
        match btf.get(btf.resolve(member("extra"))) {
            Some(Type::Struct { members, size, .. }) => {
                assert_eq!(*size, 12);
                assert_eq!(btf.type_name(members[0].ty), "__s8[2][3]");
                assert_eq!(btf.size_of(members[0].ty), Some(6));
                match btf.get(btf.resolve(members[1].ty)) {
                    Some(Type::Enum { signed, values, .. }) => {
                        assert!(*signed);
                        assert!(values.contains(&("SIGN_NEG".to_string(), -1)));
                    }
                    other => panic!("enum sign: {other:?}"),
                }
            }
            other => panic!("extra_t: {other:?}"),
        }
        // Importing again finds what is there by name; a second import only appends a copy.
        assert!(dbg
            .import("no_such_struct", &mut btf)
            .expect("ok")
            .is_none());
        assert!(dbg.import("struct span", &mut btf).expect("ok").is_some());
        assert!(dbg.import("union span", &mut btf).expect("ok").is_none());
    }

    #[test]
    fn the_converted_struct_decodes_like_the_btf_decoder() {
        let bytes = fixture("dwarf_event");
        let dbg = DebugInfo::read(&bytes).expect("read").expect("has DWARF");
        let mut btf = Btf::empty();
        let id = dbg
            .import("event", &mut btf)
            .expect("import")
            .expect("found");
        let mut rec = vec![0u8; 80];
        rec[0..4].copy_from_slice(&4242u32.to_le_bytes());
        rec[4..8].copy_from_slice(&(-5i32).to_le_bytes());
        rec[8..16].copy_from_slice(&1234567890123u64.to_le_bytes());
        rec[16..20].copy_from_slice(&7u32.to_le_bytes());
        rec[20..25].copy_from_slice(b"hello");
        rec[36..38].copy_from_slice(&3u16.to_le_bytes());
        rec[38..40].copy_from_slice(&400u16.to_le_bytes());
        rec[46] = 9 | (5 << 4) | (1 << 7);
        rec[48..52].copy_from_slice(&0x01020304u32.to_le_bytes());
        rec[64] = 1;
        rec[68 + 2] = (-3i8) as u8;
        rec[68 + 3] = 7;
        rec[76..80].copy_from_slice(&(-1i32).to_le_bytes());
        let slow = crate::btf::decode(&btf, id, &rec).expect("decode");
        let f = crate::events::Format::new(&btf, id).expect("format");
        let mut s = String::new();
        f.write_json(&rec, &mut s);
        let fast: serde_json::Value = serde_json::from_str(&s).expect("JSON");
        assert_eq!(fast, slow);
        assert_eq!(fast["pid"], 4242);
        assert_eq!(fast["delta"], -5);
        assert_eq!(fast["op"], "OP_GETPPID");
        assert_eq!(fast["comm"], "hello");
        assert_eq!(fast["range"], serde_json::json!({"lo": 3, "hi": 400}));
        assert_eq!(
            (&fast["major"], &fast["minor"], &fast["urgent"]),
            (&9.into(), &5.into(), &1.into())
        );
        assert_eq!(fast["u"]["word"], 0x01020304);
        assert_eq!(fast["ok"], true);
        assert_eq!(
            fast["extra"],
            serde_json::json!({"grid": [[0, 0, -3], [7, 0, 0]], "s": "SIGN_NEG"})
        );
    }

    #[test]
    fn flexible_and_sized_trailing_arrays() {
        let bytes = fixture("varlen");
        let dbg = DebugInfo::read(&bytes).expect("read").expect("has DWARF");
        let names: Vec<String> = dbg.candidates().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["event", "blob"]);
        let mut btf = Btf::empty();
        let blob = dbg.import("blob", &mut btf).expect("import").expect("blob");
        assert_eq!(btf.size_of(blob), Some(8));
        let data = match btf.get(blob) {
            Some(Type::Struct { members, .. }) => members[3].ty,
            other => panic!("{other:?}"),
        };
        assert!(
            matches!(btf.get(data), Some(Type::Array { len: 0, .. })),
            "`__u8 data[]` has no count in DWARF: a flexible array"
        );
        let ev = dbg
            .import("struct event", &mut btf)
            .expect("import")
            .expect("event");
        assert_eq!(btf.size_of(ev), Some(156));
    }

    #[test]
    fn relocations_add_the_symbol_value() {
        // REL: the addend is the stored value; RELA: the explicit one.
        let mut d = vec![0u8; 12];
        d[0..4].copy_from_slice(&0x10u32.to_le_bytes());
        apply(&mut d, 0, R_BPF_64_ABS32, 0x100, None);
        assert_eq!(&d[0..4], &0x110u32.to_le_bytes());
        apply(&mut d, 4, R_BPF_64_ABS64, 0x1000, Some(8));
        assert_eq!(&d[4..12], &0x1008u64.to_le_bytes());
        // Out of range and unknown types are ignored, not a panic.
        apply(&mut d, 10, R_BPF_64_ABS64, 1, None);
        apply(&mut d, 0, 99, 1, None);
        assert_eq!(&d[0..4], &0x110u32.to_le_bytes());
    }

    /// Where `.debug_info` lies in the file.
    fn debug_info_range(bytes: &[u8]) -> std::ops::Range<usize> {
        let endian = object::LittleEndian;
        let header = FileHeader64::<object::LittleEndian>::parse(bytes).expect("ELF");
        let sections = header.sections(endian, bytes).expect("sections");
        for sh in sections.iter() {
            if sections.section_name(endian, sh).expect("name") == b".debug_info" {
                let off = sh.sh_offset(endian) as usize;
                return off..off + sh.sh_size(endian) as usize;
            }
        }
        panic!("no .debug_info");
    }

    #[test]
    fn corrupt_dwarf_is_an_error_or_a_missing_type_never_a_panic() {
        let good = fixture("dwarf_event");
        let range = debug_info_range(&good);
        // A fixed xorshift sequence: the same corruptions on every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut errors, mut found) = (0, 0);
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = range.start + (next() as usize) % range.len();
                bytes[at] = next() as u8;
            }
            match DebugInfo::read(&bytes) {
                Err(_) => errors += 1,
                Ok(None) => panic!("the section is still there"),
                Ok(Some(d)) => {
                    let _ = d.candidates();
                    let mut btf = Btf::empty();
                    if let Ok(Some(id)) = d.import("event", &mut btf) {
                        found += 1;
                        // Whatever came out is a well-formed table the decoder can use.
                        if let Some(f) = crate::events::Format::new(&btf, id) {
                            let mut s = String::new();
                            f.write_json(&vec![0xa5; f.size().min(4096)], &mut s);
                            f.write_row(&[0x5a; 3], &mut s);
                        }
                    }
                }
            }
        }
        assert!(errors > 0 && found > 0, "errors {errors}, found {found}");
    }
}
