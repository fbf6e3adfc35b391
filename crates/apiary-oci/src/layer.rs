//! The bytecode layer: a (gzip) tar holding one BPF object.
//!
//! This module owns reading a layer safely and writing one reproducibly. Reading refuses any
//! entry that could place data outside the image or alias another file (`..`, absolute paths,
//! symlinks, hardlinks, devices), caps the unpacked size while streaming (so a gzip bomb stops
//! at the limit rather than after it), and accepts exactly one regular file, which must be a BPF
//! ELF object whose byte order matches the target architecture. Writing produces the same bytes
//! for the same object (zero timestamps, root ownership, fixed mode), so a rebuilt image keeps
//! its digest.

use crate::error::{Error, Result};
use crate::manifest::{Arch, DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_TAR};
use std::io::{self, Read, Write};
use std::path::{Component, Path};

const EM_BPF: u16 = 247;

/// How a layer's bytes are compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    None,
}

impl LayerCompression {
    pub fn from_media_type(media_type: &str) -> Result<LayerCompression> {
        match media_type {
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(LayerCompression::Gzip),
            OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Ok(LayerCompression::None)
            }
            other => Err(Error::Unsupported {
                what: "layer media type".into(),
                value: format!("{other} (a bytecode layer is a tar, optionally gzip-compressed)"),
            }),
        }
    }
}

/// The object found in a layer.
#[derive(Clone)]
pub struct LayerObject {
    /// The entry's path in the layer (e.g. `bpf_x86_bpfel.o`).
    pub path: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for LayerObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerObject")
            .field("path", &self.path)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// Unpacks the single object from a layer, enforcing `max_uncompressed` on the whole tar
/// stream.
pub fn extract_object(
    layer: &[u8],
    compression: LayerCompression,
    max_uncompressed: u64,
) -> Result<LayerObject> {
    match compression {
        LayerCompression::Gzip => {
            let gz = flate2::read::GzDecoder::new(layer);
            read_tar(Capped::new(gz, max_uncompressed), max_uncompressed)
        }
        LayerCompression::None => read_tar(Capped::new(layer, max_uncompressed), max_uncompressed),
    }
}

fn read_tar<R: Read>(reader: Capped<R>, limit: u64) -> Result<LayerObject> {
    let mut archive = tar::Archive::new(reader);
    let mut found: Option<LayerObject> = None;
    let mut others: Vec<String> = Vec::new();
    let entries = archive.entries().map_err(|e| tar_error(e, limit))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_error(e, limit))?;
        let kind = entry.header().entry_type();
        // A global PAX header describes the archive, not a file (git archive writes one).
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path_bytes = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        check_path(&path)?;
        match kind {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                return Err(Error::ForbiddenEntry {
                    path,
                    kind: "symlink".into(),
                })
            }
            tar::EntryType::Link => {
                return Err(Error::ForbiddenEntry {
                    path,
                    kind: "hardlink".into(),
                })
            }
            other => {
                return Err(Error::ForbiddenEntry {
                    path,
                    kind: entry_kind_name(other),
                })
            }
        }
        let size = entry.header().size().map_err(|e| tar_error(e, limit))?;
        if size > limit {
            return Err(Error::TooLarge {
                what: format!("layer entry {path} ({size} bytes)"),
                limit,
            });
        }
        if found.is_some() {
            others.push(path);
            continue;
        }
        // The header's size is only a claim: reserve little, let the cap bound the rest.
        let mut bytes = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| tar_error(e, limit))?;
        found = Some(LayerObject { path, bytes });
    }
    match found {
        Some(obj) if others.is_empty() => Ok(obj),
        Some(obj) => Err(Error::InvalidImage {
            reference: "layer".into(),
            reason: format!(
                "it holds {} files ({}, {}); a bytecode layer holds one object",
                others.len() + 1,
                obj.path,
                others.join(", ")
            ),
        }),
        None => Err(Error::InvalidImage {
            reference: "layer".into(),
            reason: "it holds no file".into(),
        }),
    }
}

/// Refuses absolute paths and any `..`; `./x` and `x/` are fine.
fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    let escapes = p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    }) || path.starts_with('/')
        || path.contains('\0');
    if escapes {
        return Err(Error::PathEscape { path: path.into() });
    }
    Ok(())
}

fn entry_kind_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "fifo".into(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

/// A reader that fails once more than `limit` bytes came through: the tar reader then stops
/// with an error instead of taking a truncated stream for a short archive.
struct Capped<R> {
    inner: R,
    left: u64,
}

const CAP_MARKER: &str = "apiary-oci: uncompressed limit reached";

impl<R: Read> Capped<R> {
    fn new(inner: R, limit: u64) -> Capped<R> {
        Capped { inner, left: limit }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte tells a stream that ends exactly at the limit from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(CAP_MARKER)),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn tar_error(e: io::Error, limit: u64) -> Error {
    if e.to_string().contains(CAP_MARKER) {
        Error::TooLarge {
            what: "layer".into(),
            limit,
        }
    } else {
        Error::InvalidImage {
            reference: "layer".into(),
            reason: format!("it is not a valid (gzip) tar: {e}"),
        }
    }
}

/// Byte order of an ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    fn name(self) -> &'static str {
        match self {
            Endian::Little => "little",
            Endian::Big => "big",
        }
    }
}

/// Checks that `bytes` is a 64-bit ELF for EM_BPF and returns its byte order.
pub fn check_bpf_elf(bytes: &[u8]) -> Result<Endian> {
    let not_bpf = |reason: &str| Error::NotBpf {
        reason: reason.to_string(),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(not_bpf("no ELF header"));
    }
    if bytes[4] != 2 {
        return Err(not_bpf("not a 64-bit ELF file"));
    }
    let endian = match bytes[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        _ => return Err(not_bpf("invalid ELF byte order")),
    };
    let raw = [bytes[18], bytes[19]];
    let machine = match endian {
        Endian::Little => u16::from_le_bytes(raw),
        Endian::Big => u16::from_be_bytes(raw),
    };
    if machine != EM_BPF {
        return Err(Error::NotBpf {
            reason: format!("ELF machine is {machine}, not BPF ({EM_BPF})"),
        });
    }
    Ok(endian)
}

/// Checks the object is BPF and built for `arch`'s byte order.
pub fn check_object_for(bytes: &[u8], arch: Arch) -> Result<()> {
    let endian = check_bpf_elf(bytes)?;
    let host = if arch.is_big_endian() {
        Endian::Big
    } else {
        Endian::Little
    };
    if endian != host {
        return Err(Error::WrongEndianness {
            object: endian.name().into(),
            host: host.name().into(),
            arch: arch.name().into(),
        });
    }
    Ok(())
}

/// A reproducible gzip'd tar with one file: `(compressed layer, uncompressed tar)`.
pub fn build_layer(file_name: &str, object: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let build_err = |e: io::Error| Error::Build {
        reason: format!("writing the layer: {e}"),
    };
    let mut header = tar::Header::new_ustar();
    header.set_path(file_name).map_err(build_err)?;
    header.set_size(object.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, object).map_err(build_err)?;
    let tar_bytes = builder.into_inner().map_err(build_err)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).map_err(build_err)?;
    let compressed = gz.finish().map_err(build_err)?;
    Ok((compressed, tar_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with the given class, byte order and machine.
    pub(crate) fn elf(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = data;
        b[6] = 1;
        let m = if data == 2 {
            machine.to_be_bytes()
        } else {
            machine.to_le_bytes()
        };
        b[18..20].copy_from_slice(&m);
        b
    }

    #[test]
    fn elf_checks() {
        assert_eq!(check_bpf_elf(&elf(2, 1, 247)).unwrap(), Endian::Little);
        assert_eq!(check_bpf_elf(&elf(2, 2, 247)).unwrap(), Endian::Big);
        let e = check_bpf_elf(&elf(2, 1, 62)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the image's object is not a BPF ELF file: ELF machine is 62, not BPF (247)"
        );
        assert!(check_bpf_elf(b"hello")
            .unwrap_err()
            .to_string()
            .contains("no ELF header"));
        assert!(check_bpf_elf(&elf(1, 1, 247)).is_err());
        let e = check_object_for(&elf(2, 2, 247), Arch::Amd64).unwrap_err();
        assert!(matches!(e, Error::WrongEndianness { .. }), "{e}");
        check_object_for(&elf(2, 2, 247), Arch::S390x).unwrap();
    }

    #[test]
    fn layer_round_trip_is_reproducible() {
        let obj = elf(2, 1, 247);
        let (a, tar_a) = build_layer("prog.o", &obj).unwrap();
        let (b, _) = build_layer("prog.o", &obj).unwrap();
        assert_eq!(a, b);
        let got = extract_object(&a, LayerCompression::Gzip, 1 << 20).unwrap();
        assert_eq!(
            (got.path.as_str(), got.bytes.as_slice()),
            ("prog.o", obj.as_slice())
        );
        let got = extract_object(&tar_a, LayerCompression::None, 1 << 20).unwrap();
        assert_eq!(got.bytes, obj);
    }

    #[test]
    fn paths() {
        for ok in ["a.o", "./a.o", "dir/a.o", "dir/"] {
            check_path(ok).unwrap();
        }
        for bad in ["../x", "/etc/passwd", "a/../../x", "a/.."] {
            let e = check_path(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("layer entry {bad} escapes the image")
            );
        }
    }

    #[test]
    fn stream_cap() {
        let (layer, tar_bytes) = build_layer("big.o", &vec![0u8; 100_000]).unwrap();
        let e = extract_object(&layer, LayerCompression::Gzip, 50_000).unwrap_err();
        assert!(e.to_string().starts_with("layer entry big.o"), "{e}");
        // Exactly the tar's size passes.
        extract_object(&layer, LayerCompression::Gzip, tar_bytes.len() as u64).unwrap();
        // The entry fits, the stream (its header, the entry, its padding) does not.
        let e = extract_object(&layer, LayerCompression::Gzip, 100_100).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }
}
