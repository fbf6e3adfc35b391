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

/// How a lookup lays values out: per-CPU maps return one 8-byte aligned value per possible CPU.
struct ValueBuf {
    buf: Vec<u8>,
    stride: usize,
    size: usize,
}

impl ValueBuf {
    fn new(info: &MapInfo) -> Result<ValueBuf> {
        let size = info.value_size as usize;
        let (ncpu, stride) = if PERCPU_TYPES.contains(&info.map_type_raw) {
            (sys::num_possible_cpus()?, size.div_ceil(8) * 8)
        } else {
            (1, size)
        };
        Ok(ValueBuf {
            buf: vec![0u8; stride * ncpu],
            stride,
            size,
        })
    }

    /// Look `key` up into the buffer; false when the key is not there.
    fn lookup(&mut self, fd: BorrowedFd<'_>, key: &[u8]) -> Result<bool> {
        // SAFETY: the key has the map's key size and the buffer holds a value per possible CPU.
        let ret = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                fd.as_raw_fd(),
                key.as_ptr() as *const _,
                self.buf.as_mut_ptr() as *mut _,
            )
        };
        match ret {
            0.. => Ok(true),
            r if -r == libc::ENOENT => Ok(false),
            r => Err(KernelError::syscall(
                "BPF_MAP_LOOKUP_ELEM",
                std::io::Error::from_raw_os_error(-r),
            )),
        }
    }

    fn values(&self) -> Vec<Vec<u8>> {
        self.buf
            .chunks(self.stride)
            .map(|c| c[..self.size].to_vec())
            .collect()
    }
}

/// Read up to `limit` entries.
pub fn dump(fd: BorrowedFd<'_>, info: &MapInfo, limit: usize) -> Result<Vec<MapEntry>> {
    if NOT_DUMPABLE.contains(&info.map_type_raw) {
        return Err(KernelError::Invalid(format!(
            "map {} is a {} map, which has no key/value entries to dump",
            info.name, info.map_type
        )));
    }
    let mut value = ValueBuf::new(info)?;
    let mut key = vec![0u8; info.key_size as usize];
    let mut next = vec![0u8; info.key_size as usize];
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
        // An entry that went away between the two calls is skipped.
        if value.lookup(fd, &key)? {
            out.push(MapEntry {
                key: key.clone(),
                values: value.values(),
            });
        }
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
    let mut value = ValueBuf::new(info)?;
    Ok(value.lookup(fd, key)?.then(|| value.values()))
}
