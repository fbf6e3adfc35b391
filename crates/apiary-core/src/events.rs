//! Decoding event records (ring buffer and perf buffer samples) by their BTF type, fast. A
//! `Format` is compiled once from the type: a tree of fields with fixed offsets. Writing an event
//! is then a walk over that tree appending text to a buffer: no allocation per field and no
//! intermediate JSON values, because `apiary run` has to keep up with millions of events a second.

use crate::btf::{Btf, Type, TypeId};
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
}

/// A compiled event layout.
#[derive(Debug, Clone)]
pub struct Format {
    root: Node,
    size: usize,
    type_name: String,
    columns: Vec<String>,
}

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
            | Node::Hex { off, .. } => *off += by,
            Node::Bits { bit_off, .. } => *bit_off += by * 8,
        }
    }
    go(&mut n, by);
    n
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
            names: values.iter().map(|(n, v)| (*v, n.clone())).collect(),
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
                    len: *len as usize,
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
                    m.name.clone()
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
            Node::Struct { off: 0, fields }
        }
        _ => Node::Hex { off: 0, len: size },
    })
}

fn columns(node: &Node, prefix: &str, out: &mut Vec<String>) {
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
        _ => out.push(if prefix.is_empty() {
            "value".into()
        } else {
            prefix.to_string()
        }),
    }
}

impl Format {
    /// Compile the layout of type `id`.
    pub fn new(btf: &Btf, id: TypeId) -> Option<Format> {
        let root = compile(btf, id, 0)?;
        let mut cols = Vec::new();
        columns(&root, "", &mut cols);
        Some(Format {
            root,
            size: btf.size_of(id).unwrap_or(0) as usize,
            type_name: btf.type_name(id),
            columns: cols,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Column names for the table form: leaf fields with dotted paths.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Append one event as a JSON object (no newline). A record shorter than the type is
    /// written as `{"_truncated":"<hex>"}` rather than read past its end.
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
        if data.len() < self.size {
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

    /// Append one event as table cells separated by two spaces (no newline).
    pub fn write_row(&self, data: &[u8], out: &mut String) {
        if data.len() < self.size {
            out.push_str("(truncated) ");
            hex(data, out);
            return;
        }
        let mut first = true;
        row(&self.root, data, 0, out, &mut first);
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
                if i > 0 {
                    out.push(',');
                }
                json(elem, d, base + off + i * stride, out);
            }
            out.push(']');
        }
        leaf => {
            scalar(leaf, d, base, out, true);
        }
    }
}

fn row(node: &Node, d: &[u8], base: usize, out: &mut String, first: &mut bool) {
    match node {
        Node::Struct { off, fields } => {
            for (_, n) in fields {
                row(n, d, base + off, out, first);
            }
        }
        Node::Array { .. } => {
            if !*first {
                out.push_str("  ");
            }
            *first = false;
            json(node, d, base, out);
        }
        leaf => {
            if !*first {
                out.push_str("  ");
            }
            *first = false;
            scalar(leaf, d, base, out, false);
        }
    }
}

/// How the event type of a ring buffer or perf buffer was found, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSource {
    Explicit,
    MapValue,
    GlobalPointer(String),
}

/// Find the event type for map `map`: `--event-type NAME` first; then the type in the map's BTF
/// definition (`__type(value, struct event)`); then the eunomia convention, a global pointer to
/// the event struct (`struct event *unused_event;`) when exactly one struct is referenced so.
pub fn event_type(
    info: &ObjectInfo,
    map: &str,
    explicit: Option<&str>,
) -> Result<Option<(TypeId, TypeSource)>, String> {
    let Some(btf) = info.btf.as_ref() else {
        return match explicit {
            Some(n) => Err(format!(
                "--event-type {n}: the object has no BTF (compile with -g)"
            )),
            None => Ok(None),
        };
    };
    if let Some(name) = explicit {
        let id = btf
            .find_struct(name)
            .or_else(|| btf.find_by_name(name))
            .ok_or_else(|| format!("--event-type {name}: no such type in the object's BTF (a struct used only for a local variable is not in BTF; declare a global such as `struct {name} *unused_{name};`)"))?;
        return Ok(Some((id, TypeSource::Explicit)));
    }
    if let Some(v) = info.map(map).and_then(|m| m.value_type) {
        let r = btf.resolve(v);
        if matches!(btf.get(r), Some(Type::Struct { .. } | Type::Union { .. })) {
            return Ok(Some((v, TypeSource::MapValue)));
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
        return Ok(Some((id, TypeSource::GlobalPointer(g))));
    }
    Ok(None)
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
}
