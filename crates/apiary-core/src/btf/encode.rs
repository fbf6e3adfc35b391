//! Encoding user text (`--set NAME=VALUE`) to raw bytes by a BTF type.

use super::*;

/// Encode a textual value for a global of type `id` (used by `--set NAME=VALUE`): integers in
/// decimal, `0x` hex or negative, range-checked against the size and signedness; bool accepts
/// true/false/1/0; enums accept a variant name or a number; char arrays accept a string that
/// fits with its NUL (the rest is zero-filled); arrays of scalars accept a comma-separated list
/// (missing trailing elements are zero, as in a C initializer); floats/doubles accept a decimal.
/// Anything else is an error naming the type.
pub fn encode(btf: &Btf, id: TypeId, text: &str) -> Result<Vec<u8>, BtfError> {
    encode_depth(btf, id, text, 0)
}

/// A parsed integer literal: sign and magnitude, so the full u128 and i128 ranges both fit.
struct IntLiteral {
    negative: bool,
    magnitude: u128,
}

fn parse_int_literal(text: &str) -> Option<Result<IntLiteral, ()>> {
    let t = text.trim();
    let (negative, rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (radix, digits) = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(d) => (16, d),
        None => (10, rest),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Digits that overflow u128 are still a number, just one that fits nothing.
    Some(
        u128::from_str_radix(digits, radix)
            .map(|magnitude| IntLiteral {
                negative,
                magnitude,
            })
            .map_err(|_| ()),
    )
}

/// Two's-complement bit pattern of `text` if it fits `bits` bits with the given signedness.
fn int_in_range(text: &str, bits: u32, signed: bool, ty: &str) -> Result<u128, BtfError> {
    let value = text.trim().to_string();
    let range = if signed {
        if bits >= 128 {
            format!("{}..={}", i128::MIN, i128::MAX)
        } else {
            let half = 1i128 << (bits.max(1) - 1);
            format!("{}..={}", -half, half - 1)
        }
    } else {
        format!("0..={}", mask(bits))
    };
    let out_of_range = || BtfError::ValueOutOfRange {
        value: value.clone(),
        ty: ty.to_string(),
        range: range.clone(),
    };
    let lit = match parse_int_literal(text) {
        Some(Ok(lit)) => lit,
        Some(Err(())) => return Err(out_of_range()),
        None => {
            return Err(BtfError::InvalidValue {
                value: value.clone(),
                ty: ty.to_string(),
                reason: "expected an integer (decimal, 0x hex, or negative)".to_string(),
            })
        }
    };
    let bits = bits.clamp(1, 128);
    if lit.negative && lit.magnitude != 0 {
        if !signed {
            return Err(out_of_range());
        }
        let limit = 1u128 << (bits - 1);
        if lit.magnitude > limit {
            return Err(out_of_range());
        }
        Ok(lit.magnitude.wrapping_neg() & mask(bits))
    } else {
        let limit = if signed { mask(bits - 1) } else { mask(bits) };
        if lit.magnitude > limit {
            return Err(out_of_range());
        }
        Ok(lit.magnitude)
    }
}

fn encode_depth(btf: &Btf, id: TypeId, text: &str, depth: usize) -> Result<Vec<u8>, BtfError> {
    let ty = btf.type_name(id);
    let unsupported = |reason: &str| BtfError::Unsupported {
        ty: ty.clone(),
        reason: reason.to_string(),
    };
    let invalid = |reason: String| BtfError::InvalidValue {
        value: text.trim().to_string(),
        ty: ty.clone(),
        reason,
    };
    if depth > MAX_DEPTH {
        return Err(BtfError::TooComplex { ty });
    }
    let rid = btf.resolve(id);
    match btf.get(rid).ok_or(BtfError::NoSuchType { id: rid })? {
        Type::Int {
            size,
            signed,
            is_bool,
            bits,
            ..
        } => {
            let size = *size as usize;
            if size == 0 || size > 16 {
                return Err(unsupported("integer size is not between 1 and 16 bytes"));
            }
            let width = (size * 8) as u32;
            let raw = if *is_bool {
                match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => 1,
                    "false" | "0" => 0,
                    _ => return Err(invalid("expected true, false, 1 or 0".to_string())),
                }
            } else {
                let nbits = if *bits > 0 && *bits < width {
                    *bits
                } else {
                    width
                };
                int_in_range(text, nbits, *signed, &ty)?
            };
            Ok(raw.to_le_bytes()[..size].to_vec())
        }
        Type::Enum {
            size,
            signed,
            values,
            ..
        } => {
            let size = *size as usize;
            if size == 0 || size > 8 {
                return Err(unsupported("enum size is not between 1 and 8 bytes"));
            }
            let t = text.trim();
            let raw = match values.iter().find(|(name, _)| name == t) {
                Some((_, v)) => u128::from(*v as u64),
                None => match int_in_range(t, (size * 8) as u32, *signed, &ty) {
                    Err(BtfError::InvalidValue { .. }) => {
                        let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(invalid(format!(
                            "expected one of {} or a number",
                            names.join(", ")
                        )));
                    }
                    other => other?,
                },
            };
            Ok(raw.to_le_bytes()[..size].to_vec())
        }
        Type::Float { size, .. } => {
            let v: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| invalid("expected a finite decimal number".to_string()))?;
            match size {
                4 => {
                    if v.abs() > f64::from(f32::MAX) {
                        return Err(BtfError::ValueOutOfRange {
                            value: text.trim().to_string(),
                            ty: ty.clone(),
                            range: format!("-{0:e}..={0:e}", f32::MAX),
                        });
                    }
                    Ok((v as f32).to_le_bytes().to_vec())
                }
                8 => Ok(v.to_le_bytes().to_vec()),
                _ => Err(unsupported("only 4- and 8-byte floats can be set")),
            }
        }
        Type::Array { elem, len, .. } => {
            let len = *len as usize;
            let elem_size = btf
                .size_of(*elem)
                .ok_or_else(|| unsupported("array element has no known size"))?
                as usize;
            let total = elem_size
                .checked_mul(len)
                .filter(|n| *n <= MAX_ENCODE_BYTES)
                .ok_or_else(|| unsupported("array is too large to set from text"))?;
            if btf.is_char(*elem) {
                let b = text.as_bytes();
                if b.len() >= len {
                    return Err(invalid(format!(
                        "string is {} bytes but {ty} holds at most {} plus the terminating NUL",
                        b.len(),
                        len.saturating_sub(1)
                    )));
                }
                let mut out = vec![0u8; len];
                out[..b.len()].copy_from_slice(b);
                return Ok(out);
            }
            let scalar = matches!(
                btf.get(btf.resolve(*elem)),
                Some(Type::Int { .. } | Type::Enum { .. } | Type::Float { .. })
            );
            if !scalar {
                return Err(unsupported(
                    "only arrays of integers, enums, floats or chars can be set from text",
                ));
            }
            // An empty or short list zero-fills the rest, so check the element type can be
            // encoded at all (BTF may claim a 12 KB int) rather than only the elements given.
            encode_depth(btf, *elem, "0", depth + 1)?;
            let items: Vec<&str> = if text.trim().is_empty() {
                Vec::new()
            } else {
                text.split(',').collect()
            };
            if items.len() > len {
                return Err(invalid(format!(
                    "{} elements given but {ty} holds {len}",
                    items.len()
                )));
            }
            let mut out = Vec::with_capacity(total);
            for item in items {
                out.extend(encode_depth(btf, *elem, item, depth + 1)?);
            }
            out.resize(total, 0);
            Ok(out)
        }
        Type::Var { ty: inner, .. } => encode_depth(btf, *inner, text, depth + 1),
        _ => Err(unsupported(
            "only integers, bools, enums, floats, char arrays and arrays of those can be set from text",
        )),
    }
}
