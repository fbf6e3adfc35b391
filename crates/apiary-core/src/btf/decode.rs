//! Decoding raw bytes to JSON by their BTF type.

use super::*;

/// Decode `bytes` as a value of type `id` into JSON: integers as JSON numbers (u64/i64; 128-bit
/// as string), bool as true/false, char arrays as a string up to the first NUL (lossy UTF-8; the
/// whole array as a `0x…` hex string if control bytes precede the NUL), other arrays as JSON
/// arrays, structs/unions as objects (bitfields extracted; anonymous struct/union members
/// flattened into the parent, other anonymous members named `_anon0`, `_anon1`, …), enums by
/// name (number if no name matches), pointers as `"0x…"` strings, floats as numbers (non-finite
/// ones as strings). Too-short input is an error, never a panic.
///
/// Object keys follow serde_json's map ordering: member order is kept only when serde_json's
/// `preserve_order` feature is enabled somewhere in the build.
pub fn decode(btf: &Btf, id: TypeId, bytes: &[u8]) -> Result<Value, BtfError> {
    let mut d = Decoder {
        btf,
        budget: DECODE_BUDGET,
    };
    d.value(id, bytes, 0)
}

struct Decoder<'a> {
    btf: &'a Btf,
    budget: usize,
}

/// JSON for an integer. Types wider than 64 bits are always strings so consumers see one JSON
/// type per C type rather than a number that turns into a string at some magnitude.
fn int_json(raw: u128, bits: u32, signed: bool, wide: bool) -> Value {
    if signed {
        let v = sign_extend(raw & mask(bits), bits);
        match i64::try_from(v) {
            Ok(x) if !wide => Value::from(x),
            _ => Value::String(v.to_string()),
        }
    } else {
        let v = raw & mask(bits);
        match u64::try_from(v) {
            Ok(x) if !wide => Value::from(x),
            _ => Value::String(v.to_string()),
        }
    }
}

fn enum_json(values: &[(String, i64)], raw: u128, bits: u32, signed: bool) -> Value {
    let m = mask(bits);
    values
        .iter()
        .find(|(_, v)| u128::from(*v as u64) & m == raw & m)
        .map(|(name, _)| Value::String(name.clone()))
        .unwrap_or_else(|| int_json(raw, bits, signed, false))
}

fn float_json(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

impl Decoder<'_> {
    fn unsupported(&self, id: TypeId, reason: &str) -> BtfError {
        BtfError::Unsupported {
            ty: self.btf.type_name(id),
            reason: reason.to_string(),
        }
    }

    fn take<'b>(&self, id: TypeId, bytes: &'b [u8], size: usize) -> Result<&'b [u8], BtfError> {
        bytes.get(..size).ok_or_else(|| BtfError::ValueTooShort {
            ty: self.btf.type_name(id),
            needed: size,
            got: bytes.len(),
        })
    }

    fn value(&mut self, id: TypeId, bytes: &[u8], depth: usize) -> Result<Value, BtfError> {
        if depth > MAX_DEPTH || self.budget == 0 {
            return Err(BtfError::TooComplex {
                ty: self.btf.type_name(id),
            });
        }
        self.budget -= 1;
        let btf = self.btf;
        let rid = btf.resolve(id);
        let t = btf.get(rid).ok_or(BtfError::NoSuchType { id: rid })?;
        match t {
            Type::Int {
                size,
                signed,
                is_bool,
                bits,
                offset,
                ..
            } => {
                let size = *size as usize;
                if size > 16 {
                    return Err(self.unsupported(id, "integers wider than 128 bits"));
                }
                let raw = le_uint(self.take(id, bytes, size)?);
                let width = (size * 8) as u32;
                // INT encodings may narrow the value (legacy bitfield style); honour them.
                let (raw, nbits) = if *bits > 0 && (*offset > 0 || *bits < width) {
                    ((raw >> (*offset).min(127)) & mask(*bits), *bits)
                } else {
                    (raw, width)
                };
                if *is_bool {
                    Ok(Value::Bool(raw != 0))
                } else {
                    Ok(int_json(raw, nbits, *signed, size > 8))
                }
            }
            Type::Ptr { .. } => {
                let raw = le_uint(self.take(id, bytes, 8)?);
                Ok(Value::String(format!("{raw:#x}")))
            }
            Type::Enum {
                size,
                signed,
                values,
                ..
            } => {
                let size = *size as usize;
                if size > 8 {
                    return Err(self.unsupported(id, "enums wider than 64 bits"));
                }
                let raw = le_uint(self.take(id, bytes, size)?);
                Ok(enum_json(values, raw, (size * 8) as u32, *signed))
            }
            Type::Float { size, .. } => {
                let size = *size as usize;
                let raw = self.take(id, bytes, size)?;
                Ok(match raw {
                    [a, b, c, d] => float_json(f64::from(f32::from_le_bytes([*a, *b, *c, *d]))),
                    [a, b, c, d, e, f, g, h] => {
                        float_json(f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]))
                    }
                    // long double and friends have no portable decoding; keep the bits visible.
                    other => Value::String(hex(other)),
                })
            }
            Type::Array { elem, len, .. } => self.array(id, *elem, *len, bytes, depth),
            Type::Struct { size, members, .. } | Type::Union { size, members, .. } => {
                let data = self.take(id, bytes, *size as usize)?;
                let mut obj = Map::new();
                let mut anon = 0usize;
                for m in members {
                    let v = self.member(m, data, depth)?;
                    if m.name.is_empty() {
                        let composite = matches!(
                            btf.get(btf.resolve(m.ty)),
                            Some(Type::Struct { .. } | Type::Union { .. })
                        );
                        match v {
                            // C lets code name an anonymous struct's fields directly; mirror that.
                            Value::Object(inner) if composite => obj.extend(inner),
                            other => {
                                obj.insert(format!("_anon{anon}"), other);
                                anon += 1;
                            }
                        }
                    } else {
                        obj.insert(m.name.clone(), v);
                    }
                }
                Ok(Value::Object(obj))
            }
            Type::Var { ty, .. } => self.value(*ty, bytes, depth + 1),
            Type::DataSec { vars, .. } => {
                let mut obj = Map::new();
                for (i, sv) in vars.iter().enumerate() {
                    let (name, ty) = match btf.get(sv.ty) {
                        Some(Type::Var { name, ty, .. }) => (name.clone(), *ty),
                        _ => (format!("_anon{i}"), sv.ty),
                    };
                    let at = bytes.get(sv.offset as usize..).unwrap_or(&[]);
                    obj.insert(name, self.value(ty, at, depth + 1)?);
                }
                Ok(Value::Object(obj))
            }
            Type::Fwd { .. } => {
                Err(self.unsupported(id, "forward declaration without a definition"))
            }
            Type::Void => Err(self.unsupported(id, "void has no value")),
            Type::Func { .. } | Type::FuncProto { .. } => {
                Err(self.unsupported(id, "functions have no value"))
            }
            Type::DeclTag { .. } => Err(self.unsupported(id, "declaration tags have no value")),
            Type::Typedef { .. }
            | Type::Const { .. }
            | Type::Volatile { .. }
            | Type::Restrict { .. }
            | Type::TypeTag { .. } => Err(self.unsupported(id, "typedef or qualifier cycle")),
        }
    }

    fn array(
        &mut self,
        id: TypeId,
        elem: TypeId,
        len: u32,
        bytes: &[u8],
        depth: usize,
    ) -> Result<Value, BtfError> {
        let btf = self.btf;
        let elem_size = btf
            .size_of(elem)
            .ok_or_else(|| self.unsupported(id, "array element has no known size"))?
            as usize;
        let total = elem_size
            .checked_mul(len as usize)
            .ok_or_else(|| self.unsupported(id, "array size overflows"))?;
        let data = self.take(id, bytes, total)?;
        if btf.is_char(elem) {
            let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            let text = &data[..end];
            let printable = text
                .iter()
                .all(|&b| (b >= 0x20 && b != 0x7f) || matches!(b, b'\t' | b'\n' | b'\r'));
            return Ok(Value::String(if printable {
                String::from_utf8_lossy(text).into_owned()
            } else {
                hex(data)
            }));
        }
        if elem_size == 0 {
            // Zero-sized elements carry no data; listing `len` copies of nothing helps nobody.
            return Ok(Value::Array(Vec::new()));
        }
        data.chunks_exact(elem_size)
            .map(|chunk| self.value(elem, chunk, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    fn member(&mut self, m: &Member, data: &[u8], depth: usize) -> Result<Value, BtfError> {
        let btf = self.btf;
        let mt = btf.resolve(m.ty);
        let legacy_bits = match btf.get(mt) {
            Some(Type::Int {
                size, bits, offset, ..
            }) if *bits > 0 && (*offset > 0 || *bits < size.saturating_mul(8)) => {
                Some((m.bit_offset.saturating_add(*offset), *bits))
            }
            _ => None,
        };
        let (bit_off, nbits) = if m.bitfield_size > 0 {
            (m.bit_offset, m.bitfield_size)
        } else if let Some(b) = legacy_bits {
            b
        } else if m.bit_offset.is_multiple_of(8) {
            let at = data.get((m.bit_offset / 8) as usize..).unwrap_or(&[]);
            return self.value(m.ty, at, depth + 1);
        } else {
            return Err(self.unsupported(m.ty, "member is not byte-aligned and not a bitfield"));
        };
        if nbits > 64 {
            return Err(self.unsupported(m.ty, "bitfields wider than 64 bits"));
        }
        let start = (bit_off / 8) as usize;
        let shift = bit_off % 8;
        let nbytes = (shift + nbits).div_ceil(8) as usize;
        let chunk = data
            .get(start..start.saturating_add(nbytes))
            .ok_or_else(|| BtfError::ValueTooShort {
                ty: btf.type_name(m.ty),
                needed: start.saturating_add(nbytes),
                got: data.len(),
            })?;
        let raw = (le_uint(chunk) >> shift) & mask(nbits);
        match btf.get(mt) {
            Some(Type::Int { is_bool: true, .. }) => Ok(Value::Bool(raw != 0)),
            Some(Type::Int { signed, .. }) => Ok(int_json(raw, nbits, *signed, false)),
            Some(Type::Enum { signed, values, .. }) => Ok(enum_json(values, raw, nbits, *signed)),
            _ => Err(self.unsupported(m.ty, "bitfield of a non-integer type")),
        }
    }
}
