//! XDP and TC chains: several programs on one hook, run in priority order by a dispatcher that
//! apiary composes from their instructions (no freplace). Each member is a link record with a
//! slot (priority, attach sequence, proceed-on set); every change composes a new dispatcher and
//! swaps it onto the chain's one bpf_link atomically, so no packet is ever unhandled.

use crate::error::{Error, Result};
use crate::manager::Manager;
use apiary_core::attach::dir_name;
use apiary_core::chain::{order_slots, Block, ChainKind, Priority, ProceedOn, SlotKey, SlotStats};
use apiary_core::{AttachSpec, ChainId, Hook, LinkId, ProgramId, XdpMode};
use apiary_kernel::dispatcher::{self, ChainSlot, ComposedDispatcher};
use apiary_kernel::{sys, KernelError, PinSet};
use apiary_store::{self as store, ChainRecord, ChainSlotRecord, ProgramRecord};
use serde::{Deserialize, Serialize};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// A chain as `list chains` / `get chain` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainView {
    pub id: ChainId,
    /// "xdp" or "tc".
    pub kind: String,
    pub iface: String,
    pub netns: Option<String>,
    pub direction: Option<String>,
    pub mode: Option<String>,
    pub link_kernel_id: u32,
    pub dispatcher_kernel_id: u32,
    /// In run order.
    pub programs: Vec<ChainMemberView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainMemberView {
    pub position: usize,
    pub link_id: LinkId,
    pub program_id: ProgramId,
    pub name: String,
    pub priority: u32,
    pub proceed_on: Vec<String>,
    /// Since the dispatcher was last composed.
    pub runs: u64,
    /// Count per verdict name (or number when it has no name).
    pub verdicts: std::collections::BTreeMap<String, u64>,
}

/// What a chain keeps pinned besides its link, in `chains/<id>/`.
const DISPATCHER_PINS: [dispatcher::PinRole; 3] = [
    dispatcher::PinRole::Program,
    dispatcher::PinRole::NextMap,
    dispatcher::PinRole::StatsMap,
];

/// Every pin name a chain directory may hold (reconcile removes anything else).
pub(crate) fn chain_pin_names() -> [&'static str; 4] {
    [
        PIN_LINK,
        DISPATCHER_PINS[0].file_name(),
        DISPATCHER_PINS[1].file_name(),
        DISPATCHER_PINS[2].file_name(),
    ]
}

/// One member as the composer needs it.
struct Member {
    link_id: Option<LinkId>,
    program_id: ProgramId,
    name: String,
    priority: u32,
    seq: i64,
    proceed_on: ProceedOn,
    block: Block,
}

const PIN_LINK: &str = "link";

impl Manager {
    fn block_of(&self, p: &ProgramRecord, kind: ChainKind) -> Result<Block> {
        let json = store::get_program_block(self.store().read(), p.id)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "program {} ({}) cannot join a {kind} chain: its instructions were not captured at load (only XDP and TC programs are)",
                p.id, p.name
            ))
        })?;
        let block: Block = serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("stored block of program {}: {e}", p.id)))?;
        if block.kind != kind {
            return Err(Error::InvalidArgument(format!(
                "program {} ({}) is a {} program; it cannot join a {kind} chain",
                p.id, p.name, block.kind
            )));
        }
        Ok(block)
    }

    fn members(&self, chain: &ChainRecord, kind: ChainKind) -> Result<Vec<Member>> {
        let slots: Vec<ChainSlotRecord> = store::chain_slots(self.store().read(), chain.id)?;
        let mut out = Vec::new();
        for s in slots {
            let p = self.program_record(s.program_id)?;
            out.push(Member {
                link_id: Some(s.link_id),
                program_id: s.program_id,
                name: p.name.clone(),
                priority: s.priority,
                seq: s.seq,
                proceed_on: ProceedOn::from_mask(kind, s.proceed_on),
                block: self.block_of(&p, kind)?,
            });
        }
        Ok(out)
    }

    fn compose(kind: ChainKind, members: &mut [Member]) -> Result<ComposedDispatcher> {
        order_slots(members, |m| SlotKey {
            priority: Priority::saturating(m.priority),
            seq: m.seq as u64,
        });
        let frags = members.first().map(|m| m.block.frags).unwrap_or(false);
        let slots: Vec<ChainSlot> = members
            .iter()
            .map(|m| ChainSlot {
                name: format!("p{}_{}", m.program_id, m.name),
                block: m.block.clone(),
                proceed_on: m.proceed_on,
            })
            .collect();
        Ok(dispatcher::compose_and_load(kind, frags, &slots, true)?)
    }

    /// Compose chain `ch` from its records and put it on the kernel again (reconcile): swapped
    /// onto the link if the link survived, else attached anew.
    pub(crate) fn rebuild_chain(&self, ch: &ChainRecord) -> Result<()> {
        let kind = ch.hook.kind;
        let mut members = self.members(ch, kind)?;
        let composed = Self::compose(kind, &mut members)?;
        let link_path = self.paths.chain_pin(ch.id, PIN_LINK);
        let mut pins = PinSet::new();
        let link = match sys::obj_get(&link_path) {
            // Whatever the link runs now: the old dispatcher may be gone.
            Ok(link) => {
                dispatcher::swap(link.as_fd(), &composed)?;
                link
            }
            Err(_) => {
                let link = dispatcher::attach_chain(&ch.hook, None, &composed)?;
                pins.pin(link.as_fd(), &link_path)?;
                link
            }
        };
        self.pin_dispatcher(ch.id, &composed, &mut pins)?;
        let link_kid = sys::link_info(link.as_fd())?.id;
        self.store().write(|tx| -> Result<()> {
            Ok(store::set_chain_kernel(
                tx,
                ch.id,
                link_kid,
                composed.kernel_id(),
            )?)
        })?;
        Ok(pins.keep()?)
    }

    /// Pin a new dispatcher's program and maps for chain `id` into `pins`, to replace the
    /// previous ones when kept (the rename over the old pins is atomic); roles the new one lacks
    /// are unpinned.
    fn pin_dispatcher(&self, id: ChainId, d: &ComposedDispatcher, pins: &mut PinSet) -> Result<()> {
        let made = d.pins();
        for role in DISPATCHER_PINS {
            let path = self.paths.chain_pin(id, role.file_name());
            match made.iter().find(|(r, _)| *r == role) {
                Some((_, fd)) => pins.pin(*fd, &path)?,
                None => sys::unpin(&path)?,
            }
        }
        Ok(())
    }

    /// Join a chain (creating it when this is its first program). Called under the lock.
    pub(crate) fn attach_to_chain(
        &self,
        prog: &ProgramRecord,
        spec: &AttachSpec,
    ) -> Result<LinkId> {
        let join = spec
            .chain()
            .ok_or_else(|| Error::Internal("not a chain spec".into()))?;
        let (hook, names, priority) = (join.hook, join.proceed_on, join.priority);
        let kind = hook.kind;
        let proceed_on = if names.is_empty() {
            kind.default_proceed_on()
        } else {
            ProceedOn::from_names(kind, names).map_err(|e| Error::InvalidArgument(e.to_string()))?
        };
        let block = self.block_of(prog, kind)?;
        let existing = store::find_chain(self.store().read(), &hook)?;
        if let Some(ch) = &existing {
            let mode = hook.mode;
            if kind == ChainKind::Xdp && mode != XdpMode::Auto && ch.hook.mode != mode {
                return Err(Error::InvalidArgument(format!(
                    "the XDP chain on {} runs in {} mode; --mode {} cannot join it",
                    hook.iface,
                    ch.hook.mode.name(),
                    mode.name()
                )));
            }
        }
        let mut members = match &existing {
            Some(ch) => self.members(ch, kind)?,
            None => Vec::new(),
        };
        let seq = members
            .iter()
            .map(|m| m.seq)
            .max()
            .map(|s| s + 1)
            .unwrap_or(0);
        members.push(Member {
            link_id: None,
            program_id: prog.id,
            name: prog.name.clone(),
            priority,
            seq,
            proceed_on,
            block,
        });
        let composed = Self::compose(kind, &mut members)?;

        let mut pins = PinSet::new();
        match existing {
            None => {
                let link = dispatcher::attach_chain(&hook, None, &composed).map_err(|e| match e {
                    KernelError::HookBusy { hook, .. } => KernelError::HookBusy {
                        hook,
                        reason: "a program apiary does not manage holds it; detach that first (e.g. `ip link set dev IFACE xdp off`)".into(),
                    },
                    e => e,
                })?;
                let link_kid = sys::link_info(link.as_fd())?.id;
                // Record, then pin: a crash in between leaves a chain record without pins, which
                // `reconcile` rebuilds; a failed pin removes the records again.
                let (id, chain_id) = self.store().write(|tx| -> Result<(LinkId, ChainId)> {
                    let chain_id = store::insert_chain(
                        tx,
                        &ChainRecord {
                            id: ChainId(0),
                            hook: hook.clone(),
                            link_kernel_id: link_kid,
                            dispatcher_kernel_id: composed.kernel_id(),
                        },
                    )?;
                    let id = self.record_member(
                        tx,
                        prog.id,
                        spec,
                        chain_id,
                        priority,
                        seq,
                        proceed_on.mask(),
                    )?;
                    Ok((id, chain_id))
                })?;
                let pinned = (|| -> Result<()> {
                    pins.dir(&self.paths.chain_dir(chain_id))?;
                    pins.pin(link.as_fd(), &self.paths.chain_pin(chain_id, PIN_LINK))?;
                    self.pin_dispatcher(chain_id, &composed, &mut pins)?;
                    Ok(pins.keep()?)
                })();
                if let Err(e) = pinned {
                    let _ = self.store().write(|tx| -> Result<()> {
                        store::delete_link(tx, id)?;
                        store::delete_chain(tx, chain_id)?;
                        Ok(())
                    });
                    return Err(e);
                }
                Ok(id)
            }
            Some(ch) => self.swap_chain(&ch, &composed, |tx| {
                self.record_member(tx, prog.id, spec, ch.id, priority, seq, proceed_on.mask())
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_member(
        &self,
        tx: &apiary_store::Tx<'_>,
        program: ProgramId,
        spec: &AttachSpec,
        chain_id: ChainId,
        priority: u32,
        seq: i64,
        mask: u32,
    ) -> Result<LinkId> {
        let link = store::insert_link(tx, program, spec)?;
        store::set_link_kernel(tx, link, &[], &store::LinkKind::ChainMember)?;
        store::insert_chain_slot(
            tx,
            &ChainSlotRecord {
                link_id: link,
                chain_id,
                program_id: program,
                priority,
                seq,
                proceed_on: mask,
            },
        )?;
        Ok(link)
    }

    /// Open fds on the current dispatcher pins, to restore them if a change fails.
    fn hold_dispatcher_pins(&self, chain_id: ChainId) -> Vec<(PathBuf, std::os::fd::OwnedFd)> {
        DISPATCHER_PINS
            .iter()
            .filter_map(|r| {
                let p = self.paths.chain_pin(chain_id, r.file_name());
                sys::obj_get(&p).ok().map(|fd| (p, fd))
            })
            .collect()
    }

    fn restore_dispatcher_pins(held: Vec<(PathBuf, std::os::fd::OwnedFd)>) {
        for (p, fd) in held {
            let _ = sys::unpin(&p);
            let _ = sys::pin(fd.as_fd(), &p);
        }
    }

    /// Leave a chain; the last member takes the chain (link and dispatcher) with it.
    pub(crate) fn detach_from_chain(&self, link: LinkId, slot: &ChainSlotRecord) -> Result<()> {
        let ch = store::get_chain(self.store().read(), slot.chain_id)?.ok_or_else(|| {
            Error::Internal(format!(
                "link {link} names chain {} that is not recorded",
                slot.chain_id
            ))
        })?;
        let kind = ch.hook.kind;
        let mut rest: Vec<Member> = self
            .members(&ch, kind)?
            .into_iter()
            .filter(|m| m.link_id != Some(link))
            .collect();
        if rest.is_empty() {
            self.store().write(|tx| -> Result<()> {
                store::delete_link(tx, link)?;
                store::delete_chain(tx, ch.id)?;
                Ok(())
            })?;
            sys::link_detach_now(&self.paths.chain_pin(ch.id, PIN_LINK));
            for name in chain_pin_names() {
                sys::unpin(&self.paths.chain_pin(ch.id, name))?;
            }
            let _ = std::fs::remove_dir(self.paths.chain_dir(ch.id));
            return Ok(());
        }
        let composed = Self::compose(kind, &mut rest)?;
        self.swap_chain(&ch, &composed, |tx| Ok(store::delete_link(tx, link)?))
    }

    /// Swap a recomposed dispatcher onto chain `ch` and record it (with `also` in the same
    /// transaction); undone if anything fails. New pins first (the old dispatcher keeps running
    /// meanwhile, its maps held open here), then the swap.
    pub(crate) fn swap_chain<T>(
        &self,
        ch: &ChainRecord,
        composed: &ComposedDispatcher,
        also: impl FnOnce(&apiary_store::Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let link = sys::obj_get(&self.paths.chain_pin(ch.id, PIN_LINK))?;
        let old = sys::obj_get(
            &self
                .paths
                .chain_pin(ch.id, dispatcher::PinRole::Program.file_name()),
        )?;
        let held = self.hold_dispatcher_pins(ch.id);
        let stats_pin = self
            .paths
            .chain_pin(ch.id, dispatcher::PinRole::StatsMap.file_name());
        let old_stats = held.iter().find(|(p, _)| *p == stats_pin).map(|(_, fd)| fd);
        let mut pins = PinSet::new();
        let res = self.store().write(|tx| -> Result<T> {
            self.pin_dispatcher(ch.id, composed, &mut pins)?;
            dispatcher::swap_replacing(link.as_fd(), old.as_fd(), composed)?;
            // The replaced dispatcher's counters join each member's totals, so the counts
            // `get chain` shows keep adding up across recompositions.
            if let Some(fd) = old_stats {
                if let Ok(buckets) = dispatcher::read_buckets(fd.as_fd()) {
                    let slots = store::chain_slots(tx, ch.id)?;
                    for (s, b) in slots.iter().zip(&buckets) {
                        store::add_slot_totals(tx, s.link_id, b)?;
                    }
                }
            }
            store::set_chain_kernel(tx, ch.id, ch.link_kernel_id, composed.kernel_id())?;
            also(tx)
        });
        let res = res.and_then(|t| Ok(pins.keep().map(|()| t)?));
        if res.is_err() {
            // Put the old dispatcher back on the link and its pins back in place.
            let _ = apiary_kernel::attach::update_link(link.as_fd(), old.as_fd(), composed.prog());
            Self::restore_dispatcher_pins(held);
        }
        res
    }

    /// Recompose the chains `program` belongs to with `block` as its new code (hot update).
    /// Returns how many chains changed.
    pub(crate) fn rechain_program(&self, program: ProgramId, block: &Block) -> Result<usize> {
        let links = store::list_links(self.store().read(), Some(program))?;
        let mut n = 0;
        for l in links {
            let Some(slot) = store::chain_slot_of_link(self.store().read(), l.id)? else {
                continue;
            };
            let ch = store::get_chain(self.store().read(), slot.chain_id)?
                .ok_or_else(|| Error::Internal("chain vanished".into()))?;
            let kind = ch.hook.kind;
            let mut members = self.members(&ch, kind)?;
            for m in members.iter_mut().filter(|m| m.program_id == program) {
                m.block = block.clone();
            }
            let composed = Self::compose(kind, &mut members)?;
            self.swap_chain(&ch, &composed, |_| Ok(()))?;
            n += 1;
        }
        Ok(n)
    }

    pub fn list_chains(&self) -> Result<Vec<ChainView>> {
        let chains = store::list_chains(self.store().read())?;
        chains.iter().map(|c| self.chain_view(c)).collect()
    }

    pub fn get_chain(&self, hook: &Hook) -> Result<ChainView> {
        let Some(ch) = store::find_chain(self.store().read(), hook)? else {
            // The same interface name in another namespace is the usual mistake: say where.
            let elsewhere: Vec<String> = store::list_chains(self.store().read())?
                .into_iter()
                .filter(|c| {
                    c.hook.kind == hook.kind
                        && c.hook.iface == hook.iface
                        && c.hook.direction == hook.direction
                })
                .map(|c| match &c.hook.netns {
                    None => "the host's network namespace (omit --netns)".to_string(),
                    Some(path) => {
                        // Named namespaces (`ip netns add`) are given back by name.
                        let path = path.display().to_string();
                        let name = ["/var/run/netns/", "/run/netns/"]
                            .iter()
                            .find_map(|d| path.strip_prefix(d))
                            .unwrap_or(&path);
                        format!("network namespace {name} (add --netns {name})")
                    }
                })
                .collect();
            let hint = if elsewhere.is_empty() {
                "; see `apiary list chains`".to_string()
            } else {
                format!(
                    "{}; there is one in {}",
                    match &hook.netns {
                        None => " in the host's network namespace".to_string(),
                        Some(p) => format!(" in network namespace {}", p.display()),
                    },
                    elsewhere.join(" and in ")
                )
            };
            return Err(Error::NotFound {
                kind: "chain",
                id: format!(
                    "{} on {}{}",
                    hook.kind,
                    hook.iface,
                    hook.direction
                        .map(|d| format!(" {}", dir_name(d)))
                        .unwrap_or_default()
                ),
                hint,
            });
        };
        self.chain_view(&ch)
    }

    fn chain_view(&self, ch: &ChainRecord) -> Result<ChainView> {
        let kind = ch.hook.kind;
        let slots = store::chain_slots(self.store().read(), ch.id)?;
        let current = sys::obj_get(
            &self
                .paths
                .chain_pin(ch.id, dispatcher::PinRole::StatsMap.file_name()),
        )
        .ok()
        .and_then(|fd| dispatcher::read_buckets(fd.as_fd()).ok())
        .unwrap_or_default();
        let mut programs = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let name = store::get_program(self.store().read(), s.program_id)?
                .map(|p| p.name)
                .unwrap_or_default();
            let mut buckets = store::slot_totals(self.store().read(), s.link_id)?;
            if let Some(now) = current.get(i) {
                apiary_core::chain::add_buckets(&mut buckets, now);
            }
            let stats = (!buckets.is_empty()).then(|| SlotStats::from_buckets(kind, &buckets));
            let st = stats.as_ref();
            let verdicts = st
                .map(|st| {
                    st.verdicts
                        .iter()
                        .map(|(v, n)| {
                            (
                                kind.name_of(*v)
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string()),
                                *n,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            programs.push(ChainMemberView {
                position: i + 1,
                link_id: s.link_id,
                program_id: s.program_id,
                name,
                priority: s.priority,
                proceed_on: ProceedOn::from_mask(kind, s.proceed_on).names(),
                runs: st.map(|s| s.runs).unwrap_or(0),
                verdicts,
            });
        }
        Ok(ChainView {
            id: ch.id,
            kind: kind.as_str().to_string(),
            iface: ch.hook.iface.clone(),
            netns: ch.hook.netns.as_ref().map(|p| p.display().to_string()),
            direction: ch.hook.direction.map(|d| dir_name(d).to_string()),
            mode: (kind == ChainKind::Xdp).then(|| ch.hook.mode.name().to_string()),
            link_kernel_id: ch.link_kernel_id,
            dispatcher_kernel_id: ch.dispatcher_kernel_id,
            programs,
        })
    }
}
