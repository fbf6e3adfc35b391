//! Trace runs: a bpftrace script (the distribution's bpftrace as a child process) or an apiary
//! object/package (run as `apiary run` does), with everything they print handed to a sink as
//! it comes. The CLI prints it, the daemon streams it to a client, the node agent keeps it.
//!
//! bpftrace runs in its own process group, so a Ctrl-C at the terminal reaches only apiary,
//! which then interrupts bpftrace itself: bpftrace prints its maps on SIGINT, as at the end of
//! a duration. It gets a bounded time to do so before its group is killed.

use crate::error::{Error, Result};
use crate::run::{self, RunSpec};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long bpftrace gets after SIGINT to print its maps and exit before it is killed.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// While bpftrace has not exited after SIGINT, it gets another this often.
const SIGINT_REPEAT: Duration = Duration::from_millis(500);
/// Lines are handed on in batches of at most about this many bytes (one gRPC message each).
const BATCH_BYTES: usize = 64 * 1024;

/// What runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// bpftrace program text.
    Bpftrace { script: String },
    /// An object file, an apiary package or an http(s) URL of either (what `apiary run` takes).
    Object { source: String },
    /// A bytecode image (pulled with `TraceSpec::images`, its signature policy checked).
    Image { reference: String },
}

#[derive(Debug, Clone)]
pub struct TraceSpec {
    pub program: Program,
    /// Globals set by value (objects): NAME=VALUE.
    pub set: Vec<(String, String)>,
    /// Positional arguments ($1, $2, ... in bpftrace).
    pub args: Vec<String>,
    pub duration: Option<Duration>,
    /// Events as JSON lines (objects); table rows otherwise.
    pub json: bool,
    /// The bpftrace binary (default: `bpftrace` from PATH, or $APIARY_BPFTRACE).
    pub bpftrace: String,
    /// Registries and signature policy, for an image.
    pub images: Option<std::sync::Arc<crate::images::ImageSettings>>,
}

impl TraceSpec {
    pub fn new(program: Program) -> TraceSpec {
        TraceSpec {
            program,
            set: Vec::new(),
            args: Vec::new(),
            duration: None,
            json: false,
            bpftrace: std::env::var("APIARY_BPFTRACE").unwrap_or_else(|_| "bpftrace".into()),
            images: None,
        }
    }
}

/// One piece of a trace's output. Text is one or more whole lines, each ending in `\n`.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    Stdout(&'a str),
    Stderr(&'a str),
    /// The type each event map's records decode as (map, type; empty for hex), once, before
    /// any event.
    EventTypes(&'a [(String, String)]),
    /// Decoded events; `event_type` is the struct when the object has one event map (with
    /// several, each JSON line names its map in `_map`).
    Events {
        event_type: &'a str,
        text: &'a str,
    },
    /// apiary's own progress notes (what was attached, how events decode).
    Note(&'a str),
}

/// How a trace ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// bpftrace's exit status (0 for an object that ran to its end).
    pub code: Option<i32>,
    /// The signal that ended bpftrace, when one did (SIGKILL after the grace period).
    pub signal: Option<i32>,
    /// Stopped before it ended on its own: by the caller, its duration or its deadline.
    pub stopped: bool,
    pub events: u64,
    pub lost: u64,
}

/// Run `spec` until it ends, `stop()` says so, the sink refuses more output (its reader went
/// away: returns false) or the duration passes.
pub fn run(
    spec: &TraceSpec,
    sink: &mut dyn FnMut(Output<'_>) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Exit> {
    match &spec.program {
        Program::Bpftrace { script } => run_bpftrace(spec, script, sink, stop),
        Program::Object { source } => run_object(spec, source, sink, stop),
        Program::Image { reference } => run_image(spec, reference, sink, stop),
    }
}

/// Pull the image (or take it from the cache), then run its object as a file would run.
fn run_image(
    spec: &TraceSpec,
    reference: &str,
    sink: &mut dyn FnMut(Output<'_>) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Exit> {
    let settings = spec.images.as_ref().ok_or_else(|| {
        Error::FailedPrecondition(format!("{reference}: no image settings to pull it with"))
    })?;
    let (pulled, _verdict) = settings.pull(reference, crate::oci::PullPolicy::IfNotPresent)?;
    let note = format!(
        "image {reference}: {} ({} bytes of object)\n",
        pulled.digest,
        pulled.object.len()
    );
    if !sink(Output::Note(&note)) {
        return Ok(Exit {
            stopped: true,
            ..Default::default()
        });
    }
    // `run` reads its object from a path; this file lives as long as the run.
    let path = std::env::temp_dir().join(format!(
        "apiary-trace-image-{}-{}.bpf.o",
        std::process::id(),
        IMAGE_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::write(&path, &pulled.object)
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    let r = run_object(spec, &path.display().to_string(), sink, stop);
    let _ = std::fs::remove_file(&path);
    r
}

/// Numbers the temporary object files of images run by this process.
static IMAGE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

fn run_bpftrace(
    spec: &TraceSpec,
    script: &str,
    sink: &mut dyn FnMut(Output<'_>) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Exit> {
    let mut cmd = Command::new(&spec.bpftrace);
    // No buffering: lines arrive as bpftrace prints them, not when a pipe buffer fills.
    cmd.args(["-B", "none", "-e", script])
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl is async-signal-safe. If the thread that started bpftrace dies (apiary
    // crashed or was killed), bpftrace is killed rather than left tracing forever: nobody
    // reads its output any more, and SIGKILL cannot be missed as a SIGINT can (see below).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::FailedPrecondition(format!(
                "{} not found: install bpftrace (Debian: apt-get install bpftrace; it needs the kernel's BTF, not its headers)",
                spec.bpftrace
            ))
        } else {
            Error::Internal(format!("cannot start {}: {e}", spec.bpftrace))
        }
    })?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel::<(Stream, String)>();
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        readers.push(read_lines(o, Stream::Out, tx.clone()));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(read_lines(e, Stream::Err, tx.clone()));
    }
    drop(tx);

    let deadline = spec.duration.map(|d| Instant::now() + d);
    let mut interrupted: Option<Instant> = None;
    let mut last_sigint = Instant::now();
    let mut killed = false;
    let mut gone = false;
    let mut out = String::new();
    let mut err = String::new();
    loop {
        let first = rx.recv_timeout(Duration::from_millis(50));
        let closed = matches!(first, Err(mpsc::RecvTimeoutError::Disconnected));
        if let Ok(l) = first {
            push(&mut out, &mut err, l);
            // Whatever else is waiting goes in the same batch.
            while out.len() + err.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(l) => push(&mut out, &mut err, l),
                    Err(_) => break,
                }
            }
        }
        if !gone && !out.is_empty() && !sink(Output::Stdout(&out)) {
            gone = true;
        }
        if !gone && !err.is_empty() && !sink(Output::Stderr(&err)) {
            gone = true;
        }
        out.clear();
        err.clear();
        if closed {
            break;
        }
        let now = Instant::now();
        match interrupted {
            None if gone || stop() || deadline.is_some_and(|d| now >= d) => {
                // The whole group: bpftrace may have started helpers of its own.
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT);
                interrupted = Some(now);
                last_sigint = now;
            }
            Some(at) if !killed && now >= at + INTERRUPT_GRACE => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                killed = true;
            }
            // bpftrace 0.17 sometimes misses a SIGINT that comes soon after its BEGIN probe
            // ran (about one run in fifteen here): ask again until it exits. Its handler only
            // sets a flag, so a repeat does not cut the printing of its maps short.
            Some(_) if !killed && now >= last_sigint + SIGINT_REPEAT => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGINT);
                last_sigint = now;
            }
            _ => {}
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child
        .wait()
        .map_err(|e| Error::Internal(format!("waiting for bpftrace: {e}")))?;
    Ok(Exit {
        code: status.code(),
        signal: status.signal(),
        stopped: interrupted.is_some(),
        events: 0,
        lost: 0,
    })
}

fn push(out: &mut String, err: &mut String, (s, line): (Stream, String)) {
    match s {
        Stream::Out => out.push_str(&line),
        Stream::Err => err.push_str(&line),
    }
}

/// Forward `r`'s lines (each ending in `\n`; invalid UTF-8 replaced) until it closes.
fn read_lines<R: Read + Send + 'static>(
    r: R,
    which: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let mut line = String::from_utf8_lossy(&buf).into_owned();
                    if !line.ends_with('\n') {
                        line.push('\n');
                    }
                    if tx.send((which, line)).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

fn run_object(
    spec: &TraceSpec,
    source: &str,
    sink: &mut dyn FnMut(Output<'_>) -> bool,
    stop: &dyn Fn() -> bool,
) -> Result<Exit> {
    let rspec = RunSpec {
        source: source.to_string(),
        programs: Vec::new(),
        raw_globals: Vec::new(),
        typed_globals: spec.set.clone(),
        targets: Default::default(),
        event_type: None,
        duration: spec.duration,
        dump_maps: Vec::new(),
        interval: Duration::from_secs(1),
        json: spec.json,
        metrics_config: None,
        otlp: None,
    };
    let started = Instant::now();
    // The sink is used by the event writer, the type report and the notes in turn (never at
    // once); a RefCell lets all three hold it.
    let shared = std::cell::RefCell::new(sink);
    let gone = std::cell::Cell::new(false);
    let event_type = std::cell::RefCell::new(String::new());
    let mut writer = EventLines {
        partial: Vec::new(),
        emit: &mut |text: &str| {
            if !gone.get()
                && !(shared.borrow_mut())(Output::Events {
                    event_type: &event_type.borrow(),
                    text,
                })
            {
                gone.set(true);
            }
        },
    };
    let types = |t: &[(String, String)]| {
        if let [(_, one)] = t {
            *event_type.borrow_mut() = one.clone();
        }
        if !gone.get() && !(shared.borrow_mut())(Output::EventTypes(t)) {
            gone.set(true);
        }
    };
    let mut note = |m: &str| {
        let line = format!("{m}\n");
        if !gone.get() && !(shared.borrow_mut())(Output::Note(&line)) {
            gone.set(true);
        }
    };
    let stopped_early = std::cell::Cell::new(false);
    let stop_now = || {
        let s = gone.get() || stop();
        stopped_early.set(stopped_early.get() | s);
        s
    };
    let summary = run::run_with(
        &rspec,
        &mut writer,
        &mut note,
        &stop_now,
        run::RunHooks {
            on_types: Some(Box::new(types)),
            ..Default::default()
        },
    )?;
    writer.finish();
    // The duration ending counts as stopped, as for bpftrace.
    let stopped = stopped_early.get() || spec.duration.is_some_and(|d| started.elapsed() >= d);
    Ok(Exit {
        code: Some(0),
        signal: None,
        stopped,
        events: summary.events,
        lost: summary.lost,
    })
}

/// A `Write` that hands on whole lines: what `run` writes is cut at its last newline, the rest
/// waits for the next write.
struct EventLines<'a> {
    partial: Vec<u8>,
    emit: &'a mut dyn FnMut(&str),
}

impl EventLines<'_> {
    fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            let text = String::from_utf8_lossy(&self.partial).into_owned();
            (self.emit)(&text);
            self.partial.clear();
        }
    }
}

impl Write for EventLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match buf.iter().rposition(|b| *b == b'\n') {
            None => self.partial.extend_from_slice(buf),
            Some(end) => {
                let (whole, rest) = buf.split_at(end + 1);
                let text = if self.partial.is_empty() {
                    String::from_utf8_lossy(whole).into_owned()
                } else {
                    self.partial.extend_from_slice(whole);
                    let t = String::from_utf8_lossy(&self.partial).into_owned();
                    self.partial.clear();
                    t
                };
                (self.emit)(&text);
                self.partial.extend_from_slice(rest);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_hand_on_whole_lines_only() {
        let mut got: Vec<String> = Vec::new();
        {
            let mut emit = |t: &str| got.push(t.to_string());
            let mut w = EventLines {
                partial: Vec::new(),
                emit: &mut emit,
            };
            w.write_all(b"a\nb").unwrap();
            w.write_all(b"c\nd\ne").unwrap();
            w.finish();
        }
        assert_eq!(got, vec!["a\n", "bc\nd\n", "e\n"]);
    }

    #[test]
    fn missing_bpftrace_is_a_failed_precondition() {
        let mut spec = TraceSpec::new(Program::Bpftrace {
            script: "BEGIN { exit(); }".into(),
        });
        spec.bpftrace = "/nonexistent/bpftrace".into();
        let e = run(&spec, &mut |_| true, &|| false).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
    }
}
