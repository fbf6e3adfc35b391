//! Where `apiary run` gets its object: a local file, an http(s) URL, or an apiary package (one
//! JSON file holding the compressed object and its metadata), recognised by content.

use crate::error::{Error, Result};
use crate::package::Package;
use std::io::Read;

/// Objects and packages larger than this are refused (a typical tool is tens of kB).
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

pub struct Fetched {
    /// As the user gave it.
    pub name: String,
    pub object: Vec<u8>,
    pub package: Option<Package>,
}

pub fn fetch(source: &str) -> Result<Fetched> {
    let raw = if source.starts_with("http://") || source.starts_with("https://") {
        download(source)?
    } else {
        let meta = std::fs::metadata(source)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {source}: {e}")))?;
        if meta.len() > MAX_SOURCE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{source} is {} bytes, more than the {MAX_SOURCE_BYTES}-byte limit",
                meta.len()
            )));
        }
        std::fs::read(source)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {source}: {e}")))?
    };
    if raw.starts_with(b"\x7fELF") {
        return Ok(Fetched {
            name: source.to_string(),
            object: raw,
            package: None,
        });
    }
    if raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let pkg =
            Package::parse(&raw).map_err(|e| Error::InvalidArgument(format!("{source}: {e}")))?;
        let object = pkg
            .object()
            .map_err(|e| Error::InvalidArgument(format!("{source}: {e}")))?;
        return Ok(Fetched {
            name: source.to_string(),
            object,
            package: Some(pkg),
        });
    }
    Err(Error::InvalidArgument(format!(
        "{source} is neither a BPF object (ELF) nor an apiary package (JSON)"
    )))
}

fn download(url: &str) -> Result<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| Error::InvalidArgument(format!("cannot fetch {url}: {e}")))?;
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_SOURCE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::InvalidArgument(format!("cannot fetch {url}: {e}")))?;
    if body.len() as u64 > MAX_SOURCE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{url} is larger than the {MAX_SOURCE_BYTES}-byte limit"
        )));
    }
    Ok(body)
}
