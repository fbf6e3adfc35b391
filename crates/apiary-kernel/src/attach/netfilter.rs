//! netfilter hooks through a BPF_NETFILTER link (Linux 6.4), in the network namespace asked for:
//! the link belongs to the namespace of the thread that creates it.

use crate::error::{KernelError, Result};
use crate::{netns, sys};
use apiary_core::types::netfilter::NetfilterAttach;
use apiary_core::{NetfilterFamily, NetfilterHook};
use std::os::fd::{BorrowedFd, OwnedFd};

/// uapi: NFPROTO_IPV4 / NFPROTO_IPV6, NF_INET_* hook numbers, BPF_F_NETFILTER_IP_DEFRAG.
const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;
const BPF_F_NETFILTER_IP_DEFRAG: u32 = 1;

pub(super) fn attach(prog: BorrowedFd<'_>, spec: &NetfilterAttach) -> Result<OwnedFd> {
    let NetfilterAttach {
        hook,
        family,
        priority,
        ref netns,
        defrag,
    } = *spec;
    let ns = netns.as_deref();
    let hooknum = match hook {
        NetfilterHook::Prerouting => 0,
        NetfilterHook::Input => 1,
        NetfilterHook::Forward => 2,
        NetfilterHook::Output => 3,
        NetfilterHook::Postrouting => 4,
    };
    let pf = match family {
        NetfilterFamily::Ipv4 => NFPROTO_IPV4,
        NetfilterFamily::Ipv6 => NFPROTO_IPV6,
    };
    let what = format!("netfilter {} {}", family.name(), hook.name());
    netns::in_netns(ns, || {
        // Built on the namespace's thread: the options hold raw pointers, which stay there.
        let mut opts = libbpf_sys::bpf_link_create_opts::default();
        opts.__bindgen_anon_1.netfilter =
            libbpf_sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_5 {
                pf,
                hooknum,
                priority,
                flags: if defrag { BPF_F_NETFILTER_IP_DEFRAG } else { 0 },
            };
        sys::link_create(prog, 0, libbpf_sys::BPF_NETFILTER, &opts, &format!("attach {what}"))
            .map_err(|e| match e.errno() {
                Some(libc::EBUSY) => KernelError::HookBusy {
                    hook: format!("{what} priority {priority}"),
                    reason: "another BPF program holds this priority on this hook; choose another --priority".into(),
                },
                Some(libc::EOPNOTSUPP) | Some(libc::ENOENT) if defrag => KernelError::NotSupported {
                    feature: "netfilter defragmentation for BPF".into(),
                    reason: "the kernel has no IP defrag support for BPF netfilter links (nf_defrag_ipv4/6)".into(),
                },
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => KernelError::NotSupported {
                    feature: "netfilter BPF links".into(),
                    reason: format!("the kernel refused {what} ({e}); it needs Linux 6.4 with CONFIG_NETFILTER_BPF_LINK"),
                },
                _ => e,
            })
    })
}
