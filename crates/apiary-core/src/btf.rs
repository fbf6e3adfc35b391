//! BTF (BPF Type Format) reading.
//!
//! This module owns everything apiary knows about BTF as bytes: parsing a raw `.BTF` blob (as
//! found in a BPF object file or `/sys/kernel/btf/vmlinux`) into a type table, naming and sizing
//! those types the way a C programmer would, and converting between the raw bytes of a typed
//! value and JSON (for showing map entries and globals) or user text (for `--set NAME=VALUE`).
//!
//! Input is untrusted: every length, offset and type reference is checked, recursion over types
//! is depth-limited and output size is budgeted, so malformed BTF yields a [`BtfError`], never a
//! panic or an unbounded allocation.

use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

/// Index of a type in a [`Btf`] table; 0 is always `void`.
pub type TypeId = u32;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// Type graphs in real programs nest a handful of levels; anything deeper is either a cycle or
/// hostile input, so recursion stops here instead of overflowing the stack.
const MAX_DEPTH: usize = 64;
/// Caps the number of JSON values one `decode` may produce: unions and arrays of zero-sized or
/// overlapping members could otherwise turn a few bytes into an enormous tree.
const DECODE_BUDGET: usize = 1 << 20;
/// `--set` values are command-line text; a multi-megabyte global is not something to fill that way,
/// and the limit keeps a bogus array length in BTF from causing a huge allocation.
const MAX_ENCODE_BYTES: usize = 16 << 20;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

const INT_SIGNED: u32 = 1 << 0;
const INT_CHAR: u32 = 1 << 1;
const INT_BOOL: u32 = 1 << 2;

/// What went wrong while reading BTF or converting a value.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF is truncated: {what} at byte {offset} runs past the end of the data")]
    Truncated { what: String, offset: usize },
    #[error("not BTF: magic is {magic:#06x}, expected 0xeb9f")]
    BadMagic { magic: u16 },
    #[error("big-endian BTF not supported")]
    BigEndian,
    #[error("BTF version {version} is not supported (only version 1 is)")]
    UnsupportedVersion { version: u8 },
    #[error("bad BTF header: {reason}")]
    BadHeader { reason: String },
    #[error(
        "unknown BTF kind {kind} (type id {id}); this BTF may come from a newer compiler or kernel"
    )]
    UnknownKind { kind: u32, id: TypeId },
    #[error("BTF type id {id} has a name at string offset {offset}, outside the {len}-byte string section or not NUL-terminated")]
    BadString { id: TypeId, offset: u32, len: usize },
    #[error("BTF type id {id} refers to type id {target}, but there are only {count} types")]
    BadTypeRef {
        id: TypeId,
        target: TypeId,
        count: usize,
    },
    #[error("no BTF type with id {id}")]
    NoSuchType { id: TypeId },
    #[error("{ty} needs {needed} bytes but only {got} were given")]
    ValueTooShort {
        ty: String,
        needed: usize,
        got: usize,
    },
    #[error("value of type {ty} is too large or too deeply nested to convert")]
    TooComplex { ty: String },
    #[error("value {value} does not fit {ty} (allowed {range})")]
    ValueOutOfRange {
        value: String,
        ty: String,
        range: String,
    },
    #[error("invalid value {value:?} for {ty}: {reason}")]
    InvalidValue {
        value: String,
        ty: String,
        reason: String,
    },
    #[error("values of type {ty} are not supported: {reason}")]
    Unsupported { ty: String, reason: String },
}

/// BTF linkage of a FUNC or VAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Linkage {
    Static,
    Global,
    Extern,
    /// A value this reader does not know; kept so nothing is silently rewritten.
    Other(u32),
}

impl Linkage {
    fn from_raw(v: u32) -> Linkage {
        match v {
            0 => Linkage::Static,
            1 => Linkage::Global,
            2 => Linkage::Extern,
            other => Linkage::Other(other),
        }
    }
}

/// A struct or union member. For bitfields `bitfield_size` is non-zero (or, in BTF without the
/// kind flag, the member's INT type carries the width).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub name: String,
    pub ty: TypeId,
    pub bit_offset: u32,
    pub bitfield_size: u32,
}

/// One variable placement inside a DATASEC. Object files from clang often carry zero offsets
/// here; libbpf fills them in from the symbol table at load time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecVar {
    pub ty: TypeId,
    pub offset: u32,
    pub size: u32,
}

/// One BTF type. Names are empty for anonymous types. Serializable so a package can carry the
/// few types its events need (see [`subset`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Type {
    Void,
    Int {
        name: String,
        size: u32,
        signed: bool,
        is_bool: bool,
        is_char: bool,
        bits: u32,
        offset: u32,
    },
    Ptr {
        target: TypeId,
    },
    Array {
        elem: TypeId,
        index: TypeId,
        len: u32,
    },
    Struct {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    Union {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    /// Both ENUM and ENUM64. `values` hold the raw bit pattern as i64; read them as unsigned when
    /// `signed` is false (an unsigned ENUM64 value above `i64::MAX` appears negative here).
    Enum {
        name: String,
        size: u32,
        signed: bool,
        values: Vec<(String, i64)>,
    },
    Fwd {
        name: String,
        is_union: bool,
    },
    Typedef {
        name: String,
        target: TypeId,
    },
    Volatile {
        target: TypeId,
    },
    Const {
        target: TypeId,
    },
    Restrict {
        target: TypeId,
    },
    Func {
        name: String,
        proto: TypeId,
        linkage: Linkage,
    },
    /// A trailing `("", 0)` parameter marks a variadic function.
    FuncProto {
        ret: TypeId,
        params: Vec<(String, TypeId)>,
    },
    Var {
        name: String,
        ty: TypeId,
        linkage: Linkage,
    },
    DataSec {
        name: String,
        size: u32,
        vars: Vec<SecVar>,
    },
    Float {
        name: String,
        size: u32,
    },
    DeclTag {
        name: String,
        target: TypeId,
        component_idx: i32,
    },
    TypeTag {
        name: String,
        target: TypeId,
    },
}

impl Type {
    /// The type's own name, if it has a non-empty one.
    pub fn name(&self) -> Option<&str> {
        let n = match self {
            Type::Int { name, .. }
            | Type::Struct { name, .. }
            | Type::Union { name, .. }
            | Type::Enum { name, .. }
            | Type::Fwd { name, .. }
            | Type::Typedef { name, .. }
            | Type::Func { name, .. }
            | Type::Var { name, .. }
            | Type::DataSec { name, .. }
            | Type::Float { name, .. }
            | Type::DeclTag { name, .. }
            | Type::TypeTag { name, .. } => name.as_str(),
            _ => "",
        };
        (!n.is_empty()).then_some(n)
    }

    /// The BTF kind as the kernel docs spell it, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Type::Void => "VOID",
            Type::Int { .. } => "INT",
            Type::Ptr { .. } => "PTR",
            Type::Array { .. } => "ARRAY",
            Type::Struct { .. } => "STRUCT",
            Type::Union { .. } => "UNION",
            Type::Enum { .. } => "ENUM",
            Type::Fwd { .. } => "FWD",
            Type::Typedef { .. } => "TYPEDEF",
            Type::Volatile { .. } => "VOLATILE",
            Type::Const { .. } => "CONST",
            Type::Restrict { .. } => "RESTRICT",
            Type::Func { .. } => "FUNC",
            Type::FuncProto { .. } => "FUNC_PROTO",
            Type::Var { .. } => "VAR",
            Type::DataSec { .. } => "DATASEC",
            Type::Float { .. } => "FLOAT",
            Type::DeclTag { .. } => "DECL_TAG",
            Type::TypeTag { .. } => "TYPE_TAG",
        }
    }

    /// Every type id this type refers to, for validating references after parsing.
    fn refs(&self) -> Vec<TypeId> {
        match self {
            Type::Void
            | Type::Int { .. }
            | Type::Fwd { .. }
            | Type::Enum { .. }
            | Type::Float { .. } => Vec::new(),
            Type::Ptr { target }
            | Type::Typedef { target, .. }
            | Type::Volatile { target }
            | Type::Const { target }
            | Type::Restrict { target }
            | Type::DeclTag { target, .. }
            | Type::TypeTag { target, .. } => vec![*target],
            Type::Array { elem, index, .. } => vec![*elem, *index],
            Type::Struct { members, .. } | Type::Union { members, .. } => {
                members.iter().map(|m| m.ty).collect()
            }
            Type::Func { proto, .. } => vec![*proto],
            Type::FuncProto { ret, params } => std::iter::once(*ret)
                .chain(params.iter().map(|p| p.1))
                .collect(),
            Type::Var { ty, .. } => vec![*ty],
            Type::DataSec { vars, .. } => vars.iter().map(|v| v.ty).collect(),
        }
    }
}

/// A parsed BTF type table. Index 0 is `void`.
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<Type>,
    /// How many types came from the BTF blob itself; the rest were appended (from DWARF).
    native: usize,
}

fn read_u32(data: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    let b = data.get(off..end)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn u32(&mut self, what: &str) -> Result<u32, BtfError> {
        let v = read_u32(self.data, self.pos).ok_or_else(|| BtfError::Truncated {
            what: what.to_string(),
            offset: self.pos,
        })?;
        self.pos += 4;
        Ok(v)
    }

    /// Checks up front that `count` records fit, so a hostile vlen cannot drive a large
    /// `Vec::with_capacity` before the data runs out.
    fn need(&self, count: usize, record: usize, what: &str) -> Result<(), BtfError> {
        let fits = count
            .checked_mul(record)
            .and_then(|n| self.pos.checked_add(n))
            .is_some_and(|end| end <= self.data.len());
        if fits {
            Ok(())
        } else {
            Err(BtfError::Truncated {
                what: what.to_string(),
                offset: self.pos,
            })
        }
    }
}

fn string_at(strings: &[u8], id: TypeId, offset: u32) -> Result<String, BtfError> {
    let bad = || BtfError::BadString {
        id,
        offset,
        len: strings.len(),
    };
    let rest = strings.get(offset as usize..).ok_or_else(bad)?;
    let end = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn section<'a>(
    body: &'a [u8],
    off: u32,
    len: u32,
    hdr_len: usize,
    what: &str,
) -> Result<&'a [u8], BtfError> {
    let start = off as usize;
    start
        .checked_add(len as usize)
        .and_then(|end| body.get(start..end))
        .ok_or_else(|| BtfError::Truncated {
            what: what.to_string(),
            offset: hdr_len.saturating_add(start),
        })
}

/// The type and string sections of a raw little-endian `.BTF` blob, after checking its header.
fn split_sections(bytes: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    let header_truncated = || BtfError::Truncated {
        what: "header".to_string(),
        offset: 0,
    };
    let magic_bytes = bytes.get(0..2).ok_or_else(header_truncated)?;
    let magic = u16::from_le_bytes([magic_bytes[0], magic_bytes[1]]);
    if magic == MAGIC.swap_bytes() {
        return Err(BtfError::BigEndian);
    }
    if magic != MAGIC {
        return Err(BtfError::BadMagic { magic });
    }
    let version = *bytes.get(2).ok_or_else(header_truncated)?;
    if version != 1 {
        return Err(BtfError::UnsupportedVersion { version });
    }
    if bytes.len() < HEADER_LEN {
        return Err(header_truncated());
    }
    let field = |off| read_u32(bytes, off).ok_or_else(header_truncated);
    let hdr_len = field(4)? as usize;
    if hdr_len < HEADER_LEN || hdr_len > bytes.len() {
        return Err(BtfError::BadHeader {
            reason: format!(
                "header length {hdr_len} is outside {HEADER_LEN}..={}",
                bytes.len()
            ),
        });
    }
    let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
    let body = &bytes[hdr_len..];
    let type_data = section(body, type_off, type_len, hdr_len, "type section")?;
    let strings = section(body, str_off, str_len, hdr_len, "string section")?;
    Ok((type_data, strings))
}

impl Btf {
    /// Parses a raw little-endian `.BTF` blob.
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        let (type_data, strings) = split_sections(bytes)?;
        let mut types = vec![Type::Void];
        let mut cur = Cursor {
            data: type_data,
            pos: 0,
        };
        while cur.pos < type_data.len() {
            let id = TypeId::try_from(types.len()).map_err(|_| BtfError::BadHeader {
                reason: "more than 2^32 types".to_string(),
            })?;
            types.push(parse_type(&mut cur, strings, id)?);
        }

        let count = types.len();
        for (id, t) in types.iter().enumerate() {
            for target in t.refs() {
                if target as usize >= count {
                    return Err(BtfError::BadTypeRef {
                        id: id as TypeId,
                        target,
                        count,
                    });
                }
            }
        }
        let native = types.len();
        Ok(Btf { types, native })
    }

    pub fn get(&self, id: TypeId) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// A table holding only `void`, for objects without a `.BTF` section whose types come from
    /// elsewhere (DWARF).
    pub fn empty() -> Btf {
        Btf {
            types: vec![Type::Void],
            native: 1,
        }
    }

    /// Whether type `id` was in the parsed BTF, rather than appended by [`Btf::append`].
    pub fn is_native(&self, id: TypeId) -> bool {
        (id as usize) < self.native
    }

    /// Appends `types`, which may refer to each other by the ids they will get (the first gets
    /// `self.len()`) and to types already present. Returns the first new id. References are
    /// checked like [`Btf::parse`] checks them, so the table stays well-formed.
    pub fn append(&mut self, types: Vec<Type>) -> Result<TypeId, BtfError> {
        let first = TypeId::try_from(self.types.len()).map_err(|_| BtfError::BadHeader {
            reason: "more than 2^32 types".to_string(),
        })?;
        let count = self.types.len() + types.len();
        for (i, t) in types.iter().enumerate() {
            for target in t.refs() {
                if target as usize >= count {
                    return Err(BtfError::BadTypeRef {
                        id: first + i as TypeId,
                        target,
                        count,
                    });
                }
            }
        }
        self.types.extend(types);
        Ok(first)
    }

    /// Number of types, counting `void` at id 0.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when the table holds nothing but the implicit `void`.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// All types with their ids, `void` first.
    pub fn iter(&self) -> impl Iterator<Item = (TypeId, &Type)> {
        self.types.iter().enumerate().map(|(i, t)| (i as TypeId, t))
    }

    /// Follows typedefs, qualifiers and type tags to the underlying type.
    pub fn resolve(&self, id: TypeId) -> TypeId {
        self.skip(id, true)
    }

    /// Like [`Btf::resolve`] but stops at typedefs, so `const volatile u32` becomes `u32`.
    pub fn strip_qualifiers(&self, id: TypeId) -> TypeId {
        self.skip(id, false)
    }

    fn skip(&self, mut id: TypeId, typedefs: bool) -> TypeId {
        // A chain longer than the table must contain a cycle; stop rather than spin.
        for _ in 0..self.types.len() {
            match self.get(id) {
                Some(Type::Typedef { target, .. }) if typedefs => id = *target,
                Some(
                    Type::Const { target }
                    | Type::Volatile { target }
                    | Type::Restrict { target }
                    | Type::TypeTag { target, .. },
                ) => id = *target,
                _ => return id,
            }
        }
        id
    }

    /// Size in bytes of a value of this type; `None` for void, functions, forward declarations
    /// and types whose size overflows or cannot be determined.
    pub fn size_of(&self, id: TypeId) -> Option<u32> {
        self.size_of_depth(id, 0)
    }

    fn size_of_depth(&self, id: TypeId, depth: usize) -> Option<u32> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.get(self.resolve(id))? {
            Type::Int { size, .. }
            | Type::Struct { size, .. }
            | Type::Union { size, .. }
            | Type::Enum { size, .. }
            | Type::Float { size, .. }
            | Type::DataSec { size, .. } => Some(*size),
            Type::Ptr { .. } => Some(8),
            Type::Array { elem, len, .. } => {
                self.size_of_depth(*elem, depth + 1)?.checked_mul(*len)
            }
            Type::Var { ty, .. } => self.size_of_depth(*ty, depth + 1),
            _ => None,
        }
    }

    /// First type with this name that can describe a value (int, float, struct, union, enum,
    /// typedef); variables, functions and sections share the namespace in BTF but are not what
    /// a caller asking for a type means. `struct x`, `union x` and `enum x` restrict the kind; a
    /// forward declaration is returned only when no full definition exists.
    pub fn find_by_name(&self, name: &str) -> Option<TypeId> {
        let name = name.trim();
        if let Some(rest) = name.strip_prefix("enum ") {
            let rest = rest.trim();
            return self
                .iter()
                .find(|(_, t)| matches!(t, Type::Enum { name, .. } if name == rest))
                .map(|(id, _)| id);
        }
        if name.starts_with("struct ") || name.starts_with("union ") {
            return self.find_struct(name);
        }
        let value_type = |t: &Type| {
            matches!(
                t,
                Type::Int { .. }
                    | Type::Float { .. }
                    | Type::Struct { .. }
                    | Type::Union { .. }
                    | Type::Enum { .. }
                    | Type::Typedef { .. }
            )
        };
        self.iter()
            .find(|(_, t)| value_type(t) && t.name() == Some(name))
            .or_else(|| {
                self.iter()
                    .find(|(_, t)| matches!(t, Type::Fwd { .. }) && t.name() == Some(name))
            })
            .map(|(id, _)| id)
    }

    /// The struct or union called `name` (`"struct foo"` and `"union foo"` are accepted too).
    pub fn find_struct(&self, name: &str) -> Option<TypeId> {
        let name = name.trim();
        let (want_struct, want_union, bare) = if let Some(r) = name.strip_prefix("struct ") {
            (true, false, r.trim())
        } else if let Some(r) = name.strip_prefix("union ") {
            (false, true, r.trim())
        } else {
            (true, true, name)
        };
        self.iter()
            .find(|(_, t)| match t {
                Type::Struct { name, .. } => want_struct && name == bare,
                Type::Union { name, .. } => want_union && name == bare,
                _ => false,
            })
            .map(|(id, _)| id)
    }

    /// C-like spelling of a type: `unsigned int`, `char[16]`, `struct event`, `u64`, `void *`.
    /// Qualifiers (const, volatile, restrict) and type tags are left out because callers show
    /// the shape of a value, and `const volatile` on every `.rodata` global is noise. For a VAR
    /// this is the name of the variable's type.
    pub fn type_name(&self, id: TypeId) -> String {
        self.name_depth(id, 0)
    }

    fn name_depth(&self, id: TypeId, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return "...".to_string();
        }
        let anon = |n: &str| {
            if n.is_empty() {
                "(anon)".to_string()
            } else {
                n.to_string()
            }
        };
        let Some(t) = self.get(id) else {
            return format!("<bad type id {id}>");
        };
        match t {
            Type::Void => "void".to_string(),
            Type::Int { name, .. } | Type::Float { name, .. } | Type::Typedef { name, .. } => {
                anon(name)
            }
            Type::Func { name, .. } | Type::DataSec { name, .. } => anon(name),
            Type::Struct { name, .. } => format!("struct {}", anon(name)),
            Type::Union { name, .. } => format!("union {}", anon(name)),
            Type::Enum { name, .. } => format!("enum {}", anon(name)),
            Type::Fwd { name, is_union } => {
                format!(
                    "{} {}",
                    if *is_union { "union" } else { "struct" },
                    anon(name)
                )
            }
            Type::Const { target }
            | Type::Volatile { target }
            | Type::Restrict { target }
            | Type::TypeTag { target, .. }
            | Type::DeclTag { target, .. }
            | Type::Var { ty: target, .. } => self.name_depth(*target, depth + 1),
            Type::Ptr { target } => {
                let pointee = self.strip_qualifiers(*target);
                if let Some(Type::FuncProto { ret, params }) = self.get(pointee) {
                    return format!(
                        "{} (*)({})",
                        self.name_depth(*ret, depth + 1),
                        self.params_name(params, depth)
                    );
                }
                let inner = self.name_depth(*target, depth + 1);
                if inner.ends_with('*') {
                    format!("{inner}*")
                } else {
                    format!("{inner} *")
                }
            }
            Type::Array { .. } => {
                let mut dims = String::new();
                let mut cur = id;
                for _ in 0..MAX_DEPTH {
                    match self.get(cur) {
                        Some(Type::Array { elem, len, .. }) => {
                            let _ = write!(dims, "[{len}]");
                            cur = self.strip_qualifiers(*elem);
                        }
                        _ => break,
                    }
                }
                format!("{}{dims}", self.name_depth(cur, depth + 1))
            }
            Type::FuncProto { ret, params } => format!(
                "{} ({})",
                self.name_depth(*ret, depth + 1),
                self.params_name(params, depth)
            ),
        }
    }

    fn params_name(&self, params: &[(String, TypeId)], depth: usize) -> String {
        if params.is_empty() {
            return "void".to_string();
        }
        params
            .iter()
            .map(|(name, ty)| {
                if *ty == 0 && name.is_empty() {
                    "...".to_string()
                } else {
                    self.name_depth(*ty, depth + 1)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// All DATASEC types (`.data`, `.bss`, `.rodata`, `.maps`, `.kconfig`, ...).
    pub fn datasecs(&self) -> impl Iterator<Item = (TypeId, &Type)> {
        self.iter()
            .filter(|(_, t)| matches!(t, Type::DataSec { .. }))
    }

    /// The DATASEC named `section`, if any.
    pub fn datasec(&self, section: &str) -> Option<(TypeId, &Type)> {
        self.datasecs()
            .find(|(_, t)| matches!(t, Type::DataSec { name, .. } if name == section))
    }

    /// The declared type of variable `var` in DATASEC `section` (the VAR's target, qualifiers
    /// included, so callers can tell `const volatile` globals apart).
    pub fn datasec_var(&self, section: &str, var: &str) -> Option<TypeId> {
        let (_, Type::DataSec { vars, .. }) = self.datasec(section)? else {
            return None;
        };
        vars.iter().find_map(|sv| match self.get(sv.ty) {
            Some(Type::Var { name, ty, .. }) if name == var => Some(*ty),
            _ => None,
        })
    }

    /// Names of all FUNC types, in type order.
    pub fn func_names(&self) -> Vec<String> {
        self.types
            .iter()
            .filter_map(|t| match t {
                Type::Func { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether arrays of this element type read as text. Only plain `char` (or INT types flagged
    /// as char) qualifies: `unsigned char`/`u8` buffers usually hold binary data such as
    /// addresses or hashes, where stopping at the first NUL would hide bytes.
    fn is_char(&self, elem: TypeId) -> bool {
        matches!(
            self.get(self.resolve(elem)),
            Some(Type::Int { size: 1, is_bool: false, is_char, name, .. })
                if *is_char || name == "char"
        )
    }
}

fn parse_type(cur: &mut Cursor<'_>, strings: &[u8], id: TypeId) -> Result<Type, BtfError> {
    let what = |part: &str| format!("{part} of type id {id}");
    let name_off = cur.u32(&what("header"))?;
    let info = cur.u32(&what("header"))?;
    let size_or_type = cur.u32(&what("header"))?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kflag = info >> 31 == 1;
    let name = string_at(strings, id, name_off)?;

    let t = match kind {
        KIND_INT => {
            let enc = cur.u32(&what("INT encoding"))?;
            let flags = (enc >> 24) & 0x0f;
            Type::Int {
                name,
                size: size_or_type,
                signed: flags & INT_SIGNED != 0,
                is_char: flags & INT_CHAR != 0,
                is_bool: flags & INT_BOOL != 0,
                offset: (enc >> 16) & 0xff,
                bits: enc & 0xff,
            }
        }
        KIND_PTR => Type::Ptr {
            target: size_or_type,
        },
        KIND_ARRAY => Type::Array {
            elem: cur.u32(&what("ARRAY"))?,
            index: cur.u32(&what("ARRAY"))?,
            len: cur.u32(&what("ARRAY"))?,
        },
        KIND_STRUCT | KIND_UNION => {
            let w = what("members");
            cur.need(vlen, 12, &w)?;
            let mut members = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let m_name = cur.u32(&w)?;
                let ty = cur.u32(&w)?;
                let off = cur.u32(&w)?;
                // With the kind flag the offset word packs the bitfield width in its top byte.
                let (bit_offset, bitfield_size) = if kflag {
                    (off & 0x00ff_ffff, off >> 24)
                } else {
                    (off, 0)
                };
                members.push(Member {
                    name: string_at(strings, id, m_name)?,
                    ty,
                    bit_offset,
                    bitfield_size,
                });
            }
            if kind == KIND_STRUCT {
                Type::Struct {
                    name,
                    size: size_or_type,
                    members,
                }
            } else {
                Type::Union {
                    name,
                    size: size_or_type,
                    members,
                }
            }
        }
        KIND_ENUM => {
            let w = what("enumerators");
            cur.need(vlen, 8, &w)?;
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let v_name = cur.u32(&w)?;
                let raw = cur.u32(&w)?;
                let v = if kflag {
                    i64::from(raw as i32)
                } else {
                    i64::from(raw)
                };
                values.push((string_at(strings, id, v_name)?, v));
            }
            Type::Enum {
                name,
                size: size_or_type,
                signed: kflag,
                values,
            }
        }
        KIND_ENUM64 => {
            let w = what("enumerators");
            cur.need(vlen, 12, &w)?;
            let mut values = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let v_name = cur.u32(&w)?;
                let lo = cur.u32(&w)?;
                let hi = cur.u32(&w)?;
                let v = ((u64::from(hi) << 32) | u64::from(lo)) as i64;
                values.push((string_at(strings, id, v_name)?, v));
            }
            Type::Enum {
                name,
                size: size_or_type,
                signed: kflag,
                values,
            }
        }
        KIND_FWD => Type::Fwd {
            name,
            is_union: kflag,
        },
        KIND_TYPEDEF => Type::Typedef {
            name,
            target: size_or_type,
        },
        KIND_VOLATILE => Type::Volatile {
            target: size_or_type,
        },
        KIND_CONST => Type::Const {
            target: size_or_type,
        },
        KIND_RESTRICT => Type::Restrict {
            target: size_or_type,
        },
        KIND_FUNC => Type::Func {
            name,
            proto: size_or_type,
            linkage: Linkage::from_raw(vlen as u32),
        },
        KIND_FUNC_PROTO => {
            let w = what("parameters");
            cur.need(vlen, 8, &w)?;
            let mut params = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                let p_name = cur.u32(&w)?;
                let ty = cur.u32(&w)?;
                params.push((string_at(strings, id, p_name)?, ty));
            }
            Type::FuncProto {
                ret: size_or_type,
                params,
            }
        }
        KIND_VAR => Type::Var {
            name,
            ty: size_or_type,
            linkage: Linkage::from_raw(cur.u32(&what("VAR linkage"))?),
        },
        KIND_DATASEC => {
            let w = what("section variables");
            cur.need(vlen, 12, &w)?;
            let mut vars = Vec::with_capacity(vlen);
            for _ in 0..vlen {
                vars.push(SecVar {
                    ty: cur.u32(&w)?,
                    offset: cur.u32(&w)?,
                    size: cur.u32(&w)?,
                });
            }
            Type::DataSec {
                name,
                size: size_or_type,
                vars,
            }
        }
        KIND_FLOAT => Type::Float {
            name,
            size: size_or_type,
        },
        KIND_DECL_TAG => Type::DeclTag {
            name,
            target: size_or_type,
            component_idx: cur.u32(&what("DECL_TAG component"))? as i32,
        },
        KIND_TYPE_TAG => Type::TypeTag {
            name,
            target: size_or_type,
        },
        _ => return Err(BtfError::UnknownKind { kind, id }),
    };
    Ok(t)
}

// Bit and byte helpers shared by decoding and encoding.

fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn sign_extend(raw: u128, bits: u32) -> i128 {
    if bits == 0 || bits >= 128 {
        raw as i128
    } else {
        let shift = 128 - bits;
        ((raw << shift) as i128) >> shift
    }
}

fn le_uint(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take(16)
        .enumerate()
        .fold(0u128, |acc, (i, b)| acc | (u128::from(*b) << (8 * i)))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

// Decoding values to JSON, encoding user text, writing BTF and CO-RE are their own files.
pub mod core;
mod decode;
mod encode;
pub mod subset;
pub mod write;
pub use decode::*;
pub use encode::*;

#[cfg(test)]
mod tests;
