//! Resolving user-supplied global values (`-g NAME=HEX`, `--set NAME=VALUE`) against an
//! object's data sections, before anything touches the kernel.

use crate::btf;
use crate::elf::ObjectInfo;

/// Bytes to write at `offset` of data section `section`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedGlobal {
    pub name: String,
    pub section: String,
    pub offset: usize,
    pub bytes: Vec<u8>,
}

fn known(info: &ObjectInfo) -> String {
    if info.globals.is_empty() {
        return "none".into();
    }
    info.globals
        .iter()
        .map(|g| g.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn find<'a>(info: &'a ObjectInfo, name: &str) -> Result<&'a crate::elf::GlobalVar, String> {
    info.global(name).ok_or_else(|| {
        format!(
            "global {name:?} not found in the object; it has: {}",
            known(info)
        )
    })
}

/// Raw values must be exactly the variable's size (bpfman's `-g` semantics); typed values are
/// encoded from the variable's BTF type. A later value for the same name wins.
pub fn resolve(
    info: &ObjectInfo,
    raw: &[(String, Vec<u8>)],
    typed: &[(String, String)],
) -> Result<Vec<ResolvedGlobal>, String> {
    let mut out: Vec<ResolvedGlobal> = Vec::new();
    let mut push = |g: ResolvedGlobal| {
        out.retain(|o| o.name != g.name);
        out.push(g);
    };
    for (name, bytes) in raw {
        let g = find(info, name)?;
        if bytes.len() as u64 != g.size {
            return Err(format!(
                "global {name:?} is {} bytes ({}), but {} bytes were given",
                g.size,
                g.type_name.as_deref().unwrap_or("unknown type"),
                bytes.len()
            ));
        }
        push(ResolvedGlobal {
            name: name.clone(),
            section: g.section.clone(),
            offset: g.offset as usize,
            bytes: bytes.clone(),
        });
    }
    for (name, text) in typed {
        let g = find(info, name)?;
        let (Some(b), Some(ty)) = (info.btf.as_ref(), g.type_id) else {
            return Err(format!(
                "global {name:?} has no BTF type information; use -g {name}=HEX with raw bytes"
            ));
        };
        let bytes = btf::encode(b, ty, text).map_err(|e| format!("global {name:?}: {e}"))?;
        if bytes.len() as u64 != g.size {
            return Err(format!(
                "global {name:?}: encoded {} bytes for a {}-byte variable",
                bytes.len(),
                g.size
            ));
        }
        push(ResolvedGlobal {
            name: name.clone(),
            section: g.section.clone(),
            offset: g.offset as usize,
            bytes,
        });
    }
    Ok(out)
}
