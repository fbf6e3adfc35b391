//! Map dumps: raw entries from the kernel, decoded with the map's own BTF key/value types when
//! the map has them, else shown as little-endian integers (for 1/2/4/8-byte fields) and hex.

use crate::error::Result;
use crate::views::{MapDump, MapDumpEntry};
use apiary_core::btf::{self, Btf};
use apiary_kernel::{maps, sys};
use serde_json::Value;
use std::os::fd::BorrowedFd;

pub(crate) fn dump(fd: BorrowedFd<'_>, limit: usize) -> Result<MapDump> {
    let info = sys::map_info(fd)?;
    let entries = maps::dump(fd, &info, limit.saturating_add(1))?;
    let truncated = entries.len() > limit;
    let btf = if info.btf_id != 0 && info.btf_value_type_id != 0 {
        sys::btf_raw_by_id(info.btf_id)
            .ok()
            .and_then(|raw| Btf::parse(&raw).ok())
    } else {
        None
    };
    let decode = |ty: u32, bytes: &[u8]| -> Option<Value> {
        let b = btf.as_ref()?;
        if ty == 0 {
            return None;
        }
        btf::decode(b, ty, bytes).ok()
    };
    let mut decoded = btf.is_some();
    let mut out = Vec::new();
    for e in entries.into_iter().take(limit) {
        let key = decode(info.btf_key_type_id, &e.key).unwrap_or_else(|| {
            decoded = false;
            plain(&e.key)
        });
        let vals: Vec<Value> = e
            .values
            .iter()
            .map(|v| decode(info.btf_value_type_id, v).unwrap_or_else(|| plain(v)))
            .collect();
        let value = if vals.len() == 1 {
            vals.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(vals)
        };
        out.push(MapDumpEntry {
            key,
            value,
            key_hex: hex::encode(&e.key),
            value_hex: e
                .values
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    Ok(MapDump {
        map: info,
        entries: out,
        decoded,
        truncated,
    })
}

/// Without BTF: an integer when the size is one of the integer sizes, hex otherwise.
fn plain(b: &[u8]) -> Value {
    match b.len() {
        1 => Value::from(b[0]),
        2 => Value::from(u16::from_le_bytes([b[0], b[1]])),
        4 => Value::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        8 => Value::from(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ])),
        _ => Value::from(hex::encode(b)),
    }
}
