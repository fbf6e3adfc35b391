//! `attach`, `detach` and `unload`: links made, recorded and pinned, and taken down again; a
//! link's kind (bpf_links, a legacy TC filter, a chain slot) decides how.

use crate::error::{Error, Result};
use crate::manager::Manager;
use crate::views::*;
use apiary_core::types::tcx::TcxAttach;
use apiary_core::{AttachSpec, LinkId, ProgramId, TcDirection};
use apiary_kernel::{
    self as kernel, sys, AttachContext, Attachment, KernelError, PinSet, TcFilter, TcxAnchor,
};
use apiary_store::{self as store, LinkKind, LinkRecord, MapRecord, TcHandle};
use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;

impl Manager {
    pub fn attach(&self, id: ProgramId, spec: AttachSpec) -> Result<LinkView> {
        spec.validate().map_err(Error::InvalidArgument)?;
        let _lock = self.lock()?;
        let link = self.attach_locked(id, spec)?;
        drop(_lock);
        self.get_link(link)
    }

    pub(crate) fn attach_locked(&self, id: ProgramId, mut spec: AttachSpec) -> Result<LinkId> {
        let prog = self.program_record(id)?;
        spec.resolve(&prog.section)
            .map_err(Error::InvalidArgument)?;
        spec.validate().map_err(Error::InvalidArgument)?;
        let want = spec.program_type();
        if !prog.prog_type.compatible_with(want) {
            return Err(Error::InvalidArgument(format!(
                "program {id} ({}) is a {} program (section {:?}); it cannot be attached as {want}",
                prog.name, prog.prog_type, prog.section
            )));
        }
        if spec.chain().is_some() {
            return self.attach_to_chain(&prog, &spec);
        }
        let existing = store::list_links(self.store().read(), None)?;
        let ctx = self.attach_context(&spec, &existing)?;
        let fd = sys::obj_get(&self.paths.program(id)).map_err(|e| Error::PinMissing {
            program: id,
            reason: e.to_string(),
        })?;
        let attachment = kernel::attach(fd.as_fd(), &spec, &ctx)?;

        let (fds, tc) = match attachment {
            Attachment::Links(fds) => (fds, None),
            Attachment::TcFilter(f) => (Vec::new(), Some(f)),
        };
        let mut kernel_ids = Vec::new();
        for f in &fds {
            kernel_ids.push(sys::link_info(f.as_fd())?.id);
        }
        // Record, then pin (see `load` for why this order).
        let kind = link_kind(tc.as_ref());
        let res = self
            .store()
            .write(|tx| -> Result<LinkId> {
                let link = store::insert_link(tx, id, &spec)?;
                store::set_link_kernel(tx, link, &kernel_ids, &kind)?;
                Ok(link)
            })
            .and_then(|link| {
                let mut pins = PinSet::new();
                let pinned = (|| -> Result<()> {
                    pins.dir(&self.paths.link_dir(link))?;
                    for (i, f) in fds.iter().enumerate() {
                        pins.pin(f.as_fd(), &self.paths.link(link, i))?;
                    }
                    Ok(pins.keep()?)
                })();
                match pinned {
                    Ok(()) => Ok(link),
                    Err(e) => {
                        let _ = self
                            .store()
                            .write(|tx| -> Result<()> { Ok(store::delete_link(tx, link)?) });
                        Err(e)
                    }
                }
            });
        if res.is_err() {
            if let Some(t) = &tc {
                let _ = kernel::attach::detach_tc_filter(fd.as_fd(), t);
            }
        }
        res
    }

    fn attach_context(&self, spec: &AttachSpec, existing: &[LinkRecord]) -> Result<AttachContext> {
        // Only legacy TC filters hold a hook exclusively.
        let same_iface = |a: &AttachSpec| -> bool {
            let (AttachSpec::Tc(x), AttachSpec::Tc(y)) = (spec, a) else {
                return false;
            };
            x.legacy
                && y.legacy
                && x.iface == y.iface
                && x.netns == y.netns
                && x.direction == y.direction
        };
        if let Some(l) = existing.iter().find(|l| same_iface(&l.spec)) {
            return Err(KernelError::HookBusy {
                hook: spec.describe(),
                reason: format!(
                    "apiary link {} (program {}) is attached there; detach it first",
                    l.id, l.program_id
                ),
            }
            .into());
        }
        let mut ctx = AttachContext::default();
        if let AttachSpec::Tcx(TcxAttach {
            iface,
            netns,
            direction,
            priority,
        }) = spec
        {
            ctx.tcx_anchor = tcx_anchor(existing, iface, netns.as_deref(), *direction, *priority);
        }
        Ok(ctx)
    }

    // ---------------------------------------------------------------- detach / unload

    pub fn detach(&self, id: LinkId) -> Result<()> {
        let _lock = self.lock()?;
        let link = store::get_link(self.store().read(), id)?
            .ok_or_else(|| Error::not_found("link", id))?;
        self.detach_record(&link)
    }

    fn detach_record(&self, link: &LinkRecord) -> Result<()> {
        let slot = store::chain_slot_of_link(self.store().read(), link.id)?;
        if let Some(slot) = slot {
            return self.detach_from_chain(link.id, &slot);
        }
        if let Some(tc) = tc_filter(link) {
            match sys::obj_get(&self.paths.program(link.program_id)) {
                Ok(fd) => kernel::attach::detach_tc_filter(fd.as_fd(), &tc)?,
                Err(_) => {
                    return Err(Error::FailedPrecondition(format!(
                        "link {}: program {} pin is missing, cannot remove its tc filter",
                        link.id, link.program_id
                    )))
                }
            }
        }
        // Forget the link first, then unpin: a crash in between leaves a pin the store does not
        // know, which `reconcile` removes, rather than a record that would be re-attached.
        self.store()
            .write(|tx| -> Result<()> { Ok(store::delete_link(tx, link.id)?) })?;
        for i in 0..link.kernel_link_ids.len().max(1) {
            sys::link_detach_now(&self.paths.link(link.id, i));
            sys::unpin(&self.paths.link(link.id, i))?;
        }
        let _ = std::fs::remove_dir(self.paths.link_dir(link.id));
        Ok(())
    }

    /// Unload programs. Several ids may be given at once; programs that borrow another's maps
    /// are unloaded before the owner.
    pub fn unload(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>> {
        let _lock = self.lock()?;
        self.unload_locked(ids, force)
    }

    pub(crate) fn unload_locked(&self, ids: &[ProgramId], force: bool) -> Result<Vec<ProgramId>> {
        let set: HashSet<ProgramId> = ids.iter().copied().collect();
        let mut records = Vec::new();
        for id in ids {
            records.push(self.program_record(*id)?);
        }
        // Validate everything before changing anything.
        for r in &records {
            let links = store::list_links(self.store().read(), Some(r.id))?;
            if !links.is_empty() && !force {
                return Err(Error::HasLinks {
                    program: r.id,
                    name: r.name.clone(),
                    links: links.iter().map(|l| l.id).collect(),
                });
            }
            let borrowers: Vec<ProgramId> = store::map_borrowers(self.store().read(), r.id)?
                .into_iter()
                .filter(|b| !set.contains(b))
                .collect();
            if !borrowers.is_empty() {
                return Err(Error::MapsInUse {
                    program: r.id,
                    name: r.name.clone(),
                    users: borrowers,
                });
            }
        }
        // Borrowers first, owners last.
        records.sort_by_key(|r| std::cmp::Reverse(r.id));
        let mut done = Vec::new();
        for r in &records {
            let links = store::list_links(self.store().read(), Some(r.id))?;
            for l in links {
                self.detach_record(&l)?;
            }
            // A map shared by name outlives this program while another program uses it: it
            // passes to the next user. Everything else it owns goes with it.
            let owned = store::maps_owned_by(self.store().read(), r.id)?;
            let gone = self.store().write(|tx| -> Result<Vec<MapRecord>> {
                let mut gone = Vec::new();
                for m in owned {
                    let next = store::map_users(tx, m.id)?.into_iter().find(|u| *u != r.id);
                    match next {
                        Some(u) if m.by_name => store::set_map_owner(tx, m.id, u)?,
                        _ => gone.push(m),
                    }
                }
                store::delete_program(tx, r.id)?;
                Ok(gone)
            })?;
            sys::unpin(&self.paths.program(r.id))?;
            for m in &gone {
                sys::unpin(&self.map_path(m))?;
            }
            let _ = std::fs::remove_dir(self.paths.map_owner_dir(r.id));
            done.push(r.id);
        }
        Ok(done)
    }
}

/// What stands for a link in the kernel: its bpf_links, or the legacy TC filter it made.
pub(crate) fn link_kind(tc: Option<&TcFilter>) -> LinkKind {
    match tc {
        Some(f) => LinkKind::TcFilter(TcHandle {
            ifindex: f.ifindex,
            handle: f.handle,
            priority: f.priority,
        }),
        None => LinkKind::Links,
    }
}

/// The legacy TC filter a link record stands for: where its spec says, with its handle.
pub(crate) fn tc_filter(l: &LinkRecord) -> Option<TcFilter> {
    let (LinkKind::TcFilter(h), AttachSpec::Tc(tc)) = (&l.kind, &l.spec) else {
        return None;
    };
    Some(TcFilter {
        iface: tc.iface.clone(),
        netns: tc.netns.clone(),
        ifindex: h.ifindex,
        direction: tc.direction,
        handle: h.handle,
        priority: h.priority,
    })
}

/// Where a new TCX link goes so that the list stays sorted by priority, ties in attach order:
/// before the first link with a higher priority, else after the last one.
fn tcx_anchor(
    existing: &[LinkRecord],
    iface: &str,
    netns: Option<&Path>,
    direction: TcDirection,
    priority: u32,
) -> Option<TcxAnchor> {
    let mut peers: Vec<(u32, LinkId, u32)> = existing
        .iter()
        .filter_map(|l| {
            // The TCX links already on this hook.
            let AttachSpec::Tcx(TcxAttach {
                iface: i,
                netns: n,
                direction: d,
                priority: p,
            }) = &l.spec
            else {
                return None;
            };
            (i == iface && n.as_deref() == netns && *d == direction)
                .then(|| l.kernel_link_ids.first().map(|k| (*p, l.id, *k)))
                .flatten()
        })
        .collect();
    peers.sort();
    if let Some((_, _, k)) = peers.iter().find(|(p, _, _)| *p > priority) {
        return Some(TcxAnchor::Before(*k));
    }
    peers.last().map(|(_, _, k)| TcxAnchor::After(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcx(id: i64, prio: u32, kid: u32) -> LinkRecord {
        LinkRecord {
            id: LinkId(id),
            program_id: ProgramId(1),
            spec: AttachSpec::Tcx(TcxAttach {
                iface: "veth0".into(),
                netns: None,
                direction: TcDirection::Ingress,
                priority: prio,
            }),
            kernel_link_ids: vec![kid],
            kind: LinkKind::Links,
            created_at: String::new(),
        }
    }

    #[test]
    fn tcx_order() {
        let ex = vec![tcx(1, 10, 100), tcx(2, 30, 200)];
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 5),
            Some(TcxAnchor::Before(100))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 10),
            Some(TcxAnchor::Before(200))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Ingress, 50),
            Some(TcxAnchor::After(200))
        );
        assert_eq!(
            tcx_anchor(&ex, "veth1", None, TcDirection::Ingress, 50),
            None
        );
        assert_eq!(
            tcx_anchor(&ex, "veth0", None, TcDirection::Egress, 50),
            None
        );
    }
}
