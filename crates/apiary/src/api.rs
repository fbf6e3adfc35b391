//! The one interface both front doors use: the CLI calls it in-process (`Manager`) or through
//! the daemon's gRPC client, and the daemon serves it from a `Manager`. Every operation the CLI
//! offers on apiary's state is here; `run`, `inspect` and `package` work on objects, not state.

use crate::chain::ChainView;
use crate::error::Result;
use crate::update::{UpdateReport, UpdateSpec};
use crate::views::*;
use crate::{LoadSpec, Manager, MapRef};
use apiary_core::Hook;
use apiary_core::{AttachSpec, LinkId, ProgramId};
use std::collections::BTreeMap;

pub trait Api: Send + Sync {
    fn load(&self, spec: LoadSpec) -> Result<Vec<ProgramView>>;
    fn attach(&self, id: ProgramId, spec: AttachSpec) -> Result<LinkView>;
    fn detach(&self, id: LinkId) -> Result<()>;
    fn unload(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>>;
    fn update(&self, id: ProgramId, spec: UpdateSpec) -> Result<UpdateReport>;
    fn list_programs(
        &self,
        all: bool,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<ProgramView>>;
    fn get_program(&self, id: ProgramId) -> Result<ProgramDetail>;
    fn list_links(&self, program: Option<ProgramId>) -> Result<Vec<LinkView>>;
    fn get_link(&self, id: LinkId) -> Result<LinkView>;
    fn list_maps(&self, all: bool) -> Result<Vec<MapView>>;
    fn dump_map(&self, target: &MapRef, limit: usize) -> Result<MapDump>;
    fn list_chains(&self) -> Result<Vec<ChainView>>;
    fn get_chain(&self, hook: &Hook) -> Result<ChainView>;
}

impl Api for Manager {
    fn load(&self, spec: LoadSpec) -> Result<Vec<ProgramView>> {
        Manager::load(self, spec)
    }
    fn attach(&self, id: ProgramId, spec: AttachSpec) -> Result<LinkView> {
        Manager::attach(self, id, spec)
    }
    fn detach(&self, id: LinkId) -> Result<()> {
        Manager::detach(self, id)
    }
    fn unload(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>> {
        Manager::unload(self, ids, force)
    }
    fn update(&self, id: ProgramId, spec: UpdateSpec) -> Result<UpdateReport> {
        Manager::update(self, id, spec)
    }
    fn list_programs(
        &self,
        all: bool,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<ProgramView>> {
        Manager::list_programs(self, all, metadata)
    }
    fn get_program(&self, id: ProgramId) -> Result<ProgramDetail> {
        Manager::get_program(self, id)
    }
    fn list_links(&self, program: Option<ProgramId>) -> Result<Vec<LinkView>> {
        Manager::list_links(self, program)
    }
    fn get_link(&self, id: LinkId) -> Result<LinkView> {
        Manager::get_link(self, id)
    }
    fn list_maps(&self, all: bool) -> Result<Vec<MapView>> {
        Manager::list_maps(self, all)
    }
    fn dump_map(&self, target: &MapRef, limit: usize) -> Result<MapDump> {
        Manager::dump_map(self, target, limit)
    }
    fn list_chains(&self) -> Result<Vec<ChainView>> {
        Manager::list_chains(self)
    }
    fn get_chain(&self, hook: &Hook) -> Result<ChainView> {
        Manager::get_chain(self, hook)
    }
}
