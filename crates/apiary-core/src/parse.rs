//! Parsing of the small textual forms users type: `NAME=HEX`, `KEY=VALUE`, `TYPE:FUNCTION`.

use crate::program::ProgramType;

/// `-g NAME=HEX`: raw bytes for a global, bpfman-compatible (`-g GLOBAL_u8=01`).
pub fn parse_hex_global(s: &str) -> Result<(String, Vec<u8>), String> {
    let (name, hex) = split_kv(s, "NAME=HEX")?;
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(format!(
            "invalid hex value for global {name:?}: {hex:?} must have an even, non-zero number of hex digits"
        ));
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(2) {
        let pair = hex
            .get(i..i + 2)
            .ok_or_else(|| format!("invalid hex value {hex:?}"))?;
        let b = u8::from_str_radix(pair, 16).map_err(|_| {
            format!("invalid hex value for global {name:?}: {pair:?} is not a hex byte")
        })?;
        bytes.push(b);
    }
    Ok((name.to_string(), bytes))
}

/// `KEY=VALUE` (metadata, `--set`).
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = split_kv(s, "KEY=VALUE")?;
    Ok((k.to_string(), v.to_string()))
}

fn split_kv<'a>(s: &'a str, form: &str) -> Result<(&'a str, &'a str), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v)),
        _ => Err(format!("invalid argument {s:?}: expected {form}")),
    }
}

/// `--programs TYPE:FUNCTION`.
pub fn parse_program_selector(s: &str) -> Result<(ProgramType, String), String> {
    let (ty, func) = s.split_once(':').ok_or_else(|| {
        format!(
            "invalid program selector {s:?}: expected TYPE:FUNCTION, e.g. tracepoint:count_getppid"
        )
    })?;
    if func.is_empty() {
        return Err(format!(
            "invalid program selector {s:?}: the function name is empty"
        ));
    }
    Ok((ProgramType::parse_user(ty)?, func.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        assert_eq!(
            parse_hex_global("X=0102ff").unwrap(),
            ("X".into(), vec![1, 2, 255])
        );
        assert_eq!(parse_hex_global("X=0x0a").unwrap().1, vec![10]);
        assert!(parse_hex_global("X=123").unwrap_err().contains("even"));
        assert!(parse_hex_global("X=zz")
            .unwrap_err()
            .contains("not a hex byte"));
        assert!(parse_hex_global("=01").is_err());
        assert!(parse_hex_global("X").is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(
            parse_program_selector("tracepoint:count").unwrap(),
            (ProgramType::Tracepoint, "count".into())
        );
        assert!(parse_program_selector("count").is_err());
        assert!(parse_program_selector("nope:count")
            .unwrap_err()
            .contains("unknown program type"));
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
    }
}
