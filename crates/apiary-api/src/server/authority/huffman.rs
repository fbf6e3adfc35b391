//! The length of a Huffman-coded HPACK string once decoded (RFC 7541 §5.2, Appendix B), which
//! is what the peer's dynamic table charges for it. Nothing here needs the decoded bytes.
//!
//! HPACK's code is canonical: codes of one length are consecutive numbers, and each length's
//! first code follows from how many codes the shorter lengths have. So the number of codes per
//! length is all the table this needs to find where each symbol ends.

/// How many symbols have a code of each length (index = length in bits, 0..=30), counted from
/// RFC 7541 Appendix B. The 257th symbol, EOS, is the last 30-bit code (all ones).
const CODES_OF_LENGTH: [u32; 31] = [
    0, 0, 0, 0, 0, 10, 26, 32, 6, 0, // 0..=9
    5, 3, 2, 6, 2, 3, 0, 0, 0, 3, // 10..=19
    8, 13, 26, 29, 12, 4, 15, 19, 29, 0, // 20..=29
    4, // 30
];
const MAX_CODE_BITS: usize = 30;
const EOS: u32 = (1 << MAX_CODE_BITS) - 1;

/// The first (numerically smallest) code of each length.
const FIRST_CODE: [u32; 31] = first_codes();

const fn first_codes() -> [u32; 31] {
    let mut first = [0u32; 31];
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_CODE_BITS {
        code = (code + CODES_OF_LENGTH[len - 1]) << 1;
        first[len] = code;
        len += 1;
    }
    first
}

/// The number of octets `encoded` decodes to, or None if it is not a valid encoding: a code
/// for EOS, or padding longer than 7 bits or not made of ones (§5.2 says both are errors).
pub(super) fn decoded_len(encoded: &[u8]) -> Option<usize> {
    let mut symbols = 0usize;
    let mut code = 0u32;
    let mut len = 0usize;
    for byte in encoded {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            // Every bit string of 30 bits completes a code (the code is complete), so `len`
            // never passes 30; the guard keeps a mistake in the table from indexing out of it.
            let count = *CODES_OF_LENGTH.get(len)?;
            let first = FIRST_CODE[len];
            if code >= first && code - first < count {
                if len == MAX_CODE_BITS && code == EOS {
                    return None;
                }
                symbols += 1;
                code = 0;
                len = 0;
            }
        }
    }
    // What is left is padding: the most significant bits of EOS, i.e. ones, fewer than 8.
    if len > 7 || code != (1u32 << len) - 1 {
        return None;
    }
    Some(symbols)
}

/// `:authority` Huffman-coded: a canonical code with one valid padding gives each string
/// exactly one encoding, so a coded name can be recognised without decoding it.
pub(super) const AUTHORITY_NAME: &[u8] = &[0xb8, 0x3b, 0x53, 0x39, 0xec, 0x32, 0x7d, 0x7f];

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn the_table_is_a_complete_code_of_257_symbols() {
        assert_eq!(CODES_OF_LENGTH.iter().sum::<u32>(), 257);
        // Kraft's sum of a complete prefix code is exactly 1.
        let kraft: u64 = (1..=MAX_CODE_BITS)
            .map(|l| u64::from(CODES_OF_LENGTH[l]) << (MAX_CODE_BITS - l))
            .sum();
        assert_eq!(kraft, 1 << MAX_CODE_BITS);
        // The last code is EOS.
        assert_eq!(FIRST_CODE[30] + CODES_OF_LENGTH[30] - 1, EOS);
    }

    #[test]
    fn rfc_7541_examples_decode_to_their_lengths() {
        // Appendix C.4.
        assert_eq!(decoded_len(&hex("f1e3c2e5f23a6ba0ab90f4ff")), Some(15)); // www.example.com
        assert_eq!(decoded_len(&hex("a8eb10649cbf")), Some(8)); // no-cache
        assert_eq!(decoded_len(&hex("25a849e95bb8e8b4bf")), Some(12)); // custom-value
        assert_eq!(decoded_len(&hex("a0e41d139d09")), Some(9)); // localhost
        assert_eq!(decoded_len(AUTHORITY_NAME), Some(10));
        assert_eq!(decoded_len(&[]), Some(0));
    }

    #[test]
    fn invalid_encodings_are_refused() {
        // Eight bits of padding.
        assert_eq!(decoded_len(&[0xff]), None);
        // Padding that is not all ones: '0' is 00000, then 000 padding.
        assert_eq!(decoded_len(&[0x00]), None);
        // EOS itself (30 ones), padded with ones.
        assert_eq!(decoded_len(&[0xff, 0xff, 0xff, 0xff]), None);
        // '0' (00000) then 111 padding is fine.
        assert_eq!(decoded_len(&[0x07]), Some(1));
    }

    #[test]
    fn agrees_with_an_independent_decoder() {
        // The `hpack` crate's Huffman decoder, on our encoder's output for every octet and for
        // strings of many lengths.
        let mut strings: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut x = 0x2545_f491u32;
        for len in 0..200 {
            strings.push(
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        (x >> 24) as u8
                    })
                    .collect(),
            );
        }
        for s in strings {
            let enc = test_encode(&s);
            let mut dec = hpack::huffman::HuffmanDecoder::new();
            assert_eq!(dec.decode(&enc).ok(), Some(s.clone()), "{s:?}");
            assert_eq!(decoded_len(&enc), Some(s.len()), "{s:?}");
        }
    }

    /// A canonical encoder from the same counts (used to test, and to make coded blocks).
    pub(crate) fn test_encode(s: &[u8]) -> Vec<u8> {
        let lengths = symbol_lengths();
        let mut codes = [0u32; 257];
        let mut next = FIRST_CODE;
        for sym in 0..257 {
            let l = lengths[sym];
            codes[sym] = next[l];
            next[l] += 1;
        }
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &b in s {
            let l = lengths[b as usize];
            acc = (acc << l) | u64::from(codes[b as usize]);
            bits += l as u32;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
        }
        out
    }

    /// Each symbol's code length (RFC 7541 Appendix B); only tests need them per symbol.
    #[rustfmt::skip]
    const SYMBOL_LENGTHS: [u8; 257] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32..
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48..
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64..
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80..
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96..
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112..
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..
        30, // 256..
    ];

    fn symbol_lengths() -> [usize; 257] {
        SYMBOL_LENGTHS.map(usize::from)
    }

    #[test]
    fn per_symbol_lengths_match_the_counts() {
        let mut counts = [0u32; 31];
        for l in SYMBOL_LENGTHS {
            counts[usize::from(l)] += 1;
        }
        assert_eq!(counts, CODES_OF_LENGTH);
    }
}
