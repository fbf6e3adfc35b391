//! Where apiary pins things on bpffs, derived from one configurable root so that tests and
//! users can run isolated instances side by side.

use crate::ids::{ChainId, LinkId, ProgramId};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PinPaths {
    root: PathBuf,
}

impl PinPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinPaths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn programs_dir(&self) -> PathBuf {
        self.root.join("programs")
    }

    pub fn program(&self, id: ProgramId) -> PathBuf {
        self.programs_dir().join(id.to_string())
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Maps are pinned per owning program, named after the map. bpffs refuses names with a
    /// dot, and internal maps have one (`obj.rodata`), so dots become underscores.
    pub fn map(&self, owner: ProgramId, map_name: &str) -> PathBuf {
        self.maps_dir()
            .join(owner.to_string())
            .join(sanitize(map_name))
    }

    /// Maps declared with LIBBPF_PIN_BY_NAME are pinned by name, like libbpf pins them at the
    /// bpffs root, but inside this instance's directory so isolated instances never share them.
    pub fn shared_map(&self, map_name: &str) -> PathBuf {
        self.maps_dir().join("by-name").join(sanitize(map_name))
    }

    pub fn map_owner_dir(&self, owner: ProgramId) -> PathBuf {
        self.maps_dir().join(owner.to_string())
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// A link directory holds one pin per kernel link (a perf_event link has one per CPU).
    pub fn link_dir(&self, id: LinkId) -> PathBuf {
        self.links_dir().join(id.to_string())
    }

    pub fn link(&self, id: LinkId, index: usize) -> PathBuf {
        self.link_dir(id).join(index.to_string())
    }

    /// A chain's directory holds its link and its dispatcher's program and maps.
    pub fn chain_dir(&self, chain_id: ChainId) -> PathBuf {
        self.root.join("chains").join(chain_id.to_string())
    }

    pub fn chain_pin(&self, chain_id: ChainId, name: &str) -> PathBuf {
        self.chain_dir(chain_id).join(sanitize(name))
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '/' || c == '.' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = PinPaths::new("/sys/fs/bpf/apiary");
        assert_eq!(
            p.program(ProgramId(7)),
            PathBuf::from("/sys/fs/bpf/apiary/programs/7")
        );
        assert_eq!(
            p.map(ProgramId(7), "a/b"),
            PathBuf::from("/sys/fs/bpf/apiary/maps/7/a_b")
        );
        assert_eq!(
            p.map(ProgramId(7), "obj.rodata"),
            PathBuf::from("/sys/fs/bpf/apiary/maps/7/obj_rodata")
        );
        assert_eq!(
            p.link(LinkId(3), 1),
            PathBuf::from("/sys/fs/bpf/apiary/links/3/1")
        );
    }
}
