//! Loads in a separate process: the daemon opens and loads client-supplied objects in a
//! long-lived loader process, so that libbpf crashing on a hostile object (a segfault, an
//! abort) ends that process, not the daemon and every client with it.
//!
//! The loader process is the daemon's own binary started again (`/proc/self/exe` with a hidden
//! argument, see `WorkerCommand`), never a fork of the multi-threaded daemon. It runs the same
//! `loader::load_with` the in-process path runs and sends back the loaded programs' and maps'
//! file descriptors (SCM_RIGHTS) with what the manager needs about them, or the load's error as
//! the same `KernelError` variant. One process serves load after load (about a millisecond each
//! on top of the load itself); when it dies it is started again for the next load.
//!
//! The daemon trusts nothing it receives: message sizes are bounded, counts must agree, and
//! every descriptor must be the BPF program or map the reply says it is (checked with the
//! kernel by id and tag). A broken reply is treated as a crash: the process is stopped and the
//! load fails with `KernelError::LoaderFailed`; descriptors received so far are closed.
//!
//! Protocol, over one unix stream socketpair (the loader's stdin):
//! - a frame is `json_len: u32 LE, blob_len: u32 LE, json, blob`;
//! - request: one frame, json = the `LoadRequest` without its object, blob = the object;
//! - reply: one frame, json = `Reply`, blob = the programs' instructions one after the other;
//!   then, for a loaded object, its descriptors (programs, then maps) in messages of one byte
//!   (`FD_MARK`) carrying up to `FD_CHUNK` descriptors each.

use crate::error::{KernelError, Result};
use crate::loader::{
    self, LoadRequest, LoadedMapInfo, LoadedObject, LoadedProgramInfo, MapParts, ProgramLoadAttrs,
    ProgramParts,
};
use crate::sys;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The hidden first argument that makes the `apiary` binary serve loads on its stdin.
pub const WORKER_ARG: &str = "__loader-worker";
/// Set in the daemon's environment by tests only: the loader process crashes (SIGSEGV) after
/// loading an object whose source contains this text, before handing anything back.
pub const TEST_CRASH_ENV: &str = "APIARY_TEST_LOADER_CRASH";

/// The JSON part of any frame: requests and replies are small besides their blobs.
const MAX_JSON: usize = 16 << 20;
/// The object a request carries. Larger than any gRPC message the daemon accepts by default.
const MAX_OBJECT: usize = 1 << 30;
/// The instructions a reply carries (the verifier's limit is 1M instructions, 8 MiB, a program).
const MAX_INSNS: usize = 64 << 20;
/// Programs plus maps in one reply.
const MAX_FDS: usize = 4096;
/// Descriptors per message; the kernel allows 253 (SCM_MAX_FD).
const FD_CHUNK: usize = 250;
const FD_MARK: u8 = b'F';
/// A load that takes longer than this is taken as a hung loader process, which is stopped.
/// Verifying the largest programs takes seconds, not minutes.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// How the loader process is started: a program and its arguments.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The name it shows in `ps` (argv[0]), when not the program's path.
    pub arg0: Option<OsString>,
}

impl WorkerCommand {
    /// This very binary (`/proc/self/exe`, so a binary replaced on disk still starts the version
    /// that is running) with `WORKER_ARG`: its `main` must hand over to `serve` when it sees it.
    pub fn this_binary() -> WorkerCommand {
        WorkerCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: vec![WORKER_ARG.into()],
            arg0: std::env::args_os().next(),
        }
    }
}

/// Where loads run: in this process, or in a loader process. Cheap to clone; clones share the
/// loader process.
#[derive(Clone, Default)]
pub struct Loader {
    worker: Option<Arc<Worker>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.worker {
            None => f.write_str("Loader(in process)"),
            Some(w) => write!(f, "Loader(worker {})", w.cmd.program.display()),
        }
    }
}

impl Loader {
    /// Loads run in the calling process (the CLI: a crash only ends the user's own command).
    pub fn in_process() -> Loader {
        Loader { worker: None }
    }

    /// Loads run in a loader process started with `cmd` (the daemon). It starts at the first
    /// load.
    pub fn worker(cmd: WorkerCommand) -> Loader {
        Loader {
            worker: Some(Arc::new(Worker {
                cmd,
                process: Mutex::new(None),
            })),
        }
    }

    /// Another loader of the same kind that does not share this one's loader process (it starts
    /// its own at its first load and stops it when the last clone is dropped): for loads that
    /// should run beside this one's, such as a restore's.
    pub fn sibling(&self) -> Loader {
        match &self.worker {
            None => Loader::in_process(),
            Some(w) => Loader::worker(w.cmd.clone()),
        }
    }

    pub fn is_isolated(&self) -> bool {
        self.worker.is_some()
    }

    /// `loader::load`, wherever this loader runs loads.
    pub fn load(&self, req: &LoadRequest<'_>) -> Result<LoadedObject> {
        match &self.worker {
            None => loader::load(req),
            Some(w) => w.load(req),
        }
    }

    /// The loader process's pid, if one is running (for tests and diagnostics).
    pub fn worker_pid(&self) -> Option<u32> {
        let w = self.worker.as_ref()?;
        let guard = w.process.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|p| p.child.id())
    }
}

struct Worker {
    cmd: WorkerCommand,
    /// One load at a time: the process serves requests in order.
    process: Mutex<Option<Process>>,
}

struct Process {
    child: Child,
    sock: UnixStream,
}

/// Why an exchange with the loader process failed, before its exit status is known.
enum Broken {
    /// It closed the socket: it exited or was killed.
    Gone,
    /// It did not answer in time.
    Timeout,
    /// Its answer broke the protocol.
    Invalid(String),
    /// Talking to it failed otherwise.
    Io(io::Error),
}

impl From<io::Error> for Broken {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => Broken::Gone,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Broken::Timeout,
            _ => Broken::Io(e),
        }
    }
}

impl Worker {
    fn load(&self, req: &LoadRequest<'_>) -> Result<LoadedObject> {
        if req.object.len() > MAX_OBJECT {
            return Err(KernelError::Invalid(format!(
                "{} is {} bytes; the largest object apiary loads is {MAX_OBJECT} bytes",
                req.source,
                req.object.len()
            )));
        }
        let json = serde_json::to_vec(req)
            .map_err(|e| KernelError::Invalid(format!("cannot encode the load request: {e}")))?;
        let mut guard = self.process.lock().unwrap_or_else(|p| p.into_inner());
        // A process that died while idle is replaced before it is given work.
        if let Some(p) = guard.as_mut() {
            if !matches!(p.child.try_wait(), Ok(None)) {
                if let Some(p) = guard.take() {
                    p.stop();
                }
            }
        }
        let process = match guard.as_mut() {
            Some(p) => p,
            None => guard.insert(self.spawn().map_err(|e| KernelError::LoaderFailed {
                object: req.source.to_string(),
                what: format!("could not be started ({}: {e})", self.cmd.program.display()),
            })?),
        };
        match process.exchange(&json, req.object) {
            Ok(result) => result,
            Err(broken) => {
                let what = match guard.take() {
                    Some(p) => p.fail(broken),
                    None => "vanished".to_string(),
                };
                Err(KernelError::LoaderFailed {
                    object: req.source.to_string(),
                    what,
                })
            }
        }
    }

    fn spawn(&self) -> io::Result<Process> {
        // Both ends are close-on-exec; the child's copy becomes its stdin, which is not.
        let (ours, theirs) = UnixStream::pair()?;
        let mut cmd = Command::new(&self.cmd.program);
        if let Some(a) = &self.cmd.arg0 {
            cmd.arg0(a);
        }
        let child = cmd
            .args(&self.cmd.args)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        // The child's end is closed here with the Command, so that its death is seen as
        // end-of-file.
        drop(cmd);
        ours.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        ours.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Process { child, sock: ours })
    }
}

impl Process {
    /// Send one request and read its answer: the load's own result, or why the exchange broke.
    fn exchange(&mut self, json: &[u8], object: &[u8]) -> Result<Result<LoadedObject>, Broken> {
        write_frame(&self.sock, json, object)?;
        let (json, insns) = read_frame(&mut self.sock, MAX_JSON, MAX_INSNS)?.ok_or(Broken::Gone)?;
        let reply: Reply = serde_json::from_slice(&json)
            .map_err(|e| Broken::Invalid(format!("undecodable answer: {e}")))?;
        match reply {
            Reply::Failed(e) => Ok(Err(e.into_kernel())),
            Reply::Loaded(parts) => {
                let count = parts.fd_count()?;
                let fds = recv_fds(&self.sock, count)?;
                Ok(Ok(parts.assemble(&insns, fds)?))
            }
        }
    }

    /// Stop a process that is done with (it died or broke the protocol) and say what
    /// happened to it, for the error message.
    fn fail(self, broken: Broken) -> String {
        let status = self.stop();
        match broken {
            Broken::Gone => match status {
                Some(s) => describe_exit(s),
                None => "closed its socket".into(),
            },
            Broken::Timeout => format!(
                "did not answer within {} s and was stopped",
                ANSWER_TIMEOUT.as_secs()
            ),
            Broken::Invalid(why) => format!("sent an invalid answer ({why}) and was stopped"),
            Broken::Io(e) => format!("could not be talked to ({e}) and was stopped"),
        }
    }

    /// Kill (if still running) and reap. A process that already died keeps the status it died
    /// with: a signal to a dead process changes nothing.
    fn stop(mut self) -> Option<ExitStatus> {
        drop(self.sock);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

fn describe_exit(s: ExitStatus) -> String {
    if let Some(sig) = s.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        let core = if s.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        return format!("crashed with {name}{core}");
    }
    match s.code() {
        Some(c) => format!("exited with status {c}"),
        None => format!("ended ({s})"),
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let p = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = p.take() {
            p.stop();
        }
    }
}

/// The loader process's answer to one request.
#[derive(Serialize, Deserialize)]
enum Reply {
    Loaded(ReplyParts),
    Failed(WireError),
}

/// A loaded object without its descriptors and instructions, which travel beside the JSON.
#[derive(Serialize, Deserialize)]
struct ReplyParts {
    programs: Vec<LoadedProgramInfo>,
    maps: Vec<LoadedMapInfo>,
    /// One per program.
    attrs: Vec<ProgramLoadAttrs>,
    /// One per program: its share of the frame's blob, in bytes.
    insn_lens: Vec<usize>,
    /// One per map: the descriptor number the loader process's instructions use for it.
    insn_fds: Vec<i32>,
}

impl ReplyParts {
    fn fd_count(&self) -> Result<usize, Broken> {
        let n = self.programs.len() + self.maps.len();
        if self.programs.is_empty() || n > MAX_FDS {
            return Err(Broken::Invalid(format!(
                "{} programs and {} maps",
                self.programs.len(),
                self.maps.len()
            )));
        }
        Ok(n)
    }

    /// Check every claim of the reply against the blob and the kernel, and build the object.
    fn assemble(self, insns: &[u8], fds: Vec<OwnedFd>) -> Result<LoadedObject, Broken> {
        let bad = |why: String| Broken::Invalid(why);
        let np = self.programs.len();
        if self.attrs.len() != np || self.insn_lens.len() != np {
            return Err(bad("per-program lists of different lengths".into()));
        }
        if self.insn_fds.len() != self.maps.len() || fds.len() != np + self.maps.len() {
            return Err(bad("descriptor count does not match".into()));
        }
        let total: usize = self
            .insn_lens
            .iter()
            .try_fold(0usize, |a, n| a.checked_add(*n))
            .ok_or_else(|| bad("instruction lengths overflow".into()))?;
        if total != insns.len() || self.insn_lens.iter().any(|n| n % 8 != 0) {
            return Err(bad("instruction lengths do not match the data".into()));
        }
        let mut fds = fds.into_iter();
        let mut program_parts = Vec::with_capacity(np);
        let mut offset = 0;
        for ((p, attrs), len) in self.programs.iter().zip(self.attrs).zip(&self.insn_lens) {
            let fd = fds.next().ok_or_else(|| bad("missing descriptor".into()))?;
            let info = sys::prog_info(fd.as_fd())
                .map_err(|e| bad(format!("program {:?}: {e}", p.name)))?;
            if info.id != p.kernel_id || info.tag != p.tag {
                return Err(bad(format!(
                    "program {:?} is said to be id {} but its descriptor is id {}",
                    p.name, p.kernel_id, info.id
                )));
            }
            program_parts.push(ProgramParts {
                fd,
                attrs,
                insns: insns[offset..offset + len].to_vec(),
            });
            offset += len;
        }
        let mut map_parts = Vec::with_capacity(self.maps.len());
        for (m, insn_fd) in self.maps.iter().zip(self.insn_fds) {
            let fd = fds.next().ok_or_else(|| bad("missing descriptor".into()))?;
            let info =
                sys::map_info(fd.as_fd()).map_err(|e| bad(format!("map {:?}: {e}", m.name)))?;
            if info.id != m.info.id {
                return Err(bad(format!(
                    "map {:?} is said to be id {} but its descriptor is id {}",
                    m.name, m.info.id, info.id
                )));
            }
            map_parts.push(MapParts { fd, insn_fd });
        }
        Ok(LoadedObject {
            programs: self.programs,
            maps: self.maps,
            program_parts,
            map_parts,
        })
    }
}

fn write_frame(sock: &UnixStream, json: &[u8], blob: &[u8]) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "frame too large");
    let jl = u32::try_from(json.len()).map_err(|_| too_big())?;
    let bl = u32::try_from(blob.len()).map_err(|_| too_big())?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&jl.to_le_bytes());
    head[4..].copy_from_slice(&bl.to_le_bytes());
    for part in [&head[..], json, blob] {
        send_all(sock, part)?;
    }
    Ok(())
}

/// `write_all` without SIGPIPE: a dead peer is an error here, not a reason to die.
fn send_all(sock: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match socket::send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Read one frame, exactly (never into the descriptor messages that may follow it). `None` at
/// a clean end of stream before the frame.
fn read_frame(
    sock: &mut UnixStream,
    max_json: usize,
    max_blob: usize,
) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match sock.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let jl = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let bl = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if jl > max_json || bl > max_blob {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {jl}+{bl} bytes is over the limit"),
        ));
    }
    let mut json = vec![0u8; jl];
    sock.read_exact(&mut json)?;
    let mut blob = vec![0u8; bl];
    sock.read_exact(&mut blob)?;
    Ok(Some((json, blob)))
}

/// Receive exactly `count` descriptors, sent in marker messages of up to FD_CHUNK each.
fn recv_fds(sock: &UnixStream, count: usize) -> Result<Vec<OwnedFd>, Broken> {
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(count);
    // Room for the most the kernel puts in one message, so nothing is ever truncated (a
    // truncated message's descriptors could not be found to be closed).
    let mut space = nix::cmsg_space!([RawFd; 253]);
    while fds.len() < count {
        let mut mark = [0u8; 1];
        let (bytes, received) = recv_chunk(sock, &mut mark, &mut space, &mut fds)?;
        if bytes == 0 {
            return Err(Broken::Gone);
        }
        if received == 0 || fds.len() > count {
            return Err(Broken::Invalid(format!(
                "expected {count} descriptors, the answer's messages carried {}",
                fds.len()
            )));
        }
        if mark[0] != FD_MARK {
            return Err(Broken::Invalid(
                "unexpected bytes among the descriptors".into(),
            ));
        }
    }
    Ok(fds)
}

/// One descriptor message: its byte goes to `mark`, its descriptors onto `fds` (owned at once,
/// so they are closed whatever happens next). Returns the bytes read and descriptors received.
fn recv_chunk(
    sock: &UnixStream,
    mark: &mut [u8; 1],
    space: &mut Vec<u8>,
    fds: &mut Vec<OwnedFd>,
) -> Result<(usize, usize), Broken> {
    let mut iov = [IoSliceMut::new(mark)];
    let msg = loop {
        match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(space.as_mut_slice()),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut received = 0;
    let cmsgs = msg
        .cmsgs()
        .map_err(|_| Broken::Invalid("truncated descriptor message".into()))?;
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed this descriptor for us; nothing else owns
                // it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                received += 1;
            }
        }
    }
    Ok((msg.bytes, received))
}

/// Serve loads on stdin until it closes: the loader process's main. Returns the exit code.
pub fn serve() -> i32 {
    // SAFETY: fd 0 is this process's stdin, which the daemon made one end of a socketpair;
    // nothing else in this process uses it.
    let stdin = unsafe { OwnedFd::from_raw_fd(0) };
    if socket::getsockopt(&stdin, socket::sockopt::SockType).is_err() {
        eprintln!("apiary {WORKER_ARG}: stdin is not a socket; this is the daemon's loader process, not a command");
        return 2;
    }
    let mut sock = UnixStream::from(stdin);
    let crash_on = std::env::var(TEST_CRASH_ENV).ok().filter(|s| !s.is_empty());
    loop {
        let (json, object) = match read_frame(&mut sock, MAX_JSON, MAX_OBJECT) {
            Ok(Some(f)) => f,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("apiary loader process: {e}");
                return 1;
            }
        };
        let result = handle(&json, &object, crash_on.as_deref());
        if let Err(e) = send_reply(&sock, result) {
            eprintln!("apiary loader process: cannot answer: {e}");
            return 1;
        }
    }
}

fn handle(json: &[u8], object: &[u8], crash_on: Option<&str>) -> Result<LoadedObject> {
    // Strings borrow from the parsed value (where escapes are already resolved), so the
    // request is the daemon's `LoadRequest` as it was.
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| KernelError::Invalid(format!("loader process: bad request: {e}")))?;
    let mut req = LoadRequest::deserialize(&value)
        .map_err(|e| KernelError::Invalid(format!("loader process: bad request: {e}")))?;
    req.object = object;
    let (loaded, obj) = loader::load_with(&req, false)?;
    drop(obj);
    if crash_on.is_some_and(|c| req.source.contains(c)) {
        crash();
    }
    Ok(loaded)
}

/// The test hook: die the way a libbpf bug would, with the programs loaded but not handed over.
fn crash() -> ! {
    // SAFETY: no core file for a deliberate crash; restoring the default action (Rust's
    // runtime handles SIGSEGV for stack overflow reports and would return from a raised one)
    // and raising it in this thread.
    unsafe {
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::process::abort()
}

fn send_reply(sock: &UnixStream, result: Result<LoadedObject>) -> io::Result<()> {
    let loaded = match result {
        Ok(l) => l,
        Err(e) => {
            let json = serde_json::to_vec(&Reply::Failed(WireError::from_kernel(&e)))
                .map_err(io::Error::other)?;
            return write_frame(sock, &json, &[]);
        }
    };
    let mut insns = Vec::new();
    let mut insn_lens = Vec::new();
    let mut attrs = Vec::new();
    let mut fds: Vec<RawFd> = Vec::new();
    for p in &loaded.program_parts {
        insns.extend_from_slice(&p.insns);
        insn_lens.push(p.insns.len());
        attrs.push(p.attrs);
        fds.push(p.fd.as_raw_fd());
    }
    let mut insn_fds = Vec::new();
    for m in &loaded.map_parts {
        insn_fds.push(m.insn_fd);
        fds.push(m.fd.as_raw_fd());
    }
    let parts = ReplyParts {
        programs: loaded.programs.clone(),
        maps: loaded.maps.clone(),
        attrs,
        insn_lens,
        insn_fds,
    };
    let json = serde_json::to_vec(&Reply::Loaded(parts)).map_err(io::Error::other)?;
    write_frame(sock, &json, &insns)?;
    for chunk in fds.chunks(FD_CHUNK) {
        let iov = [IoSlice::new(&[FD_MARK])];
        let cmsg = [ControlMessage::ScmRights(chunk)];
        loop {
            match socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // The daemon holds its own references now; this process's go with `loaded`.
    drop(loaded);
    Ok(())
}

/// An io::Error as it crosses: its errno when it has one (so `KernelError::errno` and the
/// gRPC code are the same), else its message.
#[derive(Serialize, Deserialize)]
struct WireIo {
    errno: Option<i32>,
    message: String,
}

impl WireIo {
    fn of(e: &io::Error) -> WireIo {
        WireIo {
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    fn into_io(self) -> io::Error {
        match self.errno {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::other(self.message),
        }
    }

    fn of_libbpf(e: &libbpf_rs::Error) -> WireIo {
        WireIo {
            errno: loader::errno_of(e),
            message: e.to_string(),
        }
    }

    /// A libbpf error that displays the same and carries the same errno.
    fn into_libbpf(self) -> libbpf_rs::Error {
        use libbpf_rs::ErrorExt as _;
        let base = match self.errno {
            Some(n) if n > 0 => libbpf_rs::Error::from_raw_os_error(n),
            _ => return libbpf_rs::Error::from(io::Error::other(self.message)),
        };
        if base.to_string() == self.message {
            base
        } else {
            base.context(self.message)
        }
    }
}

/// `KernelError` as it crosses the socket: every variant, so the daemon shows the message an
/// in-process load would. Paths travel as text.
#[derive(Serialize, Deserialize)]
enum WireError {
    ReadObject {
        path: String,
        error: WireIo,
    },
    NotBpfObject {
        path: String,
        reason: String,
    },
    UnknownProgram {
        name: String,
        object: String,
        available: String,
    },
    TypeMismatch {
        name: String,
        section: String,
        actual: String,
        requested: String,
    },
    UnknownGlobal {
        name: String,
        available: String,
    },
    BadGlobal {
        name: String,
        reason: String,
    },
    MapReuse {
        name: String,
        reason: String,
    },
    Verifier {
        program: String,
        verifier_log: String,
        diagnosis: Box<apiary_core::verifier::Diagnosis>,
    },
    Load {
        program: String,
        error: WireIo,
        hint: Option<String>,
    },
    NotSupported {
        feature: String,
        reason: String,
    },
    Unsupported {
        feature: String,
        reason: String,
    },
    UnknownInterface {
        name: String,
        netns: Option<String>,
    },
    BadNetns {
        path: String,
        reason: String,
    },
    TargetNotFound {
        target: String,
        reason: String,
    },
    HookBusy {
        hook: String,
        reason: String,
    },
    PinExists {
        path: String,
    },
    Syscall {
        call: String,
        error: WireIo,
    },
    Libbpf {
        op: String,
        error: WireIo,
    },
    NotFound {
        what: String,
    },
    Invalid(String),
    /// A chain error has no serialisable form; its message crosses as `Invalid`.
    Chain(String),
    LoaderFailed {
        object: String,
        what: String,
    },
}

fn text(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

impl WireError {
    fn from_kernel(e: &KernelError) -> WireError {
        use KernelError as K;
        match e {
            K::ReadObject { path, error } => WireError::ReadObject {
                path: text(path),
                error: WireIo::of(error),
            },
            K::NotBpfObject { path, reason } => WireError::NotBpfObject {
                path: path.clone(),
                reason: reason.clone(),
            },
            K::UnknownProgram {
                name,
                object,
                available,
            } => WireError::UnknownProgram {
                name: name.clone(),
                object: object.clone(),
                available: available.clone(),
            },
            K::TypeMismatch {
                name,
                section,
                actual,
                requested,
            } => WireError::TypeMismatch {
                name: name.clone(),
                section: section.clone(),
                actual: actual.clone(),
                requested: requested.clone(),
            },
            K::UnknownGlobal { name, available } => WireError::UnknownGlobal {
                name: name.clone(),
                available: available.clone(),
            },
            K::BadGlobal { name, reason } => WireError::BadGlobal {
                name: name.clone(),
                reason: reason.clone(),
            },
            K::MapReuse { name, reason } => WireError::MapReuse {
                name: name.clone(),
                reason: reason.clone(),
            },
            K::Verifier {
                program,
                verifier_log,
                diagnosis,
            } => WireError::Verifier {
                program: program.clone(),
                verifier_log: verifier_log.clone(),
                diagnosis: diagnosis.clone(),
            },
            K::Load {
                program,
                error,
                hint,
            } => WireError::Load {
                program: program.clone(),
                error: WireIo::of(error),
                hint: hint.clone(),
            },
            K::NotSupported { feature, reason } => WireError::NotSupported {
                feature: feature.clone(),
                reason: reason.clone(),
            },
            K::Unsupported { feature, reason } => WireError::Unsupported {
                feature: feature.clone(),
                reason: reason.clone(),
            },
            K::UnknownInterface { name, netns } => WireError::UnknownInterface {
                name: name.clone(),
                netns: netns.as_deref().map(text),
            },
            K::BadNetns { path, reason } => WireError::BadNetns {
                path: text(path),
                reason: reason.clone(),
            },
            K::TargetNotFound { target, reason } => WireError::TargetNotFound {
                target: target.clone(),
                reason: reason.clone(),
            },
            K::HookBusy { hook, reason } => WireError::HookBusy {
                hook: hook.clone(),
                reason: reason.clone(),
            },
            K::PinExists { path } => WireError::PinExists { path: text(path) },
            // A load never mounts bpffs; should one report it, its text is what matters.
            K::NotBpffs { .. } => WireError::Invalid(e.to_string()),
            K::Syscall { call, error } => WireError::Syscall {
                call: call.clone(),
                error: WireIo::of(error),
            },
            K::Libbpf { op, error } => WireError::Libbpf {
                op: op.clone(),
                error: WireIo::of_libbpf(error),
            },
            K::NotFound { what } => WireError::NotFound { what: what.clone() },
            K::Invalid(m) => WireError::Invalid(m.clone()),
            K::Chain(c) => WireError::Chain(c.to_string()),
            K::LoaderFailed { object, what } => WireError::LoaderFailed {
                object: object.clone(),
                what: what.clone(),
            },
        }
    }

    fn into_kernel(self) -> KernelError {
        use KernelError as K;
        match self {
            WireError::ReadObject { path, error } => K::ReadObject {
                path: path.into(),
                error: error.into_io(),
            },
            WireError::NotBpfObject { path, reason } => K::NotBpfObject { path, reason },
            WireError::UnknownProgram {
                name,
                object,
                available,
            } => K::UnknownProgram {
                name,
                object,
                available,
            },
            WireError::TypeMismatch {
                name,
                section,
                actual,
                requested,
            } => K::TypeMismatch {
                name,
                section,
                actual,
                requested,
            },
            WireError::UnknownGlobal { name, available } => K::UnknownGlobal { name, available },
            WireError::BadGlobal { name, reason } => K::BadGlobal { name, reason },
            WireError::MapReuse { name, reason } => K::MapReuse { name, reason },
            WireError::Verifier {
                program,
                verifier_log,
                diagnosis,
            } => K::Verifier {
                program,
                verifier_log,
                diagnosis,
            },
            WireError::Load {
                program,
                error,
                hint,
            } => K::Load {
                program,
                error: error.into_io(),
                hint,
            },
            WireError::NotSupported { feature, reason } => K::NotSupported { feature, reason },
            WireError::Unsupported { feature, reason } => K::Unsupported { feature, reason },
            WireError::UnknownInterface { name, netns } => K::UnknownInterface {
                name,
                netns: netns.map(PathBuf::from),
            },
            WireError::BadNetns { path, reason } => K::BadNetns {
                path: path.into(),
                reason,
            },
            WireError::TargetNotFound { target, reason } => K::TargetNotFound { target, reason },
            WireError::HookBusy { hook, reason } => K::HookBusy { hook, reason },
            WireError::PinExists { path } => K::PinExists { path: path.into() },
            WireError::Syscall { call, error } => K::Syscall {
                call,
                error: error.into_io(),
            },
            WireError::Libbpf { op, error } => K::Libbpf {
                op,
                error: error.into_libbpf(),
            },
            WireError::NotFound { what } => K::NotFound { what },
            WireError::Invalid(m) | WireError::Chain(m) => K::Invalid(m),
            WireError::LoaderFailed { object, what } => K::LoaderFailed { object, what },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error a load can end with reads the same after crossing, with the same errno.
    #[test]
    fn errors_cross_unchanged() {
        let errors = vec![
            KernelError::NotBpfObject {
                path: "x.o".into(),
                reason: "elf: \u{FFFD} bad".into(),
            },
            KernelError::verifier(
                "p",
                "0: (b7) r0 = 0\n; x = 1; @ p.bpf.c:3\n1: (79) r1 = *(u64 *)(r0 +0)\nR0 !read_ok",
                40,
            ),
            KernelError::Load {
                program: "p".into(),
                error: io::Error::from_raw_os_error(libc::EPERM),
                hint: Some("prog 'p': failed".into()),
            },
            KernelError::Load {
                program: "p".into(),
                error: io::Error::other("libbpf says no"),
                hint: None,
            },
            KernelError::libbpf(
                "clear ring buffer key size",
                libbpf_rs::Error::from_raw_os_error(libc::EINVAL),
            ),
            KernelError::libbpf(
                "set object name",
                libbpf_rs::ErrorExt::context(
                    libbpf_rs::Error::from_raw_os_error(libc::E2BIG),
                    "name too long",
                ),
            ),
            KernelError::syscall(
                "bpf(BPF_OBJ_GET_INFO_BY_FD)",
                io::Error::from_raw_os_error(9),
            ),
            KernelError::UnknownProgram {
                name: "a".into(),
                object: "o".into(),
                available: "b (section xdp)".into(),
            },
            KernelError::LoaderFailed {
                object: "o".into(),
                what: "crashed with SIGSEGV".into(),
            },
        ];
        for e in errors {
            let json = serde_json::to_vec(&WireError::from_kernel(&e)).expect("encode");
            let w: WireError = serde_json::from_slice(&json).expect("decode");
            let back = w.into_kernel();
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.errno(), e.errno());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e}"
            );
            if let (KernelError::Libbpf { error: a, .. }, KernelError::Libbpf { error: b, .. }) =
                (&back, &e)
            {
                assert_eq!(loader::errno_of(a), loader::errno_of(b));
            }
        }
    }

    /// A request keeps every field, including strings JSON must escape.
    #[test]
    fn request_crosses_unchanged() {
        let req = LoadRequest {
            object: b"\x7fELF",
            source: "/tmp/a \"quoted\"\\dir/\u{e9}.o",
            programs: vec![crate::ProgramSelect {
                ty: Some(apiary_core::ProgramType::Xdp),
                name: "xdp_pass".into(),
            }],
            globals: vec![crate::GlobalPatch {
                name: "verdict".into(),
                section: ".rodata".into(),
                offset: 4,
                bytes: vec![1, 0, 0, 0],
            }],
            reuse_maps: vec![(
                "counts".into(),
                PathBuf::from("/sys/fs/bpf/x/maps/1/counts"),
            )],
            object_name: Some("count_ge".into()),
            core_btf: Some(PathBuf::from("/var/lib/apiary/core/x.btf")),
        };
        let json = serde_json::to_vec(&req).expect("encode");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("parse");
        let back = LoadRequest::deserialize(&value).expect("decode");
        assert_eq!(
            format!("{:?}", back.programs),
            format!("{:?}", req.programs)
        );
        assert_eq!(back.source, req.source);
        assert_eq!(back.globals, req.globals);
        assert_eq!(back.reuse_maps, req.reuse_maps);
        assert_eq!(back.object_name, req.object_name);
        assert_eq!(back.core_btf, req.core_btf);
        assert!(
            back.object.is_empty(),
            "the object travels as the frame's blob"
        );
    }

    /// Frames are read exactly, and a frame over the limit is refused before allocating.
    #[test]
    fn frames_are_bounded() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        write_frame(&a, b"{}", b"blob").expect("write");
        send_all(&a, b"after").expect("write");
        let (j, blob) = read_frame(&mut b, 16, 16).expect("read").expect("frame");
        assert_eq!((j.as_slice(), blob.as_slice()), (&b"{}"[..], &b"blob"[..]));
        let mut rest = [0u8; 5];
        b.read_exact(&mut rest).expect("rest");
        assert_eq!(&rest, b"after", "nothing past the frame was consumed");

        write_frame(&a, b"{}", &[0u8; 64]).expect("write");
        let e = read_frame(&mut b, 16, 16).expect_err("over the limit");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        drop(a);
        let (_a2, mut c) = UnixStream::pair().expect("pair");
        drop(_a2);
        assert!(read_frame(&mut c, 16, 16).expect("eof").is_none());
    }

    /// Descriptors arrive in chunks and a wrong count is refused.
    #[test]
    fn descriptors_cross_in_chunks() {
        let (a, b) = UnixStream::pair().expect("pair");
        let files: Vec<std::fs::File> = (0..FD_CHUNK + 3)
            .map(|_| std::fs::File::open("/dev/null").expect("open"))
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        for chunk in raw.chunks(FD_CHUNK) {
            let iov = [IoSlice::new(&[FD_MARK])];
            socket::sendmsg::<()>(
                a.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(chunk)],
                MsgFlags::empty(),
                None,
            )
            .expect("send");
        }
        let got = recv_fds(&b, raw.len()).unwrap_or_else(|_| panic!("receive"));
        assert_eq!(got.len(), raw.len());
        // They are new descriptors for the same files.
        let dev = |fd: &OwnedFd| nix::sys::stat::fstat(fd).expect("fstat").st_rdev;
        assert!(got
            .iter()
            .all(|fd| dev(fd) == dev(&OwnedFd::from(files[0].try_clone().unwrap()))));

        // One message too many descriptors for what the reply announced.
        socket::sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&[FD_MARK])],
            &[ControlMessage::ScmRights(&raw[..3])],
            MsgFlags::empty(),
            None,
        )
        .expect("send");
        assert!(matches!(recv_fds(&b, 2), Err(Broken::Invalid(_))));
    }
}
