//! CO-RE: the relocations an object asks of the kernel's BTF (`.BTF.ext`), and the small part of
//! the kernel's BTF that answers them, which libbpf can be given instead of the whole vmlinux BTF
//! (`btf_custom_path`) on later loads of the same object.
//!
//! libbpf picks a relocation's candidates among the target types of the same kind whose name
//! equals the local type's up to a `___flavour` suffix, then walks the local access path through
//! their members. So every candidate is kept with all its members and, through members that are
//! not pointers, everything it contains; what a pointer points at is kept as a forward
//! declaration of the same name (libbpf only checks that a pointer field is a pointer — a later
//! step through it is a relocation of its own, whose root type is kept in full). Relocations that
//! name target type ids (`bpf_core_type_id_kernel`) or match whole type graphs
//! (`bpf_core_type_matches`) would answer differently from a subset: objects with them get no
//! minimal BTF.

use super::*;
use std::collections::BTreeMap;

/// One CO-RE relocation: the local root type and what is asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreRelo {
    pub type_id: TypeId,
    /// `enum bpf_core_relo_kind`.
    pub kind: u32,
}

/// BPF_CORE_TYPE_ID_TARGET and BPF_CORE_TYPE_MATCHES.
const WHOLE_GRAPH_KINDS: [u32; 2] = [7, 12];

/// The CO-RE relocations of a `.BTF.ext` section (empty when it has none).
pub fn core_relos(ext: &[u8]) -> Result<Vec<CoreRelo>, BtfError> {
    let truncated = |what: &str, offset: usize| BtfError::Truncated {
        what: format!(".BTF.ext {what}"),
        offset,
    };
    let magic = ext
        .get(0..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or_else(|| truncated("header", 0))?;
    if magic != MAGIC {
        return Err(BtfError::BadMagic { magic });
    }
    let hdr_len = read_u32(ext, 4).ok_or_else(|| truncated("header", 4))? as usize;
    // The CO-RE part of the header (two words after the line info) is optional.
    if hdr_len < 32 {
        return Ok(Vec::new());
    }
    let off = read_u32(ext, 24).ok_or_else(|| truncated("header", 24))? as usize;
    let len = read_u32(ext, 28).ok_or_else(|| truncated("header", 28))? as usize;
    if len == 0 {
        return Ok(Vec::new());
    }
    let start = hdr_len
        .checked_add(off)
        .ok_or_else(|| truncated("CO-RE section", hdr_len))?;
    let data = start
        .checked_add(len)
        .and_then(|end| ext.get(start..end))
        .ok_or_else(|| truncated("CO-RE section", start))?;
    let rec_size = read_u32(data, 0).ok_or_else(|| truncated("record size", start))? as usize;
    if rec_size < 16 {
        return Err(BtfError::BadHeader {
            reason: format!(".BTF.ext CO-RE record size {rec_size} is below 16"),
        });
    }
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < data.len() {
        let count = read_u32(data, pos + 4).ok_or_else(|| truncated("section", start + pos))?;
        pos += 8;
        for _ in 0..count {
            let rec = pos
                .checked_add(rec_size)
                .and_then(|end| data.get(pos..end))
                .ok_or_else(|| truncated("record", start + pos))?;
            out.push(CoreRelo {
                type_id: read_u32(rec, 4).unwrap_or(0),
                kind: read_u32(rec, 12).unwrap_or(0),
            });
            pos += rec_size;
        }
    }
    Ok(out)
}

/// A name up to its `___flavour` suffix, as libbpf compares them.
fn essential(name: &str) -> &str {
    name.find("___").map_or(name, |i| &name[..i])
}

/// A BTF blob read on demand: where each type starts, and a type parsed only when asked. The
/// kernel's BTF holds 100k+ types, of which an entry needs a few hundred; parsing them all would
/// cost a CLI command tens of MB.
pub struct LazyBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Per type id - 1: its offset in `types`, its kind and the offset of its name.
    index: Vec<(u32, u8, u32)>,
}

impl<'a> LazyBtf<'a> {
    pub fn index(bytes: &'a [u8]) -> Result<LazyBtf<'a>, BtfError> {
        let (types, strings) = split_sections(bytes)?;
        // Two walks: the first counts, so the index is allocated once at its size (growing it
        // by doubling would hold two copies, megabytes for the kernel's BTF, at its peak).
        let mut count = 0usize;
        walk_types(types, |_, _, _| count += 1)?;
        let mut index = Vec::with_capacity(count);
        walk_types(types, |pos, kind, name| index.push((pos, kind, name)))?;
        Ok(LazyBtf {
            types,
            strings,
            index,
        })
    }

    /// The type `id`, parsed now (`None` for a bad id or record).
    pub fn get(&self, id: TypeId) -> Option<Type> {
        if id == 0 {
            return Some(Type::Void);
        }
        let (start, ..) = *self.index.get(id as usize - 1)?;
        let mut cur = Cursor {
            data: self.types,
            pos: start as usize,
        };
        parse_type(&mut cur, self.strings, id).ok()
    }

    /// Ids of the types of raw kind `kinds` whose name is `name` up to a `___flavour` suffix.
    fn named(&self, kinds: &[u32], name: &str) -> Vec<TypeId> {
        let mut out = Vec::new();
        for (i, (_, kind, name_off)) in self.index.iter().enumerate() {
            if !kinds.contains(&u32::from(*kind)) {
                continue;
            }
            let Some(rest) = self.strings.get(*name_off as usize..) else {
                continue;
            };
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            if std::str::from_utf8(&rest[..end])
                .is_ok_and(|n| !n.is_empty() && essential(n) == name)
            {
                out.push(i as TypeId + 1);
            }
        }
        out
    }
}

/// Call `f(offset, kind, name offset)` for each type record of a BTF types section, in id order.
fn walk_types(types: &[u8], mut f: impl FnMut(u32, u8, u32)) -> Result<(), BtfError> {
    let mut pos = 0usize;
    let mut id = 1usize;
    while pos < types.len() {
        let truncated = || BtfError::Truncated {
            what: format!("header of type id {id}"),
            offset: pos,
        };
        let name = read_u32(types, pos).ok_or_else(truncated)?;
        let info = read_u32(types, pos + 4).ok_or_else(truncated)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
            | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
            _ => {
                return Err(BtfError::UnknownKind {
                    kind,
                    id: id as TypeId,
                })
            }
        };
        f(pos as u32, kind as u8, name);
        pos += 12 + extra;
        id += 1;
    }
    if pos != types.len() {
        return Err(BtfError::Truncated {
            what: "last type".into(),
            offset: types.len(),
        });
    }
    Ok(())
}

/// The raw kinds libbpf takes as candidates for a local type (ENUM and ENUM64 alike).
fn candidate_kinds(t: &Type) -> &'static [u32] {
    match t {
        Type::Struct { .. } => &[KIND_STRUCT],
        Type::Union { .. } => &[KIND_UNION],
        Type::Enum { .. } => &[KIND_ENUM, KIND_ENUM64],
        Type::Int { .. } => &[KIND_INT],
        Type::Typedef { .. } => &[KIND_TYPEDEF],
        Type::Fwd { .. } => &[KIND_FWD],
        Type::Float { .. } => &[KIND_FLOAT],
        Type::Func { .. } => &[KIND_FUNC],
        Type::Void
        | Type::Ptr { .. }
        | Type::Array { .. }
        | Type::Volatile { .. }
        | Type::Const { .. }
        | Type::Restrict { .. }
        | Type::FuncProto { .. }
        | Type::Var { .. }
        | Type::DataSec { .. }
        | Type::DeclTag { .. }
        | Type::TypeTag { .. } => &[],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Full,
    /// Behind a pointer: a forward declaration of the same name is enough.
    Fwd,
}

struct Picker<'a, 'b> {
    target: &'a LazyBtf<'b>,
    keep: BTreeMap<TypeId, Keep>,
}

impl Picker<'_, '_> {
    fn full(&mut self, id: TypeId) {
        if id == 0 || self.keep.get(&id) == Some(&Keep::Full) {
            return;
        }
        self.keep.insert(id, Keep::Full);
        let Some(t) = self.target.get(id) else { return };
        match t {
            Type::Ptr { target } => self.pointee(target),
            other => {
                for r in other.refs() {
                    self.full(r);
                }
            }
        }
    }

    fn pointee(&mut self, id: TypeId) {
        if id == 0 || self.keep.contains_key(&id) {
            return;
        }
        match self.target.get(id) {
            Some(Type::Struct { .. } | Type::Union { .. }) => {
                self.keep.insert(id, Keep::Fwd);
            }
            // Qualifiers and typedefs stay; what they name is still behind the pointer.
            Some(
                Type::Const { target }
                | Type::Volatile { target }
                | Type::Restrict { target }
                | Type::TypeTag { target, .. }
                | Type::Typedef { target, .. },
            ) => {
                self.keep.insert(id, Keep::Full);
                self.pointee(target);
            }
            _ => self.full(id),
        }
    }
}

/// The part of `target` (the kernel's BTF) that answers `relos` of an object whose own BTF is
/// `local`, as a BTF blob; `None` when the object has no CO-RE relocation or one a subset
/// cannot answer the same way.
pub fn minimal_target(local: &Btf, relos: &[CoreRelo], target: &LazyBtf<'_>) -> Option<Vec<u8>> {
    if relos.is_empty() || relos.iter().any(|r| WHOLE_GRAPH_KINDS.contains(&r.kind)) {
        return None;
    }
    let mut picker = Picker {
        target,
        keep: BTreeMap::new(),
    };
    let mut roots: Vec<TypeId> = relos.iter().map(|r| r.type_id).collect();
    roots.sort_unstable();
    roots.dedup();
    for root in roots {
        let lt = local.get(root)?;
        let name = essential(lt.name()?);
        for id in target.named(candidate_kinds(lt), name) {
            picker.full(id);
        }
    }
    // Kept types get new ids in their original order.
    let new_id: BTreeMap<TypeId, TypeId> = picker
        .keep
        .keys()
        .enumerate()
        .map(|(i, id)| (*id, i as TypeId + 1))
        .collect();
    let map = |id: TypeId| -> TypeId {
        if id == 0 {
            0
        } else {
            new_id.get(&id).copied().unwrap_or(0)
        }
    };
    let mut types = vec![Type::Void];
    for (id, keep) in &picker.keep {
        let t = target.get(*id)?;
        types.push(match keep {
            Keep::Fwd => Type::Fwd {
                name: t.name().unwrap_or_default().to_string(),
                is_union: matches!(t, Type::Union { .. }),
            },
            Keep::Full => renumber(&t, &map),
        });
    }
    Some(write::write(&types))
}

fn renumber(t: &Type, map: &dyn Fn(TypeId) -> TypeId) -> Type {
    let mut t = t.clone();
    match &mut t {
        Type::Ptr { target }
        | Type::Typedef { target, .. }
        | Type::Volatile { target }
        | Type::Const { target }
        | Type::Restrict { target }
        | Type::TypeTag { target, .. }
        | Type::DeclTag { target, .. } => *target = map(*target),
        Type::Array { elem, index, .. } => {
            *elem = map(*elem);
            *index = map(*index);
        }
        Type::Struct { members, .. } | Type::Union { members, .. } => {
            for m in members {
                m.ty = map(m.ty);
            }
        }
        Type::Func { proto, .. } => *proto = map(*proto),
        Type::FuncProto { ret, params } => {
            *ret = map(*ret);
            for p in params {
                p.1 = map(p.1);
            }
        }
        Type::Var { ty, .. } => *ty = map(*ty),
        Type::DataSec { vars, .. } => {
            for v in vars {
                v.ty = map(v.ty);
            }
        }
        Type::Void
        | Type::Int { .. }
        | Type::Enum { .. }
        | Type::Fwd { .. }
        | Type::Float { .. } => {}
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int() -> Type {
        Type::Int {
            name: "int".into(),
            size: 4,
            signed: true,
            is_bool: false,
            is_char: false,
            bits: 32,
            offset: 0,
        }
    }

    fn member(name: &str, ty: TypeId, bit_offset: u32) -> Member {
        Member {
            name: name.into(),
            ty,
            bit_offset,
            bitfield_size: 0,
        }
    }

    /// A kernel: task { int pid; struct sched se; struct mm *mm; }, sched { int vruntime },
    /// mm { int pgd }, and an unrelated struct.
    fn kernel() -> Btf {
        Btf::parse(&kernel_raw()).expect("written BTF parses")
    }

    fn kernel_raw() -> Vec<u8> {
        let types = vec![
            Type::Void,
            int(), // 1
            Type::Struct {
                name: "sched".into(),
                size: 4,
                members: vec![member("vruntime", 1, 0)],
            }, // 2
            Type::Struct {
                name: "mm".into(),
                size: 4,
                members: vec![member("pgd", 1, 0)],
            }, // 3
            Type::Ptr { target: 3 }, // 4
            Type::Struct {
                name: "task".into(),
                size: 16,
                members: vec![
                    member("pid", 1, 0),
                    member("se", 2, 32),
                    member("mm", 4, 64),
                ],
            }, // 5
            Type::Struct {
                name: "unrelated".into(),
                size: 4,
                members: vec![member("x", 1, 0)],
            }, // 6
        ];
        write::write(&types)
    }

    fn local() -> Btf {
        let types = vec![
            Type::Void,
            int(),
            Type::Struct {
                name: "task___local".into(),
                size: 4,
                members: vec![member("pid", 1, 0)],
            },
        ];
        Btf::parse(&write::write(&types)).expect("parses")
    }

    #[test]
    fn written_btf_reads_back_the_same_types() {
        let k = kernel();
        let again = Btf::parse(&write::write(&k.types)).expect("parses");
        assert_eq!(again.types, k.types);
        let raw = kernel_raw();
        let lazy = LazyBtf::index(&raw).expect("index");
        for (id, t) in k.iter() {
            assert_eq!(lazy.get(id).as_ref(), Some(t), "type {id} read on demand");
        }
    }

    #[test]
    fn candidates_are_kept_whole_and_pointees_as_declarations() {
        let relos = [CoreRelo {
            type_id: 2,
            kind: 0,
        }];
        let raw = kernel_raw();
        let k = LazyBtf::index(&raw).expect("index");
        let blob = minimal_target(&local(), &relos, &k).expect("cacheable");
        let m = Btf::parse(&blob).expect("minimal BTF parses");
        let task = m
            .find_struct("task")
            .expect("the candidate, by its essential name");
        let Some(Type::Struct { members, size, .. }) = m.get(task) else {
            panic!("task is a struct");
        };
        assert_eq!(*size, 16);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["pid", "se", "mm"], "all members, same offsets");
        assert_eq!(members[1].bit_offset, 32);
        assert!(
            m.find_struct("sched").is_some(),
            "embedded structs are kept whole"
        );
        let mm = m.iter().find(|(_, t)| t.name() == Some("mm")).expect("mm");
        assert!(
            matches!(mm.1, Type::Fwd { .. }),
            "behind a pointer: a declaration"
        );
        assert!(m.find_struct("unrelated").is_none());
    }

    #[test]
    fn whole_graph_relocations_are_not_cached() {
        let raw = kernel_raw();
        let k = LazyBtf::index(&raw).expect("index");
        for kind in WHOLE_GRAPH_KINDS {
            let relos = [CoreRelo { type_id: 2, kind }];
            assert!(minimal_target(&local(), &relos, &k).is_none());
        }
        assert!(minimal_target(&local(), &[], &k).is_none());
    }

    #[test]
    fn ext_sections_parse_and_truncations_are_errors() {
        // Header with the CO-RE part, then one section of one 16-byte record.
        let mut ext = Vec::new();
        ext.extend_from_slice(&MAGIC.to_le_bytes());
        ext.extend_from_slice(&[1, 0]);
        for v in [32u32, 0, 0, 0, 0, 0, 28] {
            ext.extend_from_slice(&v.to_le_bytes());
        }
        for v in [16u32, 0, 1, 8, 5, 0, 0] {
            ext.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            core_relos(&ext).unwrap(),
            vec![CoreRelo {
                type_id: 5,
                kind: 0
            }]
        );
        for cut in 0..ext.len() {
            let _ = core_relos(&ext[..cut]); // never panics
        }
        assert!(core_relos(&ext[..ext.len() - 4]).is_err());
    }
}
