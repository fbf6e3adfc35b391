//! Decoding event records (ring buffer and perf buffer samples) by their BTF type, fast. A
//! `Format` is compiled once from the type: a tree of fields with fixed offsets. Writing an event
//! is then a walk over that tree appending text to a buffer: no allocation per field and no
//! intermediate JSON values, because `apiary run` has to keep up with millions of events a second.
//!
//! Records are not always `sizeof(struct)` bytes: tools send a fixed header and only the used
//! part of a trailing array (`char args[]` sized by `args_size`, `__u8 data[]` sized by `len`),
//! and perf pads records. The root struct's trailing array, and any root array a length or
//! count field describes, is decoded from what the record holds (see [`var_field`]). Table rows
//! are aligned in columns whose widths come from the member types.
//!
//! This module also picks the event type of a map ([`event_type`]), from BTF or, for structs
//! clang left out of BTF, from DWARF ([`crate::dwarf`]).

use crate::btf::{Btf, Type, TypeId};
use crate::dwarf::DebugInfo;
use crate::elf::ObjectInfo;
use std::fmt::Write as _;

#[derive(Debug, Clone)]
enum Node {
    Int {
        off: usize,
        size: u8,
        signed: bool,
    },
    Bool {
        off: usize,
    },
    Bits {
        bit_off: usize,
        bits: u32,
        signed: bool,
    },
    Enum {
        off: usize,
        size: u8,
        signed: bool,
        names: Vec<(i64, String)>,
    },
    Str {
        off: usize,
        len: usize,
    },
    Float {
        off: usize,
        size: u8,
    },
    Ptr {
        off: usize,
    },
    Array {
        off: usize,
        len: usize,
        stride: usize,
        elem: Box<Node>,
    },
    Struct {
        off: usize,
        fields: Vec<(String, Node)>,
    },
    Hex {
        off: usize,
        len: usize,
    },
    /// A root-level array whose used part the record says (see [`var_field`]).
    Var {
        off: usize,
        /// Bytes the type gives it; `None` for a flexible array, which runs to the record's end.
        cap: Option<usize>,
        stride: usize,
        /// A field holding how many bytes are used.
        bytes: Option<Counter>,
        /// A field holding how many elements (strings, for text) are used.
        count: Option<Counter>,
        elem: VarElem,
    },
}

/// An integer field of the record, read to bound a variable part.
#[derive(Debug, Clone, Copy)]
struct Counter {
    off: usize,
    size: u8,
    signed: bool,
}

impl Counter {
    fn read(&self, d: &[u8]) -> usize {
        let raw = read_uint(d, self.off, self.size);
        if self.signed {
            usize::try_from(sign_extend(raw, u32::from(self.size) * 8).max(0)).unwrap_or(0)
        } else {
            usize::try_from(raw).unwrap_or(usize::MAX)
        }
    }
}

#[derive(Debug, Clone)]
enum VarElem {
    /// `char`: text up to the first NUL; with `split`, a list of strings when the used part
    /// holds several printable NUL-separated ones.
    Text { split: bool },
    /// `char` with a count field: always a list of (at most) that many strings.
    Strings,
    /// One-byte non-`char` elements (`__u8 data[]`): a hex string.
    Bytes,
    /// Anything else: a list of elements.
    Items(Box<Node>),
}

/// A table column: a leaf field's dotted path, its width and alignment.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    width: usize,
    right: bool,
}

/// A compiled event layout.
#[derive(Debug, Clone)]
pub struct Format {
    root: Node,
    size: usize,
    /// Records shorter than this are reported as truncated: `size`, or the offset of a
    /// trailing variable part, whose absence is legitimate.
    min_size: usize,
    type_name: String,
    columns: Vec<String>,
    layout: Vec<Column>,
}

/// Widest a table column gets from its type; longer values still print whole and push the
/// rest of the row right.
const MAX_COL: usize = 32;

const MAX_DEPTH: u32 = 16;

fn shift(n: &Node, by: usize) -> Node {
    let mut n = n.clone();
    fn go(n: &mut Node, by: usize) {
        match n {
            Node::Int { off, .. }
            | Node::Bool { off }
            | Node::Enum { off, .. }
            | Node::Str { off, .. }
            | Node::Float { off, .. }
            | Node::Ptr { off }
            | Node::Array { off, .. }
            | Node::Struct { off, .. }
            | Node::Hex { off, .. }
            | Node::Var { off, .. } => *off += by,
            Node::Bits { bit_off, .. } => *bit_off += by * 8,
        }
    }
    go(&mut n, by);
    n
}

/// A BTF name as it may stand inside a JSON string: names come from the object, and a `"` or a
/// control character in one must not break (or add members to) the events written with it.
/// Escaped once here, so writing an event costs nothing more.
fn json_text(name: &str) -> String {
    let quoted = serde_json::to_string(name).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

fn compile(btf: &Btf, id: TypeId, depth: u32) -> Option<Node> {
    if depth > MAX_DEPTH {
        return None;
    }
    let id = btf.resolve(id);
    let size = btf.size_of(id).unwrap_or(0) as usize;
    Some(match btf.get(id)? {
        Type::Int {
            size,
            signed,
            is_bool,
            is_char: _,
            bits,
            offset: _,
            ..
        } => {
            if *is_bool {
                Node::Bool { off: 0 }
            } else if matches!(size, 1 | 2 | 4 | 8) && (*bits == 0 || *bits == size * 8) {
                Node::Int {
                    off: 0,
                    size: *size as u8,
                    signed: *signed,
                }
            } else {
                Node::Hex {
                    off: 0,
                    len: *size as usize,
                }
            }
        }
        Type::Enum {
            size,
            signed,
            values,
            ..
        } if matches!(size, 1 | 2 | 4 | 8) => Node::Enum {
            off: 0,
            size: *size as u8,
            signed: *signed,
            names: values.iter().map(|(n, v)| (*v, json_text(n))).collect(),
        },
        Type::Float { size, .. } if matches!(size, 4 | 8) => Node::Float {
            off: 0,
            size: *size as u8,
        },
        Type::Ptr { .. } => Node::Ptr { off: 0 },
        Type::Array { elem, len, .. } => {
            let e = btf.resolve(*elem);
            let is_char = matches!(
                btf.get(e),
                Some(Type::Int {
                    size: 1,
                    is_char: true,
                    ..
                })
            );
            let is_plain_char =
                matches!(btf.get(e), Some(Type::Int { name, size: 1, .. }) if name == "char");
            if is_char || is_plain_char {
                Node::Str {
                    off: 0,
                    len: *len as usize,
                }
            } else {
                let stride = btf.size_of(e)? as usize;
                Node::Array {
                    off: 0,
                    // Elements of no size hold nothing: never write billions of them.
                    len: if stride == 0 { 0 } else { *len as usize },
                    stride,
                    elem: Box::new(compile(btf, e, depth + 1)?),
                }
            }
        }
        Type::Struct { members, .. } | Type::Union { members, .. } => {
            let mut fields = Vec::new();
            let mut anon = 0;
            for m in members {
                let name = if m.name.is_empty() {
                    anon += 1;
                    format!("_anon{}", anon - 1)
                } else {
                    json_text(&m.name)
                };
                let node = if m.bitfield_size > 0 {
                    let signed = matches!(
                        btf.get(btf.resolve(m.ty)),
                        Some(Type::Int { signed: true, .. })
                    );
                    Node::Bits {
                        bit_off: m.bit_offset as usize,
                        bits: m.bitfield_size,
                        signed,
                    }
                } else {
                    shift(&compile(btf, m.ty, depth + 1)?, (m.bit_offset / 8) as usize)
                };
                fields.push((name, node));
            }
            let node = Node::Struct { off: 0, fields };
            // Members may overlap (unions, or a hostile struct whose members share offsets), so
            // what is written for a record could grow far faster than the record; past a few
            // values per byte, show the bytes instead.
            if cost(&node) > 8 * size as u64 + 64 {
                Node::Hex { off: 0, len: size }
            } else {
                node
            }
        }
        _ => Node::Hex { off: 0, len: size },
    })
}

/// How many values writing `node` for a full record produces (saturating).
fn cost(node: &Node) -> u64 {
    match node {
        Node::Array { len, elem, .. } => (*len as u64).saturating_mul(cost(elem)),
        Node::Struct { fields, .. } => fields
            .iter()
            .fold(1u64, |n, (_, f)| n.saturating_add(cost(f))),
        Node::Int { .. }
        | Node::Bits { .. }
        | Node::Bool { .. }
        | Node::Enum { .. }
        | Node::Str { .. }
        | Node::Float { .. }
        | Node::Ptr { .. }
        | Node::Hex { .. }
        | Node::Var { .. } => 1,
    }
}

fn columns(node: &Node, prefix: &str, out: &mut Vec<Column>) {
    match node {
        Node::Struct { fields, .. } => {
            for (name, n) in fields {
                let p = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                columns(n, &p, out);
            }
        }
        leaf => {
            let name = if prefix.is_empty() {
                "value".to_string()
            } else {
                prefix.to_string()
            };
            let (w, right) = cell_width(leaf);
            out.push(Column {
                width: w.min(MAX_COL).max(name.len()),
                name,
                right,
            });
        }
    }
}

/// Decimal digits of the largest value `bits` bits hold, plus one for a sign.
fn digits(bits: u32, signed: bool) -> usize {
    let max: u64 = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut buf = itoa::Buffer::new();
    if signed {
        // The most negative value is one digit longer than the positive maximum, with its sign.
        buf.format(max / 2 + 1).len() + 1
    } else {
        buf.format(max).len()
    }
}

/// The width a value of this node needs at most (before capping), and whether it is a number
/// (right-aligned) rather than text.
fn cell_width(node: &Node) -> (usize, bool) {
    match node {
        Node::Int { size, signed, .. } => (digits(u32::from(*size) * 8, *signed), true),
        Node::Bool { .. } => (5, false),
        Node::Bits { bits, signed, .. } => (digits(*bits, *signed), true),
        Node::Enum {
            names,
            size,
            signed,
            ..
        } => {
            let name = names.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
            // Values outside the enumerators print as numbers; those are rare, so a name's
            // width is enough unless there are no names.
            let w = if name > 0 {
                name
            } else {
                digits(u32::from(*size) * 8, *signed)
            };
            (w, false)
        }
        Node::Str { len, .. } => (len.saturating_sub(1).max(1), false),
        Node::Float { .. } => (12, true),
        Node::Ptr { .. } => (18, true),
        Node::Hex { len, .. } => (len * 2, false),
        Node::Array { len, elem, .. } => {
            let (e, _) = cell_width(elem);
            (2 + len * (e + 1), false)
        }
        Node::Var { cap, .. } => (cap.unwrap_or(MAX_COL), false),
        Node::Struct { .. } => (MAX_COL, false),
    }
}

/// Whether a one-byte integer type is C `char` (text) rather than a byte. clang's BTF marks
/// `char` as a signed INT named `char`, sometimes with the CHAR flag; `unsigned char` (`__u8`)
/// is data.
fn is_text_char(btf: &Btf, id: TypeId) -> bool {
    matches!(
        btf.get(btf.resolve(id)),
        Some(Type::Int { size: 1, is_char, name, .. })
            if *is_char || name == "char" || name == "signed char"
    )
}

/// Names of fields that say how much of array `name` a record uses, most specific first.
/// Returns (byte-length names, element-count names). `flexible`: the array has no declared
/// size, so a generic `len`/`size`/`count` field can only be about it; for a sized array a
/// generic name is too often something else (fsslower's `size` is the I/O size, next to
/// `char file[]`). `len`/`length` count bytes for one-byte elements and elements otherwise;
/// `size`/`sz`/`bytes` always count bytes (what bpf_get_stack and bpf_probe_read_str return).
fn counter_names(name: &str, stride: usize, flexible: bool) -> (Vec<String>, Vec<String>) {
    let mut bytes: Vec<String> = ["_size", "_sz", "_bytes", "size"]
        .iter()
        .map(|s| format!("{name}{s}"))
        .collect();
    let mut count: Vec<String> = ["_count", "_cnt", "_num", "count"]
        .iter()
        .map(|s| format!("{name}{s}"))
        .chain(["nr_", "num_", "n_"].iter().map(|p| format!("{p}{name}")))
        .collect();
    let lens = [
        format!("{name}_len"),
        format!("{name}_length"),
        format!("{name}len"),
    ];
    if stride == 1 {
        bytes.extend(lens);
    } else {
        count.extend(lens);
    }
    if name == "args" || name == "argv" {
        count.push("argc".into());
    }
    if flexible {
        bytes.extend(
            ["size", "sz", "data_size", "data_len", "buf_size", "buf_len"].map(String::from),
        );
        count.extend(["count", "cnt", "nr", "num"].map(String::from));
        let generic = ["len", "length"].map(String::from);
        if stride == 1 {
            bytes.extend(generic);
        } else {
            count.extend(generic);
        }
    }
    (bytes, count)
}

/// Decides whether root member `idx` (an array) is decoded from what the record holds, and
/// how. It is when it is the struct's last member (a flexible array, or one the sender cut
/// short: execsnoop sends `offsetof(args) + args_size` bytes), or when another integer member
/// is named as its length or count (`args_size`, `args_count`, `data_len`, `nr_ips`; see
/// [`counter_names`]).
///
/// The multi-string rule: a `char` array is shown as a list of strings only when the record
/// says how much of it is used. With a count field it is always a list (of at most that many
/// strings). With a byte-length field it is a list when the used part holds two or more
/// NUL-separated strings that are all non-empty and printable, and otherwise one string. With
/// neither it is one string up to the first NUL: a plain `char path[256]` filled by
/// bpf_probe_read_str keeps stale bytes after its NUL (ring buffer slots are not zeroed), so
/// text there is not evidence of more strings, and `comm[16]` never turns into a list.
///
/// Returns the node and whether it is the trailing member.
fn var_field(
    btf: &Btf,
    members: &[crate::btf::Member],
    idx: usize,
    depth: u32,
) -> Option<(Node, bool)> {
    let m = members.get(idx)?;
    if m.bitfield_size > 0 {
        return None;
    }
    let Some(Type::Array { elem, len, .. }) = btf.get(btf.resolve(m.ty)) else {
        return None;
    };
    let (elem, len) = (*elem, *len as usize);
    let stride = btf.size_of(elem)? as usize;
    if stride == 0 {
        return None;
    }
    let off = (m.bit_offset / 8) as usize;
    // Last by position: the member nothing else follows.
    let last = members
        .iter()
        .all(|o| o.bit_offset <= m.bit_offset || std::ptr::eq(o, m));
    let flexible = len == 0 && last;
    let (byte_names, count_names) = counter_names(&m.name, stride, flexible);
    let counter = |names: &[String]| {
        names.iter().find_map(|want| {
            let c = members
                .iter()
                .find(|o| &o.name == want && o.bitfield_size == 0 && !std::ptr::eq(*o, m))?;
            match btf.get(btf.resolve(c.ty)) {
                Some(Type::Int {
                    size,
                    signed,
                    is_bool: false,
                    ..
                }) if matches!(size, 1 | 2 | 4 | 8) => Some(Counter {
                    off: (c.bit_offset / 8) as usize,
                    size: *size as u8,
                    signed: *signed,
                }),
                _ => None,
            }
        })
    };
    let bytes = counter(&byte_names);
    let count = counter(&count_names);
    if !last && bytes.is_none() && count.is_none() {
        return None;
    }
    let described = bytes.is_some() || count.is_some();
    let elem_node = if is_text_char(btf, elem) && stride == 1 {
        if count.is_some() {
            VarElem::Strings
        } else {
            VarElem::Text {
                split: bytes.is_some(),
            }
        }
    } else if stride == 1 && (flexible || described) {
        VarElem::Bytes
    } else {
        VarElem::Items(Box::new(compile(btf, elem, depth + 1)?))
    };
    let node = Node::Var {
        off,
        cap: (!flexible).then_some(len * stride),
        stride,
        bytes,
        count,
        elem: elem_node,
    };
    Some((node, last))
}

impl Format {
    /// Compile the layout of type `id`.
    pub fn new(btf: &Btf, id: TypeId) -> Option<Format> {
        // A type whose size overflows would make every record "fit" and its arrays huge.
        let size = usize::try_from(btf.size_of(id)?).ok()?;
        let mut root = compile(btf, id, 0)?;
        let mut min_size = size;
        if let (Some(Type::Struct { members, .. }), Node::Struct { fields, .. }) =
            (btf.get(btf.resolve(id)), &mut root)
        {
            for (i, field) in fields.iter_mut().enumerate() {
                if let Some((v, last)) = var_field(btf, members, i, 0) {
                    if let (true, Node::Var { off, .. }) = (last, &v) {
                        min_size = min_size.min(*off);
                    }
                    field.1 = v;
                }
            }
        }
        let mut layout = Vec::new();
        columns(&root, "", &mut layout);
        Some(Format {
            root,
            size,
            min_size,
            type_name: btf.type_name(id),
            columns: layout.iter().map(|c| c.name.clone()).collect(),
            layout,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The shortest record that decodes: the fixed part before a trailing variable array.
    pub fn min_size(&self) -> usize {
        self.min_size
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Column names for the table form: leaf fields with dotted paths.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The table header: upper-cased column names aligned like [`Format::write_row`]'s cells
    /// (no newline, no trailing spaces).
    pub fn header(&self) -> String {
        let mut out = String::new();
        let n = self.layout.len();
        for (i, c) in self.layout.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let name = c.name.to_uppercase();
            let pad = c.width.saturating_sub(name.len());
            if c.right {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(&name);
            } else {
                out.push_str(&name);
                if i + 1 < n {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out
    }

    /// Append one event as a JSON object (no newline). A record shorter than the type's fixed
    /// part is written as `{"_truncated":"<hex>"}` rather than read past its end.
    pub fn write_json(&self, data: &[u8], out: &mut String) {
        self.write_json_tagged(data, "", out)
    }

    /// `write_json` with `tag`, a rendered JSON member such as `"_map":"events"`, as the
    /// object's first member (a non-struct event becomes `{tag,"value":...}`).
    pub fn write_json_tagged(&self, data: &[u8], tag: &str, out: &mut String) {
        let lead = |out: &mut String| {
            out.push('{');
            if !tag.is_empty() {
                out.push_str(tag);
                out.push(',');
            }
        };
        if data.len() < self.min_size {
            lead(out);
            out.push_str("\"_truncated\":\"");
            hex(data, out);
            out.push_str("\"}");
            return;
        }
        match &self.root {
            Node::Struct { off, fields } if !tag.is_empty() => {
                out.push('{');
                out.push_str(tag);
                for (name, n) in fields {
                    out.push_str(",\"");
                    out.push_str(name);
                    out.push_str("\":");
                    json(n, data, *off, out);
                }
                out.push('}');
            }
            root if !tag.is_empty() => {
                lead(out);
                out.push_str("\"value\":");
                json(root, data, 0, out);
                out.push('}');
            }
            root => json(root, data, 0, out),
        }
    }

    /// Append one event as table cells in the columns of [`Format::header`], separated by two
    /// spaces (no newline, no trailing spaces).
    pub fn write_row(&self, data: &[u8], out: &mut String) {
        if data.len() < self.min_size {
            out.push_str("(truncated) ");
            hex(data, out);
            return;
        }
        let mut col = 0;
        row(&self.root, data, 0, out, &self.layout, &mut col);
    }
}

fn read_uint(d: &[u8], off: usize, size: u8) -> u64 {
    let mut b = [0u8; 8];
    let n = size as usize;
    if let Some(s) = d.get(off..off + n) {
        b[..n].copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits == 0 || bits >= 64 {
        return v as i64;
    }
    let sh = 64 - bits;
    ((v << sh) as i64) >> sh
}

fn hex(d: &[u8], out: &mut String) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for b in d {
        out.push(H[(b >> 4) as usize] as char);
        out.push(H[(b & 15) as usize] as char);
    }
}

fn push_int(out: &mut String, v: u64, signed: bool, size: u8) {
    let mut buf = itoa::Buffer::new();
    if signed {
        out.push_str(buf.format(sign_extend(v, size as u32 * 8)));
    } else {
        out.push_str(buf.format(v));
    }
}

fn json_str(s: &[u8], out: &mut String) {
    out.push('"');
    let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
    let text = String::from_utf8_lossy(&s[..end]);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn scalar(node: &Node, d: &[u8], base: usize, out: &mut String, quote_text: bool) -> bool {
    match node {
        Node::Int { off, size, signed } => {
            push_int(out, read_uint(d, base + off, *size), *signed, *size)
        }
        Node::Bool { off } => out.push_str(if d.get(base + off).copied().unwrap_or(0) != 0 {
            "true"
        } else {
            "false"
        }),
        Node::Bits {
            bit_off,
            bits,
            signed,
        } => {
            let abs = base * 8 + bit_off;
            let word = read_uint(d, abs / 8, 8.min((d.len().saturating_sub(abs / 8)) as u8));
            let v = (word >> (abs % 8))
                & if *bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
            let mut buf = itoa::Buffer::new();
            if *signed {
                out.push_str(buf.format(sign_extend(v, *bits)));
            } else {
                out.push_str(buf.format(v));
            }
        }
        Node::Enum {
            off,
            size,
            signed,
            names,
        } => {
            let raw = read_uint(d, base + off, *size);
            let v = if *signed {
                sign_extend(raw, *size as u32 * 8)
            } else {
                raw as i64
            };
            match names.iter().find(|(n, _)| *n == v) {
                Some((_, name)) if quote_text => {
                    out.push('"');
                    out.push_str(name);
                    out.push('"');
                }
                Some((_, name)) => out.push_str(name),
                None => push_int(out, raw, *signed, *size),
            }
        }
        Node::Str { off, len } => {
            let s = d.get(base + off..base + off + len).unwrap_or(&[]);
            if quote_text {
                json_str(s, out);
            } else {
                let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
                out.push_str(&String::from_utf8_lossy(&s[..end]));
            }
        }
        Node::Float { off, size } => {
            let raw = read_uint(d, base + off, *size);
            let v = if *size == 4 {
                f32::from_bits(raw as u32) as f64
            } else {
                f64::from_bits(raw)
            };
            if v.is_finite() {
                let _ = write!(out, "{v}");
            } else if quote_text {
                let _ = write!(out, "\"{v}\"");
            } else {
                let _ = write!(out, "{v}");
            }
        }
        Node::Ptr { off } => {
            let v = read_uint(d, base + off, 8);
            let _ = if quote_text {
                write!(out, "\"{v:#x}\"")
            } else {
                write!(out, "{v:#x}")
            };
        }
        Node::Hex { off, len } => {
            let s = d.get(base + off..base + off + len).unwrap_or(&[]);
            if quote_text {
                out.push('"');
            }
            hex(s, out);
            if quote_text {
                out.push('"');
            }
        }
        Node::Var {
            off,
            cap,
            stride,
            bytes,
            count,
            elem,
        } => {
            let used = var_span(d, base + off, *cap, *bytes);
            let max = count.map(|c| c.read(d)).unwrap_or(usize::MAX);
            match elem {
                VarElem::Text { split } => {
                    let list = if *split { multi_strings(used) } else { None };
                    match list {
                        Some(n) => text_list(used, n, out, quote_text),
                        None => {
                            if quote_text {
                                json_str(used, out);
                            } else {
                                let end = used.iter().position(|b| *b == 0).unwrap_or(used.len());
                                out.push_str(&String::from_utf8_lossy(&used[..end]));
                            }
                        }
                    }
                }
                VarElem::Strings => text_list(used, max, out, quote_text),
                VarElem::Bytes => {
                    let used = &used[..used.len().min(max)];
                    if quote_text {
                        out.push('"');
                    }
                    hex(used, out);
                    if quote_text {
                        out.push('"');
                    }
                }
                VarElem::Items(e) => {
                    let n = (used.len() / stride).min(max);
                    let start = base + off;
                    out.push('[');
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        json(e, d, start + i * stride, out);
                    }
                    out.push(']');
                }
            }
        }
        Node::Array { .. } | Node::Struct { .. } => return false,
    }
    true
}

fn json(node: &Node, d: &[u8], base: usize, out: &mut String) {
    match node {
        Node::Struct { off, fields } => {
            out.push('{');
            for (i, (name, n)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(name);
                out.push_str("\":");
                json(n, d, base + off, out);
            }
            out.push('}');
        }
        Node::Array {
            off,
            len,
            stride,
            elem,
        } => {
            out.push('[');
            for i in 0..*len {
                let at = base + off + i * stride;
                // Only a malformed type (from untrusted BTF or DWARF) has an array running past
                // the record; stop there rather than print zeros for billions of elements.
                if at >= d.len() && *stride > 0 {
                    break;
                }
                if i > 0 {
                    out.push(',');
                }
                json(elem, d, at, out);
            }
            out.push(']');
        }
        leaf => {
            scalar(leaf, d, base, out, true);
        }
    }
}

/// The bytes of a variable part: from `start`, up to the record's end, the declared capacity
/// and the length field, whichever comes first.
fn var_span(d: &[u8], start: usize, cap: Option<usize>, bytes: Option<Counter>) -> &[u8] {
    let mut end = d.len();
    if let Some(c) = cap {
        end = end.min(start.saturating_add(c));
    }
    if let Some(b) = bytes {
        end = end.min(start.saturating_add(b.read(d)));
    }
    d.get(start..end.max(start)).unwrap_or(&[])
}

fn trim_nuls(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|b| *b != 0).map(|i| i + 1).unwrap_or(0);
    &s[..end]
}

/// For the byte-length rule of [`var_field`]: the number of strings when `s` holds two or
/// more NUL-separated strings, all non-empty and printable (UTF-8 allowed).
fn multi_strings(s: &[u8]) -> Option<usize> {
    let t = trim_nuls(s);
    let mut n = 0;
    for piece in t.split(|b| *b == 0) {
        let control = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
        if piece.is_empty() || piece.iter().any(control) {
            return None;
        }
        n += 1;
    }
    (n >= 2).then_some(n)
}

/// At most `max` NUL-separated strings of `s` (NUL padding at the end is not a string): a JSON
/// array, or for a table cell the strings separated by spaces, as execsnoop prints arguments.
fn text_list(s: &[u8], max: usize, out: &mut String, quote_text: bool) {
    let t = trim_nuls(s);
    let pieces = t
        .split(|b| *b == 0)
        .take(if t.is_empty() { 0 } else { max });
    if quote_text {
        out.push('[');
    }
    for (i, p) in pieces.enumerate() {
        if i > 0 {
            out.push(if quote_text { ',' } else { ' ' });
        }
        if quote_text {
            json_str(p, out);
        } else {
            out.push_str(&String::from_utf8_lossy(p));
        }
    }
    if quote_text {
        out.push(']');
    }
}

/// Writes leaf cells in table columns: two spaces between cells, numbers right-aligned and
/// text left-aligned in their column's width, the last cell unpadded.
fn row(node: &Node, d: &[u8], base: usize, out: &mut String, cols: &[Column], col: &mut usize) {
    match node {
        Node::Struct { off, fields } => {
            for (_, n) in fields {
                row(n, d, base + off, out, cols, col);
            }
        }
        leaf => {
            if *col > 0 {
                out.push_str("  ");
            }
            let c = cols.get(*col);
            *col += 1;
            // Integers are most cells: formatted aside, they are padded before being written
            // instead of shifted into place afterwards.
            if let (Node::Int { off, size, signed }, Some(c)) = (leaf, c) {
                let v = read_uint(d, base + off, *size);
                let mut buf = itoa::Buffer::new();
                let s = if *signed {
                    buf.format(sign_extend(v, u32::from(*size) * 8))
                } else {
                    buf.format(v)
                };
                let pad = c.width.saturating_sub(s.len()).min(SPACES.len());
                out.push_str(&SPACES[..pad]);
                out.push_str(s);
                return;
            }
            let start = out.len();
            if let Node::Array { .. } = leaf {
                json(leaf, d, base, out);
            } else {
                scalar(leaf, d, base, out, false);
            }
            if let Some(c) = c {
                let cell = &out[start..];
                let w = if cell.is_ascii() {
                    cell.len()
                } else {
                    cell.chars().count()
                };
                let pad = c.width.saturating_sub(w).min(SPACES.len());
                if pad > 0 {
                    if c.right {
                        out.insert_str(start, &SPACES[..pad]);
                    } else if *col < cols.len() {
                        out.push_str(&SPACES[..pad]);
                    }
                }
            }
        }
    }
}

/// Padding source: no column is wider than this.
const SPACES: &str = "                                                                ";

/// How the event type of a ring buffer or perf buffer was found, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSource {
    /// Named with `--event-type` (or recorded in a package).
    Explicit,
    /// `__type(value, struct event)` on the map.
    MapValue,
    /// The eunomia convention: a global pointer to the struct.
    GlobalPointer(String),
    /// A struct named like the map (`events` carries `struct event`).
    NamedLikeMap,
    /// The only struct that exists in DWARF but not in BTF: the type of a local variable.
    OnlyInDwarf,
    /// A name event structs conventionally have (`event`, `event_t`, `data_t`).
    Conventional,
}

/// The event type of one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    pub id: TypeId,
    pub source: TypeSource,
    /// Read from the object's DWARF because its BTF lacks the type.
    pub from_dwarf: bool,
}

impl EventType {
    /// Where the type came from, for a note such as "decoded as struct event (from ...)".
    pub fn describe(&self) -> String {
        let how = match &self.source {
            TypeSource::Explicit => "--event-type".to_string(),
            TypeSource::MapValue => "the map's BTF value type".to_string(),
            TypeSource::GlobalPointer(g) => format!("the global pointer {g}"),
            TypeSource::NamedLikeMap => "the struct named like the map".to_string(),
            TypeSource::OnlyInDwarf => {
                "the only struct that is in DWARF but not in BTF (a local variable's type)"
                    .to_string()
            }
            TypeSource::Conventional => "its conventional name".to_string(),
        };
        if self.from_dwarf && self.source != TypeSource::OnlyInDwarf {
            format!("{how}; read from DWARF, the object's BTF lacks it")
        } else {
            how
        }
    }
}

/// Names event structs conventionally have, in order of preference.
const CONVENTIONAL: &[&str] = &["event", "event_t", "data_t"];
/// A struct larger than this is no event record (a perf sample's size is 16 bits; ring buffer
/// records can be larger, but not megabytes).
const MAX_EVENT_SIZE: u64 = 1 << 20;

/// The type `--event-type` names for `map`. The value is either one type for every event map,
/// or `MAP=TYPE[,MAP=TYPE...]` when maps carry different structs; a map not listed there gets
/// the automatic choice.
fn explicit_for<'a>(
    info: &ObjectInfo,
    spec: &'a str,
    map: &str,
) -> Result<Option<&'a str>, String> {
    if !spec.contains('=') {
        return Ok(Some(spec));
    }
    let mut found = None;
    for pair in spec.split(',') {
        let Some((m, t)) = pair.split_once('=') else {
            return Err(format!(
                "--event-type {spec}: expected TYPE or MAP=TYPE[,MAP=TYPE...], got {pair:?}"
            ));
        };
        let (m, t) = (m.trim(), t.trim());
        if info.map(m).is_none() {
            let names: Vec<&str> = info.maps.iter().map(|m| m.name.as_str()).collect();
            return Err(format!(
                "--event-type {spec}: no map {m}; the object has: {}",
                names.join(", ")
            ));
        }
        if t.is_empty() {
            return Err(format!("--event-type {spec}: no type given for map {m}"));
        }
        if m == map {
            found = Some(t);
        }
    }
    Ok(found)
}

/// The struct, union or typedef called `name` among the types parsed from the object's BTF
/// (not ones appended from DWARF).
fn in_native_btf(btf: &Btf, name: &str) -> Option<TypeId> {
    btf.iter()
        .take_while(|(id, _)| btf.is_native(*id))
        .find(|(_, t)| {
            matches!(
                t,
                Type::Struct { .. } | Type::Union { .. } | Type::Typedef { .. }
            ) && t.name() == Some(name)
        })
        .map(|(id, _)| id)
}

/// Looks `name` up in BTF (including types already brought in from DWARF), then in DWARF,
/// appending what DWARF has to `info.btf`.
fn lookup(
    info: &mut ObjectInfo,
    dwarf: &mut Option<Option<DebugInfo>>,
    object: &[u8],
    name: &str,
) -> Result<Option<(TypeId, bool)>, String> {
    if let Some(b) = info.btf.as_ref() {
        if let Some(id) = b.find_struct(name).or_else(|| b.find_by_name(name)) {
            return Ok(Some((id, !b.is_native(id))));
        }
    }
    let Some(dbg) = debug_info(dwarf, info, object)? else {
        return Ok(None);
    };
    let btf = info.btf.get_or_insert_with(Btf::empty);
    let id = dbg.import(name, btf).map_err(|e| e.to_string())?;
    Ok(id.map(|id| (id, true)))
}

/// The object's DWARF, read on first use.
fn debug_info<'a>(
    cache: &'a mut Option<Option<DebugInfo>>,
    info: &ObjectInfo,
    object: &[u8],
) -> Result<Option<&'a DebugInfo>, String> {
    if cache.is_none() {
        let d = if info.has_dwarf {
            DebugInfo::read(object).map_err(|e| e.to_string())?
        } else {
            None
        };
        *cache = Some(d);
    }
    Ok(cache.as_ref().and_then(|d| d.as_ref()))
}

/// The event type found for each ring buffer and perf event array of the object, by name, as
/// `inspect` shows them and packages record them (types only in DWARF are appended to
/// `info.btf` on the way).
pub fn event_type_names(
    info: &mut ObjectInfo,
    object: &[u8],
) -> std::collections::BTreeMap<String, String> {
    let event_maps: Vec<String> = info
        .maps
        .iter()
        .filter(|m| m.map_type_name == "ringbuf" || m.map_type_name == "perf_event_array")
        .map(|m| m.name.clone())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for m in event_maps {
        if let Ok(Some(t)) = event_type(info, object, &m, None) {
            if let Some(b) = info.btf.as_ref() {
                out.insert(m, b.type_name(t.id));
            }
        }
    }
    out
}

/// Find the event type for map `map` of `object` (whose inspection is `info`):
///
/// 1. `--event-type` (`explicit`; see [`explicit_for`] for the per-map form), looked up in BTF
///    and then in DWARF;
/// 2. the type in the map's BTF definition (`__type(value, struct event)`);
/// 3. the eunomia convention, a global pointer to the event struct (`struct event
///    *unused_event;`) when exactly one struct is referenced so;
/// 4. a struct named like the map (`events` → `struct event`, `blob` or `blobs` →
///    `struct blob`), in BTF or only in DWARF;
/// 5. when the object has one event map (a single guess cannot fit several): the only
///    plausible struct that exists in DWARF but not in BTF, which is what a struct used only as
///    a local variable's type looks like; then a conventional name (`event`, `event_t`,
///    `data_t`) in either.
///
/// Types found only in DWARF are converted and appended to `info.btf` (created if the object
/// has no BTF), so [`Format::new`] and naming work on them like on any other type.
pub fn event_type(
    info: &mut ObjectInfo,
    object: &[u8],
    map: &str,
    explicit: Option<&str>,
) -> Result<Option<EventType>, String> {
    let mut dwarf: Option<Option<DebugInfo>> = None;
    let explicit = match explicit {
        Some(spec) => explicit_for(info, spec, map)?,
        None => None,
    };
    if let Some(name) = explicit {
        return match lookup(info, &mut dwarf, object, name)? {
            Some((id, from_dwarf)) => Ok(Some(EventType {
                id,
                source: TypeSource::Explicit,
                from_dwarf,
            })),
            None if !info.has_dwarf => Err(format!(
                "--event-type {name}: no such type in the object's BTF, and the object has no DWARF debug info to look in (a struct used only by local variables is only in DWARF: compile with -g, or declare a global such as `struct {name} *unused_{name};`)"
            )),
            None => {
                let known: Vec<String> = debug_info(&mut dwarf, info, object)?
                    .map(|d| d.candidates().into_iter().map(|c| c.name).collect())
                    .unwrap_or_default();
                Err(format!(
                    "--event-type {name}: no such type in the object's BTF or DWARF{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; structs it defines: {}", known.join(", "))
                    }
                ))
            }
        };
    }
    let found = |id, source| {
        Ok(Some(EventType {
            id,
            source,
            from_dwarf: false,
        }))
    };
    if let Some(btf) = info.btf.as_ref() {
        if let Some(v) = info.map(map).and_then(|m| m.value_type) {
            let r = btf.resolve(v);
            if matches!(btf.get(r), Some(Type::Struct { .. } | Type::Union { .. })) {
                return found(v, TypeSource::MapValue);
            }
        }
        let mut candidates: Vec<(TypeId, String)> = Vec::new();
        for g in &info.globals {
            let Some(t) = g.type_id else { continue };
            if let Some(Type::Ptr { target }) = btf.get(btf.resolve(t)) {
                let s = btf.resolve(*target);
                if matches!(btf.get(s), Some(Type::Struct { .. }))
                    && !candidates.iter().any(|(c, _)| *c == s)
                {
                    candidates.push((s, g.name.clone()));
                }
            }
        }
        if candidates.len() == 1 {
            let (id, g) = candidates.remove(0);
            return found(id, TypeSource::GlobalPointer(g));
        }
    }
    guess(info, &mut dwarf, object, map)
}

/// Steps 4 and 5 of [`event_type`].
fn guess(
    info: &mut ObjectInfo,
    dwarf: &mut Option<Option<DebugInfo>>,
    object: &[u8],
    map: &str,
) -> Result<Option<EventType>, String> {
    // Structs in BTF that could be records: named, with members. Kernel structs are in BTF too
    // (CO-RE), so only names matter here, never "the only one".
    let native_struct =
        |name: &str| {
            info.btf.as_ref().and_then(|b| {
                let id = in_native_btf(b, name)?;
                match b.get(b.resolve(id)) {
                    Some(
                        Type::Struct { members, size, .. } | Type::Union { members, size, .. },
                    ) if !members.is_empty() && u64::from(*size) <= MAX_EVENT_SIZE => Some(id),
                    _ => None,
                }
            })
        };
    // A broken DWARF section must not stop `run` when nobody asked for a DWARF type.
    let dwarf_only: Vec<String> = match debug_info(dwarf, info, object) {
        Ok(Some(d)) => d
            .candidates()
            .into_iter()
            .filter(|c| c.size > 0 && c.size <= MAX_EVENT_SIZE && !c.from_kernel_header())
            .filter(|c| {
                info.btf
                    .as_ref()
                    .is_none_or(|b| in_native_btf(b, &c.name).is_none())
            })
            .map(|c| c.name)
            .collect(),
        _ => Vec::new(),
    };
    let event_maps = info
        .maps
        .iter()
        .filter(|m| matches!(m.map_type_name.as_str(), "ringbuf" | "perf_event_array"))
        .count();
    let mut pick: Option<(String, TypeSource)> = None;
    let like_map = |n: &str| n == map || map.strip_suffix('s') == Some(n);
    let mut named: Vec<String> = dwarf_only.clone();
    named.extend(
        CONVENTIONAL
            .iter()
            .chain(std::iter::once(&map))
            .chain(map.strip_suffix('s').iter())
            .filter(|n| native_struct(n).is_some())
            .map(|n| n.to_string()),
    );
    if let Some(n) = named.iter().find(|n| like_map(n)) {
        pick = Some((n.clone(), TypeSource::NamedLikeMap));
    } else if event_maps <= 1 {
        if dwarf_only.len() == 1 {
            pick = Some((dwarf_only[0].clone(), TypeSource::OnlyInDwarf));
        } else if let Some(n) = CONVENTIONAL.iter().find(|c| named.iter().any(|n| n == *c)) {
            pick = Some((n.to_string(), TypeSource::Conventional));
        }
    }
    let Some((name, source)) = pick else {
        return Ok(None);
    };
    Ok(
        lookup(info, dwarf, object, &name)?.map(|(id, from_dwarf)| EventType {
            id,
            source,
            from_dwarf,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_fixture_event_like_the_generic_decoder() {
        let bytes = std::fs::read(apiary_fixtures::object("inspect")).expect("fixture");
        let info = crate::elf::inspect(&bytes).expect("inspect");
        let btf = info.btf.as_ref().expect("btf");
        let id = btf.find_struct("event").expect("struct event");
        let f = Format::new(btf, id).expect("format");
        let size = f.size();
        // A record with recognisable values in every byte.
        let data: Vec<u8> = (0..size as u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(3))
            .collect();
        let mut s = String::new();
        f.write_json(&data, &mut s);
        let fast: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        let slow = crate::btf::decode(btf, id, &data).expect("decode");
        assert_eq!(fast, slow, "fast path agrees with btf::decode");
        assert!(f.columns().contains(&"comm".to_string()));
        let mut r = String::new();
        f.write_row(&data, &mut r);
        assert!(!r.is_empty());
        // A tag becomes the first member, the rest unchanged.
        let mut tagged = String::new();
        f.write_json_tagged(&data, "\"_map\":\"events\"", &mut tagged);
        let mut tv: serde_json::Value = serde_json::from_str(&tagged).expect("valid JSON");
        assert!(tagged.starts_with("{\"_map\":\"events\","), "{tagged}");
        tv.as_object_mut().expect("object").remove("_map");
        assert_eq!(tv, fast);
        // Short records are reported, not read past.
        let mut t = String::new();
        f.write_json(&data[..3], &mut t);
        assert!(t.starts_with("{\"_truncated\""));
    }

    fn fixture(name: &str) -> (Vec<u8>, ObjectInfo) {
        let bytes = std::fs::read(apiary_fixtures::object(name)).expect("fixture");
        let info = crate::elf::inspect(&bytes).expect("inspect");
        (bytes, info)
    }

    fn json_of(f: &Format, rec: &[u8]) -> serde_json::Value {
        let mut s = String::new();
        f.write_json(rec, &mut s);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad JSON {s}: {e}"))
    }

    #[test]
    fn a_struct_only_in_dwarf_is_chosen_and_decodes() {
        let (bytes, mut info) = fixture("dwarf_event");
        let t = event_type(&mut info, &bytes, "pb", None)
            .expect("ok")
            .expect("found");
        assert_eq!(t.source, TypeSource::OnlyInDwarf);
        assert!(t.from_dwarf);
        assert!(t.describe().contains("DWARF"), "{}", t.describe());
        let btf = info.btf.as_ref().expect("btf");
        assert_eq!(btf.type_name(t.id), "struct event");
        let f = Format::new(btf, t.id).expect("format");
        let mut rec = vec![0u8; f.size()];
        rec[0..4].copy_from_slice(&77u32.to_le_bytes());
        rec[20..24].copy_from_slice(b"taco");
        let v = json_of(&f, &rec);
        assert_eq!(
            (v["pid"].as_u64(), v["comm"].as_str()),
            (Some(77), Some("taco"))
        );
        // A second map lookup reuses the appended types instead of importing again.
        let n = btf.len();
        let again = event_type(&mut info, &bytes, "pb", Some("event"))
            .expect("ok")
            .expect("found");
        assert_eq!((again.id, again.source), (t.id, TypeSource::Explicit));
        assert_eq!(info.btf.as_ref().map(|b| b.len()), Some(n));
    }

    #[test]
    fn maps_get_the_struct_named_like_them() {
        let (bytes, mut info) = fixture("varlen");
        for (map, ty) in [("events", "struct event"), ("blobs", "struct blob")] {
            let t = event_type(&mut info, &bytes, map, None)
                .expect("ok")
                .expect("found");
            assert_eq!(t.source, TypeSource::NamedLikeMap, "{map}");
            assert!(t.from_dwarf);
            assert_eq!(
                info.btf.as_ref().map(|b| b.type_name(t.id)).as_deref(),
                Some(ty)
            );
        }
    }

    #[test]
    fn btf_conventions_still_come_first() {
        let (bytes, mut info) = fixture("events");
        let t = event_type(&mut info, &bytes, "events", None)
            .expect("ok")
            .expect("found");
        assert_eq!((t.source, t.from_dwarf), (TypeSource::MapValue, false));
        let (bytes, mut info) = fixture("events_perf");
        let t = event_type(&mut info, &bytes, "perf_events", None)
            .expect("ok")
            .expect("found");
        assert_eq!(
            (t.source, t.from_dwarf),
            (TypeSource::GlobalPointer("unused_event".into()), false)
        );
    }

    #[test]
    fn event_type_per_map_and_its_errors() {
        let (bytes, mut info) = fixture("varlen");
        let t = event_type(&mut info, &bytes, "blobs", Some("blobs=blob"))
            .expect("ok")
            .expect("found");
        assert_eq!((t.source, t.from_dwarf), (TypeSource::Explicit, true));
        // A map the flag does not list gets the automatic choice.
        let t = event_type(&mut info, &bytes, "events", Some("blobs=blob"))
            .expect("ok")
            .expect("found");
        assert_eq!(t.source, TypeSource::NamedLikeMap);
        let e = event_type(&mut info, &bytes, "events", Some("evnts=event")).unwrap_err();
        assert!(
            e.contains("no map evnts") && e.contains("events, blobs"),
            "{e}"
        );
        let e = event_type(&mut info, &bytes, "events", Some("nosuch")).unwrap_err();
        assert!(
            e.contains("BTF or DWARF") && e.contains("structs it defines: event, blob"),
            "{e}"
        );
    }

    /// The fixture with its `.debug_*` sections renamed, as if built without -g. (Section
    /// names share string-table bytes: `.debug_info` may be the tail of `.rel.debug_info`.)
    fn without_dwarf(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let pat = b".debug_";
        let mut i = 0;
        while let Some(p) = out[i..].windows(pat.len()).position(|w| w == pat) {
            out[i + p + 1] = b'x';
            i += p + pat.len();
        }
        out
    }

    #[test]
    fn without_debug_info_the_error_says_so() {
        let (bytes, _) = fixture("dwarf_event");
        let bytes = without_dwarf(&bytes);
        let mut info = crate::elf::inspect(&bytes).expect("inspect");
        assert!(!info.has_dwarf);
        assert!(DebugInfo::read(&bytes).expect("read").is_none());
        let e = event_type(&mut info, &bytes, "pb", Some("event")).unwrap_err();
        assert!(e.contains("no DWARF debug info") && e.contains("-g"), "{e}");
        assert_eq!(event_type(&mut info, &bytes, "pb", None), Ok(None));
    }

    fn varlen_formats() -> (Format, Format) {
        let (bytes, mut info) = fixture("varlen");
        let ev = event_type(&mut info, &bytes, "events", None)
            .expect("ok")
            .expect("event");
        let bl = event_type(&mut info, &bytes, "blobs", None)
            .expect("ok")
            .expect("blob");
        let btf = info.btf.as_ref().expect("btf");
        (
            Format::new(btf, ev.id).expect("event format"),
            Format::new(btf, bl.id).expect("blob format"),
        )
    }

    /// An execsnoop-style record: the header and only the used part of `args`.
    fn exec_record(pid: u32, count: i32, args: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(pid.to_le_bytes());
        r.extend(count.to_le_bytes());
        r.extend((args.len() as u32).to_le_bytes());
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        r.extend(comm);
        r.extend(args);
        r
    }

    #[test]
    fn a_record_shorter_than_its_struct_shows_the_used_strings() {
        let (f, _) = varlen_formats();
        assert_eq!((f.size(), f.min_size()), (156, 28));
        let rec = exec_record(9, 3, b"first\0second arg\0third\0");
        let v = json_of(&f, &rec);
        assert_eq!(v["pid"], 9);
        assert_eq!(v["comm"], "bash");
        assert_eq!(
            v["args"],
            serde_json::json!(["first", "second arg", "third"])
        );
        // The count field bounds the list; the size field bounds the bytes.
        let v = json_of(&f, &exec_record(9, 2, b"first\0second arg\0third\0"));
        assert_eq!(v["args"], serde_json::json!(["first", "second arg"]));
        let mut rec = exec_record(9, 3, b"first\0second arg\0third\0");
        rec[8..12].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(json_of(&f, &rec)["args"], serde_json::json!(["first"]));
        // No strings at all, and a record cut inside the header.
        assert_eq!(
            json_of(&f, &exec_record(9, 0, b""))["args"],
            serde_json::json!([])
        );
        let v = json_of(&f, &rec[..20]);
        assert!(v.get("_truncated").is_some(), "{v}");
        let mut row = String::new();
        f.write_row(&exec_record(9, 3, b"ls\0-l\0/tmp\0"), &mut row);
        assert!(row.ends_with("ls -l /tmp"), "{row:?}");
    }

    #[test]
    fn a_record_longer_than_its_struct_shows_the_tail_its_length_field_says() {
        let (_, f) = varlen_formats();
        assert_eq!((f.size(), f.min_size()), (8, 8));
        let mut rec = Vec::new();
        rec.extend(7u32.to_le_bytes());
        rec.extend(5u16.to_le_bytes());
        rec.extend(2u16.to_le_bytes());
        rec.extend([1, 18, 35, 52, 69]);
        // perf's padding: zeros up to a multiple of 8 with the 4-byte size.
        rec.extend([0, 0, 0, 0, 0, 0, 0]);
        let v = json_of(&f, &rec);
        assert_eq!(
            v,
            serde_json::json!({"pid": 7, "len": 5, "kind": 2, "data": "0112233445"})
        );
        // A length beyond the record stops at the record's end.
        rec[4..6].copy_from_slice(&100u16.to_le_bytes());
        assert_eq!(json_of(&f, &rec)["data"], "011223344500000000000000");
    }

    /// A synthetic BTF: struct s { char comm[16]; __u32 buf_len; char buf[32]; char path[32]; }
    fn text_struct() -> (Btf, TypeId) {
        let mut btf = Btf::empty();
        let int = |name: &str, size: u32, signed: bool| Type::Int {
            name: name.into(),
            size,
            signed,
            is_bool: false,
            is_char: false,
            bits: size * 8,
            offset: 0,
        };
        let m = |name: &str, ty: TypeId, bit_offset: u32| crate::btf::Member {
            name: name.into(),
            ty,
            bit_offset,
            bitfield_size: 0,
        };
        let first = btf
            .append(vec![
                int("char", 1, true),
                int("unsigned int", 4, false),
                int("__ARRAY_SIZE_TYPE__", 4, false),
                Type::Array {
                    elem: 1,
                    index: 3,
                    len: 16,
                },
                Type::Array {
                    elem: 1,
                    index: 3,
                    len: 32,
                },
                Type::Struct {
                    name: "s".into(),
                    size: 84,
                    members: vec![
                        m("comm", 4, 0),
                        m("buf_len", 2, 128),
                        m("buf", 5, 160),
                        m("path", 5, 416),
                    ],
                },
            ])
            .expect("append");
        (btf, first + 5)
    }

    fn text_record(comm: &[u8], buf: &[u8], buf_len: u32, path: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 84];
        r[..comm.len()].copy_from_slice(comm);
        r[16..20].copy_from_slice(&buf_len.to_le_bytes());
        r[20..20 + buf.len()].copy_from_slice(buf);
        r[52..52 + path.len()].copy_from_slice(path);
        r
    }

    #[test]
    fn several_strings_only_where_the_record_says_how_much_is_used() {
        let (btf, id) = text_struct();
        let f = Format::new(&btf, id).expect("format");
        // comm has no length field: stale text after its NUL stays hidden. path is last but
        // sized and has no length field: one string too.
        let rec = text_record(
            b"cat\0old-name",
            b"one\0two\0six\0",
            12,
            b"/etc\0/var/stale",
        );
        let v = json_of(&f, &rec);
        assert_eq!(v["comm"], "cat");
        assert_eq!(v["path"], "/etc");
        // buf_len describes buf: its used part holds three printable strings.
        assert_eq!(v["buf"], serde_json::json!(["one", "two", "six"]));
        // Binary bytes after the NUL are not strings; a single string stays a string.
        let v = json_of(&f, &text_record(b"cat", b"one\0\x01\x02", 6, b""));
        assert_eq!(v["buf"], "one");
        let v = json_of(&f, &text_record(b"cat", b"only one\0junk", 9, b""));
        assert_eq!(v["buf"], "only one");
        // A field is bounded by its capacity even when the length says more.
        let v = json_of(&f, &text_record(b"cat", b"a\0b", 1000, b"zz"));
        assert_eq!(v["buf"], serde_json::json!(["a", "b"]));
        assert_eq!(v["path"], "zz");
    }

    #[test]
    fn table_columns_line_up_with_the_header() {
        let (bytes, mut info) = fixture("dwarf_event");
        let t = event_type(&mut info, &bytes, "pb", None)
            .expect("ok")
            .expect("found");
        let f = Format::new(info.btf.as_ref().expect("btf"), t.id).expect("format");
        let header = f.header();
        assert!(!header.ends_with(' '));
        let mut rows = Vec::new();
        for (pid, comm, ts) in [
            (1u32, &b"a"[..], 5u64),
            (4_000_000_000, b"uprobe_target", u64::MAX),
        ] {
            let mut rec = vec![0u8; f.size()];
            rec[0..4].copy_from_slice(&pid.to_le_bytes());
            rec[8..16].copy_from_slice(&ts.to_le_bytes());
            rec[20..20 + comm.len()].copy_from_slice(comm);
            let mut r = String::new();
            f.write_row(&rec, &mut r);
            assert!(!r.ends_with(' '), "{r:?}");
            rows.push(r);
        }
        // Every cell starts (text) or ends (numbers) where its header does.
        let mut at = 0;
        for (i, c) in f.layout.iter().enumerate() {
            let name = c.name.to_uppercase();
            let end = (at + c.width).min(header.len());
            let head = &header[at..end];
            if c.right {
                assert!(head.ends_with(&name), "{name} in {header:?}");
            } else {
                assert!(head.starts_with(&name), "{name} in {header:?}");
            }
            for r in &rows {
                let cell = r.get(at..(at + c.width).min(r.len())).unwrap_or("");
                if i + 1 < f.layout.len() {
                    assert_eq!(&r[end..end + 2], "  ", "column {name} of {r:?}");
                }
                assert!(!cell.is_empty(), "{name}: {r:?}");
                if c.right {
                    assert!(!cell.ends_with(' '), "{name} right-aligned: {r:?}");
                } else {
                    assert!(!cell.starts_with(' '), "{name} left-aligned: {r:?}");
                }
            }
            at += c.width + 2;
        }
        assert!(rows[1].contains("18446744073709551615"));
        assert!(rows[0].contains(&format!("{:>20}", 5)));
    }
}
