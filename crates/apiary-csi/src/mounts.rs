//! The mount table as this process sees it (/proc/self/mountinfo), and unmounting.

use crate::error::CsiError;
use std::path::{Path, PathBuf};

/// One line of mountinfo: where it is mounted and the filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// mountinfo escapes space, tab, newline and backslash in paths as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            // Three octal digits can exceed a byte (\777); such a line is not the kernel's.
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text: field 5 is the mount point, and the filesystem type follows the `-`.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: (*fstype).to_string(),
            })
        })
        .collect()
}

pub fn table() -> Result<Vec<Mount>, CsiError> {
    let p = "/proc/self/mountinfo";
    std::fs::read_to_string(p)
        .map(|t| parse(&t))
        .map_err(|e| CsiError::io("read", p, e))
}

/// The filesystem type mounted at `path` (the topmost mount), if something is.
pub fn mounted_at(path: &Path) -> Result<Option<String>, CsiError> {
    Ok(table()?
        .into_iter()
        .rev()
        .find(|m| m.point == path)
        .map(|m| m.fstype))
}

/// Unmount `path` and whatever is stacked on it. Detached, so a process of the pod still
/// holding a file open does not make the kubelet's retries fail forever; the kernel frees the
/// instance when the last user goes. Nothing mounted there is not an error.
pub fn unmount_all(path: &Path) -> Result<(), CsiError> {
    while mounted_at(path)?.is_some() {
        match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(CsiError::errno("unmount", path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_and_type() {
        let t = "45 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw\n\
                 90 27 0:50 / /tmp/a\\040b rw,relatime shared:5 master:1 - tmpfs tmpfs rw\n\
                 bad line\n";
        let m = parse(t);
        assert_eq!(
            m,
            vec![
                Mount {
                    point: "/sys/fs/bpf".into(),
                    fstype: "bpf".into()
                },
                Mount {
                    point: "/tmp/a b".into(),
                    fstype: "tmpfs".into()
                },
            ]
        );
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
    }
}
