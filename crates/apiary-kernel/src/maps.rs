//! Reading maps by fd: entries as raw bytes, split per CPU for per-CPU maps.

use crate::error::{KernelError, Result};
use crate::sys::{self, MapInfo};
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Debug, Clone)]
pub struct MapEntry {
    pub key: Vec<u8>,
    /// One value, or one per possible CPU for per-CPU maps.
    pub values: Vec<Vec<u8>>,
}

const PERCPU_TYPES: &[u32] = &[
    libbpf_sys::BPF_MAP_TYPE_PERCPU_HASH,
    libbpf_sys::BPF_MAP_TYPE_PERCPU_ARRAY,
    libbpf_sys::BPF_MAP_TYPE_LRU_PERCPU_HASH,
    libbpf_sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
];

const NOT_DUMPABLE: &[u32] = &[
    libbpf_sys::BPF_MAP_TYPE_RINGBUF,
    libbpf_sys::BPF_MAP_TYPE_USER_RINGBUF,
    libbpf_sys::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    libbpf_sys::BPF_MAP_TYPE_PROG_ARRAY,
    libbpf_sys::BPF_MAP_TYPE_BLOOM_FILTER,
    libbpf_sys::BPF_MAP_TYPE_STACK,
    libbpf_sys::BPF_MAP_TYPE_QUEUE,
];

/// Read up to `limit` entries.
pub fn dump(fd: BorrowedFd<'_>, info: &MapInfo, limit: usize) -> Result<Vec<MapEntry>> {
    if NOT_DUMPABLE.contains(&info.map_type_raw) {
        return Err(KernelError::Invalid(format!(
            "map {} is a {} map, which has no key/value entries to dump",
            info.name, info.map_type
        )));
    }
    let percpu = PERCPU_TYPES.contains(&info.map_type_raw);
    let ncpu = if percpu { sys::num_possible_cpus()? } else { 1 };
    let stride = if percpu {
        (info.value_size as usize).div_ceil(8) * 8
    } else {
        info.value_size as usize
    };
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
    let mut value = vec![0u8; stride * ncpu];
    let mut out = Vec::new();
    let mut first = true;
    while out.len() < limit {
        let prev = if first {
            std::ptr::null()
        } else {
            key.as_ptr() as *const _
        };
        // SAFETY: buffers are sized from the map's key size.
        let ret = unsafe {
            libbpf_sys::bpf_map_get_next_key(fd.as_raw_fd(), prev, next.as_mut_ptr() as *mut _)
        };
        if ret < 0 {
            if -ret == libc::ENOENT {
                break;
            }
            return Err(KernelError::syscall(
                "BPF_MAP_GET_NEXT_KEY",
                std::io::Error::from_raw_os_error(-ret),
            ));
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        // SAFETY: value buffer holds one value per possible CPU.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                fd.as_raw_fd(),
                key.as_ptr() as *const _,
                value.as_mut_ptr() as *mut _,
            )
        };
        if ret < 0 {
            // The entry went away between the two calls; skip it.
            if -ret == libc::ENOENT {
                continue;
            }
            return Err(KernelError::syscall(
                "BPF_MAP_LOOKUP_ELEM",
                std::io::Error::from_raw_os_error(-ret),
            ));
        }
        let values = (0..ncpu)
            .map(|c| value[c * stride..c * stride + info.value_size as usize].to_vec())
            .collect();
        out.push(MapEntry {
            key: key.clone(),
            values,
        });
    }
    Ok(out)
}

/// Look up one key (the caller gives exactly key_size bytes).
pub fn lookup(fd: BorrowedFd<'_>, info: &MapInfo, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
    if key.len() != info.key_size as usize {
        return Err(KernelError::Invalid(format!(
            "map {} has {}-byte keys, got {}",
            info.name,
            info.key_size,
            key.len()
        )));
    }
    let percpu = PERCPU_TYPES.contains(&info.map_type_raw);
    let ncpu = if percpu { sys::num_possible_cpus()? } else { 1 };
    let stride = if percpu {
        (info.value_size as usize).div_ceil(8) * 8
    } else {
        info.value_size as usize
    };
    let mut value = vec![0u8; stride * ncpu];
    // SAFETY: buffers sized from the map info.
    let ret = unsafe {
        libbpf_sys::bpf_map_lookup_elem(
            fd.as_raw_fd(),
            key.as_ptr() as *const _,
            value.as_mut_ptr() as *mut _,
        )
    };
    if ret < 0 {
        if -ret == libc::ENOENT {
            return Ok(None);
        }
        return Err(KernelError::syscall(
            "BPF_MAP_LOOKUP_ELEM",
            std::io::Error::from_raw_os_error(-ret),
        ));
    }
    Ok(Some(
        (0..ncpu)
            .map(|c| value[c * stride..c * stride + info.value_size as usize].to_vec())
            .collect(),
    ))
}
