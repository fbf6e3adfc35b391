//! Hooks driven by a perf event: tracepoints and software perf events. The program is tied to
//! the event with a BPF_PERF_EVENT link, which holds the event open and can be pinned.

use crate::error::{KernelError, Result};
use crate::sys;
use apiary_core::types::perf_event::{PerfEventAttach, SoftwareEvent};
use apiary_core::types::tracepoint::TracepointAttach;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

pub(crate) fn perf_link(prog: BorrowedFd<'_>, event: &OwnedFd, what: &str) -> Result<OwnedFd> {
    let opts = libbpf_sys::bpf_link_create_opts::default();
    sys::link_create(
        prog,
        std::os::fd::AsRawFd::as_raw_fd(&event.as_fd()),
        libbpf_sys::BPF_PERF_EVENT,
        &opts,
        &format!("attach {what}"),
    )
    .map_err(|e| match e.errno() {
        Some(libc::EEXIST) => KernelError::HookBusy {
            hook: what.to_string(),
            reason: "this program is already attached there".into(),
        },
        _ => e,
    })
}

pub(crate) fn base_attr(type_: u32, config: u64) -> libbpf_sys::perf_event_attr {
    let mut attr = libbpf_sys::perf_event_attr {
        type_,
        size: std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32,
        config,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_events = 1;
    attr
}

fn tracefs_roots() -> [PathBuf; 2] {
    [
        PathBuf::from("/sys/kernel/tracing"),
        PathBuf::from("/sys/kernel/debug/tracing"),
    ]
}

pub(super) fn tracepoint(prog: BorrowedFd<'_>, spec: &TracepointAttach) -> Result<OwnedFd> {
    let tp = spec.tracepoint.as_str();
    let (cat, name) = tp.split_once('/').ok_or_else(|| {
        KernelError::Invalid(format!("invalid tracepoint {tp:?}: expected CATEGORY/NAME"))
    })?;
    let roots = tracefs_roots();
    if !roots.iter().any(|r| r.join("events").is_dir()) {
        // Like perf and bpftool, mount tracefs where it belongs when nothing is there.
        let _ = nix::mount::mount(
            Some("tracefs"),
            &roots[0],
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    let Some(root) = roots.iter().find(|r| r.join("events").is_dir()) else {
        return Err(KernelError::NotSupported {
            feature: "tracepoints".into(),
            reason: "tracefs is not mounted; run `mount -t tracefs tracefs /sys/kernel/tracing`"
                .into(),
        });
    };
    let id_path = root.join("events").join(cat).join(name).join("id");
    let id: u64 = std::fs::read_to_string(&id_path)
        .map_err(|_| KernelError::TargetNotFound {
            target: format!("tracepoint {tp}"),
            reason: format!(
                "{} does not exist (see {}/available_events)",
                id_path.display(),
                root.display()
            ),
        })?
        .trim()
        .parse()
        .map_err(|_| {
            KernelError::Invalid(format!("{} does not hold a number", id_path.display()))
        })?;
    let attr = base_attr(libbpf_sys::PERF_TYPE_TRACEPOINT, id);
    let event = sys::perf_event_open(&attr, -1, 0, &format!("perf_event_open(tracepoint {tp})"))?;
    perf_link(prog, &event, &format!("tracepoint {tp}"))
}

/// One link per CPU (or on the one CPU asked for).
pub(super) fn software(prog: BorrowedFd<'_>, spec: &PerfEventAttach) -> Result<Vec<OwnedFd>> {
    let (event, freq, cpu) = (spec.event, spec.frequency, spec.cpu);
    let config = match event {
        SoftwareEvent::CpuClock => libbpf_sys::PERF_COUNT_SW_CPU_CLOCK,
        SoftwareEvent::TaskClock => libbpf_sys::PERF_COUNT_SW_TASK_CLOCK,
    } as u64;
    let mut attr = base_attr(libbpf_sys::PERF_TYPE_SOFTWARE, config);
    attr.set_freq(1);
    attr.__bindgen_anon_1.sample_freq = freq;
    let online = online_cpus()?;
    let cpus: Vec<u32> = match cpu {
        Some(c) if online.contains(&c) => vec![c],
        Some(c) => {
            return Err(KernelError::Invalid(format!(
                "CPU {c} is not online (online: {online:?})"
            )))
        }
        None => online,
    };
    let mut links = Vec::new();
    for c in cpus {
        let ev = sys::perf_event_open(
            &attr,
            -1,
            c as i32,
            &format!("perf_event_open({event:?} on CPU {c})"),
        )?;
        links.push(perf_link(prog, &ev, &format!("perf event on CPU {c}"))?);
    }
    Ok(links)
}

fn online_cpus() -> Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map_err(|e| KernelError::syscall("read /sys/devices/system/cpu/online", e))?;
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || KernelError::Invalid(format!("cannot parse CPU list {text:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(out)
}
