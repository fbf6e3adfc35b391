//! A foreground session (`apiary run`): every program of an object loaded and attached the way
//! libbpf's auto-attach does from section names, nothing pinned, and the object's ring buffers
//! and perf event arrays read until the caller stops. Dropping the session detaches and unloads
//! everything; since nothing is pinned, the kernel does the same if the process is killed.

use crate::attach::{self, AttachContext, Attachment, TcFilter};
use crate::error::{KernelError, Result};
use crate::loader::{self, LoadRequest, LoadedObject};
use apiary_core::attach::RunAttach;
use apiary_core::{AttachSpec, ProgramType};
use libbpf_rs::{MapCore, MapType, PerfBufferBuilder, RingBufferBuilder};
use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

/// Targets that section names cannot carry.
pub use apiary_core::attach::RunTargets as Targets;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventMapKind {
    RingBuf,
    PerfArray,
}

pub struct Session {
    loaded: LoadedObject,
    /// The libbpf object behind `loaded`, for libbpf's attach helpers and event buffers.
    obj: libbpf_rs::Object,
    links: Vec<libbpf_rs::Link>,
    fd_links: Vec<OwnedFd>,
    tc: Vec<(String, TcFilter)>,
    /// (program, kernel program id, where it was attached), in attach order.
    pub attached: Vec<(String, u32, String)>,
    /// (program, why it was not attached).
    pub skipped: Vec<(String, String)>,
    /// Iterator links, by program: reading one runs it.
    iters: Vec<(String, OwnedFd)>,
}

impl Session {
    /// Load the programs `req` names (every program when it names none) and attach them.
    pub fn start(req: &LoadRequest<'_>, targets: &Targets) -> Result<Session> {
        // Every program when the request names none, else the ones it names.
        let (loaded, obj) = loader::load_with(req, req.programs.is_empty())?;
        let mut s = Session {
            loaded,
            obj,
            links: Vec::new(),
            fd_links: Vec::new(),
            tc: Vec::new(),
            attached: Vec::new(),
            skipped: Vec::new(),
            iters: Vec::new(),
        };
        let programs = s.loaded.programs.clone();
        for p in &programs {
            s.attach_one(&p.name, &p.section, p.ty, targets)?;
        }
        Ok(s)
    }

    fn attach_one(
        &mut self,
        name: &str,
        section: &str,
        ty: ProgramType,
        t: &Targets,
    ) -> Result<()> {
        // The type's run rule decides; hooks the section names go through the same attach code
        // as `apiary attach` (the same errors), other forms through libbpf's auto-attach.
        let spec = match t.attach(ty, section) {
            RunAttach::Spec(spec) => Some(spec),
            RunAttach::Libbpf => None,
            RunAttach::Skip(why) => {
                self.skipped.push((name.to_string(), why.to_string()));
                return Ok(());
            }
            RunAttach::Needs(flag) => return Err(missing(name, section, flag)),
        };
        match spec {
            Some(spec) => {
                let fd = self
                    .loaded
                    .program_fd(name)
                    .ok_or_else(|| KernelError::Invalid(format!("program {name} vanished")))?;
                let desc = spec.describe();
                match attach::attach(fd, &spec, &AttachContext::default())? {
                    Attachment::Links(l) if matches!(spec, AttachSpec::Iter(_)) => self
                        .iters
                        .extend(l.into_iter().map(|l| (name.to_string(), l))),
                    Attachment::Links(l) => self.fd_links.extend(l),
                    Attachment::TcFilter(f) => self.tc.push((name.to_string(), f)),
                }
                self.attached
                    .push((name.to_string(), self.kernel_id(name), desc));
            }
            None => {
                let prog = self
                    .obj
                    .progs_mut()
                    .find(|p| p.name() == name)
                    .ok_or_else(|| KernelError::Invalid(format!("program {name} vanished")))?;
                let link = prog
                    .attach()
                    .map_err(|e| auto_attach_error(name, section, ty, e))?;
                self.links.push(link);
                self.attached
                    .push((name.to_string(), self.kernel_id(name), section.to_string()));
            }
        }
        Ok(())
    }

    fn kernel_id(&self, name: &str) -> u32 {
        self.loaded
            .programs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.kernel_id)
            .unwrap_or(0)
    }

    /// Run each iterator once and return what it printed, by program.
    pub fn read_iterators(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.iters
            .iter()
            .map(|(name, link)| Ok((name.clone(), attach::read_iter(link.as_fd())?)))
            .collect()
    }

    /// Whether every attached program is an iterator (run prints them and is done).
    pub fn only_iterators(&self) -> bool {
        !self.iters.is_empty() && self.iters.len() == self.attached.len()
    }

    pub fn loaded(&self) -> &LoadedObject {
        &self.loaded
    }

    /// Deliver events from the named maps to `on_event(map index, data)` until `stop()` says so.
    /// `ready` runs once the buffers are open (events from then on are delivered), `on_poll`
    /// after each poll round (to flush output, dump maps). Lost perf samples are reported
    /// through `on_lost(map index, count)`. Call it once: the buffers live as long as the call.
    pub fn stream(
        &self,
        maps: &[String],
        on_event: &mut dyn FnMut(usize, &[u8]),
        on_lost: &mut dyn FnMut(usize, u64),
        ready: &mut dyn FnMut(),
        on_poll: &mut dyn FnMut(),
        stop: &dyn Fn() -> bool,
    ) -> Result<()> {
        let sink = RefCell::new(on_event);
        let lost = RefCell::new(on_lost);
        let obj = &self.obj;
        let all: Vec<_> = obj.maps().collect();
        let find = |n: &str| all.iter().find(|m| m.name() == n);
        let mut rb = RingBufferBuilder::new();
        let mut have_rb = false;
        let mut perfs = Vec::new();
        for (i, name) in maps.iter().enumerate() {
            let m = find(name)
                .ok_or_else(|| KernelError::Invalid(format!("no map {name} in the object")))?;
            match m.map_type() {
                MapType::RingBuf => {
                    let sink = &sink;
                    rb.add(m, move |d: &[u8]| {
                        (sink.borrow_mut())(i, d);
                        0
                    })
                    .map_err(|e| KernelError::libbpf(format!("open ring buffer {name}"), e))?;
                    have_rb = true;
                }
                MapType::PerfEventArray => {
                    let sink = &sink;
                    let lost = &lost;
                    let pb = PerfBufferBuilder::new(m)
                        .pages(64)
                        .sample_cb(move |_cpu, d: &[u8]| (sink.borrow_mut())(i, d))
                        .lost_cb(move |_cpu, n| (lost.borrow_mut())(i, n))
                        .build()
                        .map_err(|e| KernelError::libbpf(format!("open perf buffer {name}"), e))?;
                    perfs.push(pb);
                }
                other => {
                    return Err(KernelError::Invalid(format!(
                        "map {name} is a {other:?} map, not a ring buffer or perf event array"
                    )))
                }
            }
        }
        let ring = if have_rb {
            Some(
                rb.build()
                    .map_err(|e| KernelError::libbpf("build ring buffer", e))?,
            )
        } else {
            None
        };
        ready();
        let slice = if ring.is_some() && !perfs.is_empty() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        while !stop() {
            if let Some(r) = &ring {
                // EINTR from a signal is how Ctrl-C arrives: not an error.
                if let Err(e) = r.poll(slice) {
                    if crate::loader::errno_of(&e) != Some(libc::EINTR) {
                        return Err(KernelError::libbpf("poll ring buffer", e));
                    }
                }
            }
            for p in &perfs {
                if let Err(e) = p.poll(slice) {
                    if crate::loader::errno_of(&e) != Some(libc::EINTR) {
                        return Err(KernelError::libbpf("poll perf buffer", e));
                    }
                }
            }
            if ring.is_none() && perfs.is_empty() {
                std::thread::sleep(slice);
            }
            on_poll();
        }
        // Drain what arrived before the stop.
        if let Some(r) = &ring {
            let _ = r.consume();
        }
        for p in &perfs {
            let _ = p.consume();
        }
        on_poll();
        Ok(())
    }
}

fn missing(name: &str, section: &str, what: &str) -> KernelError {
    KernelError::Invalid(format!(
        "program {name:?} (section {section:?}) needs {what} to attach; give it, or use `apiary load` and `apiary attach`"
    ))
}

/// Check before loading that every program has what its type needs to attach.
pub fn check_targets(targets: &Targets, programs: &[(String, String)]) -> Result<()> {
    for (name, section) in programs {
        if let Some(flag) = ProgramType::from_section(section).and_then(|t| targets.missing(t)) {
            return Err(missing(name, section, flag));
        }
    }
    Ok(())
}

impl Drop for Session {
    fn drop(&mut self) {
        for (name, f) in &self.tc {
            if let Some(fd) = self.loaded.program_fd(name) {
                let _ = attach::detach_tc_filter(fd.as_fd(), f);
            }
        }
    }
}

fn auto_attach_error(
    name: &str,
    section: &str,
    ty: ProgramType,
    e: libbpf_rs::Error,
) -> KernelError {
    let errno = crate::loader::errno_of(&e);
    // Probes go through a perf PMU (the type table names it): a missing PMU is the kernel's
    // lack; EOPNOTSUPP with the PMU present means the section named no target.
    let pmu = ty.info().pmu;
    if let Some(dir) = pmu.filter(|d| !std::path::Path::new(d).exists()) {
        return KernelError::NotSupported {
            feature: format!("{}s", ty.name()),
            reason: format!("the kernel has no {} PMU ({dir} is missing)", ty.name()),
        };
    }
    let no_target =
        errno == Some(libc::ESRCH) || (errno == Some(libc::EOPNOTSUPP) && pmu.is_some());
    if no_target {
        return KernelError::Invalid(format!(
            "program {name:?}: section {section:?} does not name a target to attach to (e.g. SEC(\"uprobe//path:function\")); use `apiary load` and `apiary attach`"
        ));
    }
    match errno {
        Some(libc::ENOENT) => KernelError::TargetNotFound {
            target: format!("{section} (program {name})"),
            reason: "the kernel has no such attach point".into(),
        },
        Some(_) | None => KernelError::libbpf(
            format!("attach program {name:?} from section {section:?}"),
            e,
        ),
    }
}
