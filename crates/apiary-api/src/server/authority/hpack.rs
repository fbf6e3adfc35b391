//! Just enough HPACK (RFC 7541) to find the `:authority` fields of a request's header block and
//! replace their values, leaving every other byte as the client encoded it.
//!
//! The server's decoder must keep the same dynamic table as the client's encoder, or every later
//! block decodes wrongly. A replaced value therefore keeps the representation (an entry the client
//! inserts is still inserted, in the same order) and is never longer than the original when it
//! is inserted: the server's entries are then never larger than the client's, so it holds at
//! least the entries the client holds and evicts later, and since indices count from the newest
//! entry, every index the client sends means the same entry on both sides.
//!
//! The same argument means an index into the dynamic table is simply "the n-th newest insertion",
//! whatever the table sizes: only which insertions were named `:authority` has to be remembered.

use super::huffman;
use std::collections::VecDeque;

/// The value that replaces every `:authority` (a unix socket has no authority; this is what
/// gRPC clients send when told to, and what tonic's own client sends).
pub(super) const REPLACEMENT: &[u8] = b"localhost";

/// RFC 7541 Appendix A: the static table has 61 entries and `:authority` is the first.
const STATIC_ENTRIES: u64 = 61;
const STATIC_AUTHORITY: u64 = 1;
/// Entries cost at least 32 octets (§4.1), so a table of SETTINGS_HEADER_TABLE_SIZE octets holds
/// at most this many; 64 KiB is 16 times h2's 4 KiB, which the client may not exceed.
const MAX_TRACKED: usize = 64 * 1024 / 32;

/// Why a header block could not be rewritten; the connection is then left alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Doubt {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index 0")]
    ZeroIndex,
    #[error("index {index} is not in the dynamic table as far as it was tracked")]
    UnknownIndex { index: u64 },
    #[error("invalid Huffman string")]
    BadHuffman,
}

/// Whether each entry of the dynamic table, newest first, is named `:authority`.
#[derive(Debug, Default)]
pub(super) struct Names {
    newest_first: VecDeque<bool>,
}

impl Names {
    fn insert(&mut self, authority: bool) {
        if self.newest_first.len() == MAX_TRACKED {
            self.newest_first.pop_back();
        }
        self.newest_first.push_front(authority);
    }

    /// Whether the entry at this (1-based, HPACK) index is named `:authority`.
    fn is_authority(&self, index: u64) -> Result<bool, Doubt> {
        match index {
            0 => Err(Doubt::ZeroIndex),
            STATIC_AUTHORITY => Ok(true),
            i if i <= STATIC_ENTRIES => Ok(false),
            i => usize::try_from(i - STATIC_ENTRIES - 1)
                .ok()
                .and_then(|d| self.newest_first.get(d).copied())
                .ok_or(Doubt::UnknownIndex { index: i }),
        }
    }
}

/// Rewrite every `:authority` value in `block`. `Ok(None)`: no field changed, send the block as
/// it is. On an error, `names` is no longer trustworthy (the caller stops rewriting).
pub(super) fn rewrite_block(names: &mut Names, block: &[u8]) -> Result<Option<Vec<u8>>, Doubt> {
    let mut out = Vec::with_capacity(block.len() + REPLACEMENT.len());
    let mut changed = false;
    let mut pos = 0;
    while let Some(&first) = block.get(pos) {
        let start = pos;
        if first & 0x80 != 0 {
            // Indexed field (§6.1).
            let index = integer(block, &mut pos, 7)?;
            if index == STATIC_AUTHORITY {
                // The static entry's value is empty, which h2 refuses. A literal without
                // indexing (0000, name index 1) leaves both tables alone, as the indexed field
                // it replaces did.
                out.push(STATIC_AUTHORITY as u8);
                string_literal(&mut out, REPLACEMENT);
                changed = true;
            } else {
                // A dynamic `:authority` entry already holds a replaced value (it was inserted
                // by a block rewritten here); only check that the index is known.
                names.is_authority(index)?;
                out.extend_from_slice(&block[start..pos]);
            }
        } else if first & 0xe0 == 0x20 {
            // Dynamic table size update (§6.3): passed on as sent. Size 0 empties both tables.
            if integer(block, &mut pos, 5)? == 0 {
                names.newest_first.clear();
            }
            out.extend_from_slice(&block[start..pos]);
        } else {
            // Literal fields (§6.2): with incremental indexing (01, 6-bit name index), without
            // indexing (0000) or never indexed (0001), both with a 4-bit name index.
            let indexing = first & 0xc0 == 0x40;
            let name_index = integer(block, &mut pos, if indexing { 6 } else { 4 })?;
            let authority = if name_index == 0 {
                let name = string(block, &mut pos)?;
                match name.huffman {
                    false => name.bytes == b":authority",
                    true => name.bytes == huffman::AUTHORITY_NAME,
                }
            } else {
                names.is_authority(name_index)?
            };
            let name_end = pos;
            let value = string(block, &mut pos)?;
            if indexing {
                names.insert(authority);
            }
            let keep = match (authority, indexing) {
                (false, _) => None,
                // Never longer than the client's value: see the module docs.
                (true, true) => Some(REPLACEMENT.len().min(value.decoded_len()?)),
                (true, false) => Some(REPLACEMENT.len()),
            };
            match keep {
                // An empty value cannot be shortened; h2 refuses it as before.
                Some(n) if n > 0 => {
                    let before = out.len();
                    out.extend_from_slice(&block[start..name_end]);
                    string_literal(&mut out, &REPLACEMENT[..n]);
                    changed |= out[before..] != block[start..pos];
                }
                _ => out.extend_from_slice(&block[start..pos]),
            }
        }
    }
    Ok(changed.then_some(out))
}

/// An integer with an N-bit prefix (§5.1), advancing `pos` past it.
fn integer(buf: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<u64, Doubt> {
    let max_prefix = (1u64 << prefix_bits) - 1;
    let first = *buf.get(*pos).ok_or(Doubt::Truncated)?;
    *pos += 1;
    let mut value = u64::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(Doubt::Truncated)?;
        *pos += 1;
        // Anything past 2^32 is no length or index a 64 KiB block can hold.
        if shift > 28 {
            return Err(Doubt::IntegerOverflow);
        }
        value += u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// A string literal as sent: its octets, Huffman-coded or not (§5.2).
struct Str<'a> {
    huffman: bool,
    bytes: &'a [u8],
}

impl Str<'_> {
    fn decoded_len(&self) -> Result<usize, Doubt> {
        match self.huffman {
            false => Ok(self.bytes.len()),
            true => huffman::decoded_len(self.bytes).ok_or(Doubt::BadHuffman),
        }
    }
}

fn string<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Str<'a>, Doubt> {
    let huffman = buf.get(*pos).ok_or(Doubt::Truncated)? & 0x80 != 0;
    let len = usize::try_from(integer(buf, pos, 7)?).map_err(|_| Doubt::IntegerOverflow)?;
    let end = pos.checked_add(len).ok_or(Doubt::IntegerOverflow)?;
    let bytes = buf.get(*pos..end).ok_or(Doubt::Truncated)?;
    *pos = end;
    Ok(Str { huffman, bytes })
}

/// A plain (not Huffman-coded) string literal.
fn string_literal(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len() as u64);
    out.extend_from_slice(s);
}

fn encode_integer(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, mut value: u64) {
    let max_prefix = (1u64 << prefix_bits) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    value -= max_prefix;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_in_rfc_7541_c1() {
        let mut pos = 0;
        assert_eq!(integer(&[0b000_01010], &mut pos, 5), Ok(10));
        let mut pos = 0;
        assert_eq!(integer(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(integer(&[0x1f, 0x9a], &mut pos, 5), Err(Doubt::Truncated));
        let mut pos = 0;
        assert_eq!(
            integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos, 5),
            Err(Doubt::IntegerOverflow)
        );
        for v in [0u64, 14, 15, 16, 127, 128, 1337, 70_000] {
            let mut out = Vec::new();
            encode_integer(&mut out, 0x00, 4, v);
            let mut pos = 0;
            assert_eq!(integer(&out, &mut pos, 4), Ok(v));
            assert_eq!(pos, out.len());
        }
    }

    fn literal(first: u8, name: Option<&[u8]>, value: &[u8], huffman_value: bool) -> Vec<u8> {
        let mut b = vec![first];
        if let Some(n) = name {
            b.push(
                n.len() as u8
                    | if n == huffman::AUTHORITY_NAME {
                        0x80
                    } else {
                        0
                    },
            );
            b.extend(n);
        }
        b.push(value.len() as u8 | if huffman_value { 0x80 } else { 0 });
        b.extend(value);
        b
    }

    #[test]
    fn every_way_of_naming_authority_is_found() {
        let path = b"/run/apiary.sock";
        let mut want = vec![0x41, 9];
        want.extend(REPLACEMENT);
        let cases = [
            // Incremental indexing with the static name, a plain name, a Huffman-coded name.
            (literal(0x41, None, path, false), want.clone()),
            (literal(0x40, Some(b":authority"), path, false), {
                let mut w = literal(0x40, Some(b":authority"), b"", false);
                w.pop();
                w.extend([9]);
                w.extend(REPLACEMENT);
                w
            }),
            // Without indexing and never indexed: replaced whatever the length.
            (literal(0x01, None, b"x", false), {
                let mut w = vec![0x01, 9];
                w.extend(REPLACEMENT);
                w
            }),
            (literal(0x11, None, b"x", false), {
                let mut w = vec![0x11, 9];
                w.extend(REPLACEMENT);
                w
            }),
        ];
        for (block, want) in cases {
            let mut names = Names::default();
            assert_eq!(rewrite_block(&mut names, &block), Ok(Some(want)));
        }
        // A Huffman-coded name is recognised without decoding.
        let mut names = Names::default();
        let block = literal(0x40, Some(huffman::AUTHORITY_NAME), path, false);
        let out = rewrite_block(&mut names, &block)
            .expect("rewrite")
            .expect("changed");
        assert!(out.ends_with(b"\x09localhost"));
        assert_eq!(names.newest_first, [true]);
    }

    #[test]
    fn an_inserted_value_never_grows() {
        // "a.b" Huffman-coded: 3 octets decoded, so "loc".
        let coded = huffman::tests::test_encode(b"a.b");
        let mut names = Names::default();
        let out = rewrite_block(&mut names, &literal(0x41, None, &coded, true));
        assert_eq!(out, Ok(Some(b"\x41\x03loc".to_vec())));
        // An empty value cannot shrink: left alone (h2 refuses it as before).
        let out = rewrite_block(&mut names, &literal(0x41, None, b"", false));
        assert_eq!(out, Ok(None));
        // Already `localhost`, plainly: nothing to change.
        let out = rewrite_block(&mut names, &literal(0x41, None, REPLACEMENT, false));
        assert_eq!(out, Ok(None));
        assert_eq!(names.newest_first, [true, true, true]);
    }

    #[test]
    fn dynamic_names_are_followed_and_size_zero_forgets_them() {
        let mut names = Names::default();
        // Insert `:authority` then `x: y`; a literal naming entry 63 (the older) is authority.
        let mut block = literal(0x41, None, b"/sock", false);
        block.extend(literal(0x40, Some(b"x"), b"y", false));
        // Without indexing, name index 63 (4-bit prefix: 15 + 48).
        block.extend([0x0f, 63 - 15, 3, b'a', b'b', b'c']);
        let out = rewrite_block(&mut names, &block)
            .expect("ok")
            .expect("changed");
        assert!(out.ends_with(b"\x0f\x30\x09localhost"), "{out:x?}");
        // Index 62 is `x: y`, not authority: unchanged.
        assert_eq!(
            rewrite_block(&mut names, &[0x0f, 62 - 15, 1, b'z']),
            Ok(None)
        );
        // A size update to 0 empties the table: index 62 is then unknown.
        assert_eq!(rewrite_block(&mut names, &[0x20]), Ok(None));
        assert_eq!(
            rewrite_block(&mut names, &[0xbe]),
            Err(Doubt::UnknownIndex { index: 62 })
        );
    }
}
