//! Writing a BTF blob: the inverse of [`Btf::parse`] for a list of types, as libbpf reads it
//! (`btf__parse`). Used for the minimal kernel BTF of the CO-RE cache.

use super::*;
use std::collections::HashMap;

/// Raw little-endian `.BTF` bytes holding `types` (index 0 must be `void`, which is implicit).
pub fn write(types: &[Type]) -> Vec<u8> {
    let mut strings = Strings::default();
    let mut data = Vec::new();
    for t in types.iter().skip(1) {
        write_type(t, &mut strings, &mut data);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() + strings.bytes.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    for v in [
        HEADER_LEN as u32,
        0,
        data.len() as u32,
        data.len() as u32,
        strings.bytes.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&data);
    out.extend_from_slice(&strings.bytes);
    out
}

/// The string section: offset 0 is the empty string; each other string is stored once.
struct Strings {
    bytes: Vec<u8>,
    at: HashMap<String, u32>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            bytes: vec![0],
            at: HashMap::new(),
        }
    }
}

impl Strings {
    fn add(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(o) = self.at.get(s) {
            return *o;
        }
        let o = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        self.at.insert(s.to_string(), o);
        o
    }
}

fn push(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn info(kind: u32, vlen: usize, kflag: bool) -> u32 {
    (u32::from(kflag) << 31) | (kind << 24) | (vlen as u32 & 0xffff)
}

fn write_type(t: &Type, s: &mut Strings, out: &mut Vec<u8>) {
    match t {
        // Never written: id 0 is implicit. A stray one becomes an anonymous INT of size 0,
        // which nothing refers to by name.
        Type::Void => push(out, &[0, info(KIND_INT, 0, false), 0, 0]),
        Type::Int {
            name,
            size,
            signed,
            is_bool,
            is_char,
            bits,
            offset,
        } => {
            let enc = (u32::from(*signed) * INT_SIGNED)
                | (u32::from(*is_char) * INT_CHAR)
                | (u32::from(*is_bool) * INT_BOOL);
            push(
                out,
                &[
                    s.add(name),
                    info(KIND_INT, 0, false),
                    *size,
                    (enc << 24) | ((offset & 0xff) << 16) | (bits & 0xff),
                ],
            );
        }
        Type::Ptr { target } => push(out, &[0, info(KIND_PTR, 0, false), *target]),
        Type::Array { elem, index, len } => push(
            out,
            &[0, info(KIND_ARRAY, 0, false), 0, *elem, *index, *len],
        ),
        Type::Struct {
            name,
            size,
            members,
        }
        | Type::Union {
            name,
            size,
            members,
        } => {
            let kind = if matches!(t, Type::Struct { .. }) {
                KIND_STRUCT
            } else {
                KIND_UNION
            };
            let kflag = members.iter().any(|m| m.bitfield_size != 0);
            push(out, &[s.add(name), info(kind, members.len(), kflag), *size]);
            for m in members {
                let off = if kflag {
                    (m.bitfield_size << 24) | (m.bit_offset & 0x00ff_ffff)
                } else {
                    m.bit_offset
                };
                push(out, &[s.add(&m.name), m.ty, off]);
            }
        }
        Type::Enum {
            name,
            size,
            signed,
            values,
        } => {
            let wide = *size > 4
                || values
                    .iter()
                    .any(|(_, v)| *v > i64::from(u32::MAX) || *v < i64::from(i32::MIN));
            let kind = if wide { KIND_ENUM64 } else { KIND_ENUM };
            push(
                out,
                &[s.add(name), info(kind, values.len(), *signed), *size],
            );
            for (n, v) in values {
                let n = s.add(n);
                if wide {
                    let v = *v as u64;
                    push(out, &[n, v as u32, (v >> 32) as u32]);
                } else {
                    push(out, &[n, *v as u32]);
                }
            }
        }
        Type::Fwd { name, is_union } => push(out, &[s.add(name), info(KIND_FWD, 0, *is_union), 0]),
        Type::Typedef { name, target } => {
            push(out, &[s.add(name), info(KIND_TYPEDEF, 0, false), *target])
        }
        Type::Volatile { target } => push(out, &[0, info(KIND_VOLATILE, 0, false), *target]),
        Type::Const { target } => push(out, &[0, info(KIND_CONST, 0, false), *target]),
        Type::Restrict { target } => push(out, &[0, info(KIND_RESTRICT, 0, false), *target]),
        Type::Func {
            name,
            proto,
            linkage,
        } => push(
            out,
            &[
                s.add(name),
                info(KIND_FUNC, linkage_raw(*linkage) as usize, false),
                *proto,
            ],
        ),
        Type::FuncProto { ret, params } => {
            push(out, &[0, info(KIND_FUNC_PROTO, params.len(), false), *ret]);
            for (n, ty) in params {
                push(out, &[s.add(n), *ty]);
            }
        }
        Type::Var { name, ty, linkage } => push(
            out,
            &[
                s.add(name),
                info(KIND_VAR, 0, false),
                *ty,
                linkage_raw(*linkage),
            ],
        ),
        Type::DataSec { name, size, vars } => {
            push(
                out,
                &[s.add(name), info(KIND_DATASEC, vars.len(), false), *size],
            );
            for v in vars {
                push(out, &[v.ty, v.offset, v.size]);
            }
        }
        Type::Float { name, size } => push(out, &[s.add(name), info(KIND_FLOAT, 0, false), *size]),
        Type::DeclTag {
            name,
            target,
            component_idx,
        } => push(
            out,
            &[
                s.add(name),
                info(KIND_DECL_TAG, 0, false),
                *target,
                *component_idx as u32,
            ],
        ),
        Type::TypeTag { name, target } => {
            push(out, &[s.add(name), info(KIND_TYPE_TAG, 0, false), *target])
        }
    }
}

fn linkage_raw(l: Linkage) -> u32 {
    match l {
        Linkage::Static => 0,
        Linkage::Global => 1,
        Linkage::Extern => 2,
        Linkage::Other(v) => v,
    }
}
