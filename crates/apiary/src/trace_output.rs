//! What a trace job printed on this node: the last part of it kept in files (so `trace logs`
//! works after the job ended, and after the agent restarted), and handed live to whoever
//! follows the job in this process (the agent's Tracer service).
//!
//! The output goes to `output`; when that passes half the kept size it becomes `output.1`
//! (replacing the older one) and a new `output` starts, so between half and all of
//! `KEEP_BYTES` of the newest output is kept, without rewriting files.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

/// How much of a job's output a node keeps.
pub const KEEP_BYTES: u64 = 1 << 20;
const CURRENT: &str = "output";
const PREVIOUS: &str = "output.1";
/// Present while a run writes here: found at start, the agent died during the run.
const RUNNING: &str = "running";

type Followers = Vec<mpsc::SyncSender<Arc<str>>>;

/// Pieces of output queued for one follower. One that falls further behind is dropped (its
/// stream ends; `is_live` tells it the run went on) rather than holding the run up or
/// growing without bound.
pub const FOLLOWER_QUEUE: usize = 4096;

/// Where this process keeps trace jobs' output, and for which node (set by a node agent).
static ROOT: OnceLock<(PathBuf, String)> = OnceLock::new();

/// This process is `node`'s agent and keeps each job's output in `root/JOB`.
pub fn set_root(root: &Path, node: &str) {
    let _ = ROOT.set((root.to_path_buf(), node.to_string()));
}

/// The output root and node name, when this process is a node agent.
pub fn root() -> Option<&'static (PathBuf, String)> {
    ROOT.get()
}

/// Followers of the runs of this process, by output directory.
fn live() -> &'static Mutex<HashMap<PathBuf, Followers>> {
    static LIVE: OnceLock<Mutex<HashMap<PathBuf, Followers>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// The writing side of a job's output directory, for the duration of one run.
#[derive(Debug)]
pub struct OutputLog {
    dir: PathBuf,
    file: std::fs::File,
    current: u64,
    total: u64,
}

impl OutputLog {
    /// Start a run's output in `dir` (created; a `running` marker is left until `finish`).
    pub fn create(dir: &Path) -> std::io::Result<OutputLog> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(RUNNING), b"")?;
        let file = std::fs::File::create(dir.join(CURRENT))?;
        live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_path_buf(), Vec::new());
        Ok(OutputLog {
            dir: dir.to_path_buf(),
            file,
            current: 0,
            total: 0,
        })
    }

    /// Bytes written since the run started (not only those kept).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Keep `text` and hand it to the followers. Under the followers' lock, so someone who
    /// starts following reads either the file with this text or gets it live, never both.
    pub fn append(&mut self, text: &str) -> std::io::Result<()> {
        let mut map = live().lock().unwrap_or_else(|p| p.into_inner());
        if self.current >= KEEP_BYTES / 2 {
            std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            self.file = std::fs::File::create(self.dir.join(CURRENT))?;
            self.current = 0;
        }
        self.file.write_all(text.as_bytes())?;
        self.current += text.len() as u64;
        self.total += text.len() as u64;
        if let Some(f) = map.get_mut(&self.dir) {
            let shared: Arc<str> = Arc::from(text);
            f.retain(|tx| tx.try_send(shared.clone()).is_ok());
        }
        Ok(())
    }

    /// The run is over: followers see the end of their stream, the marker goes.
    pub fn finish(self) {
        live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.dir);
        let _ = std::fs::remove_file(self.dir.join(RUNNING));
    }
}

/// The kept output of `dir`, and, when a run of this process is still writing there, a
/// receiver of what it writes next (it closes when the run ends).
pub fn follow(
    dir: &Path,
    live_too: bool,
) -> std::io::Result<(String, Option<mpsc::Receiver<Arc<str>>>)> {
    let mut map = live().lock().unwrap_or_else(|p| p.into_inner());
    let text = kept(dir)?;
    let rx = match map.get_mut(dir) {
        Some(f) if live_too => {
            let (tx, rx) = mpsc::sync_channel(FOLLOWER_QUEUE);
            f.push(tx);
            Some(rx)
        }
        _ => None,
    };
    Ok((text, rx))
}

/// The kept output of `dir` (older segment first); empty when nothing was written.
pub fn kept(dir: &Path) -> std::io::Result<String> {
    let mut out = Vec::new();
    for name in [PREVIOUS, CURRENT] {
        match std::fs::read(dir.join(name)) {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether a run of this process is writing to `dir` now.
pub fn is_live(dir: &Path) -> bool {
    live()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(dir)
}

/// Whether a run was writing to `dir` when its process died (its marker is still there).
pub fn interrupted(dir: &Path) -> bool {
    dir.join(RUNNING).exists()
        && !live()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(dir)
}

/// Forget that a run was writing to `dir` (after reporting it failed).
pub fn clear_interrupted(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(RUNNING));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_part_and_followers_get_what_follows() {
        let d = std::env::temp_dir().join(format!("apiary-trace-output-{}", std::process::id()));
        let mut log = OutputLog::create(&d).unwrap();
        log.append("first\n").unwrap();
        let (text, rx) = follow(&d, true).unwrap();
        assert_eq!(text, "first\n");
        let rx = rx.expect("live while running");
        let line = "x".repeat(1023) + "\n";
        for _ in 0..2048 {
            log.append(&line).unwrap();
        }
        assert!(!interrupted(&d), "a live run is not interrupted");
        assert_eq!(log.total(), 6 + 2048 * 1024);
        log.finish();
        let got: usize = rx.iter().map(|t| t.len()).sum();
        assert_eq!(got, 2048 * 1024, "every later append, then the end");
        let k = kept(&d).unwrap();
        assert!(k.len() as u64 <= KEEP_BYTES && k.len() as u64 >= KEEP_BYTES / 2);
        assert!(!k.contains("first"), "the oldest output was dropped");
        assert!(!interrupted(&d));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_follower_that_falls_behind_is_dropped_not_waited_for() {
        let d = std::env::temp_dir().join(format!("apiary-trace-behind-{}", std::process::id()));
        let mut log = OutputLog::create(&d).unwrap();
        let (_, rx) = follow(&d, true).unwrap();
        let rx = rx.unwrap();
        for _ in 0..FOLLOWER_QUEUE + 10 {
            log.append("x\n").unwrap();
        }
        assert!(is_live(&d), "the run goes on");
        assert_eq!(rx.iter().count(), FOLLOWER_QUEUE, "then its queue ends");
        log.finish();
        assert!(!is_live(&d));
        let _ = std::fs::remove_dir_all(&d);
    }
}
