//! `APIARY_TIMING=1`: where one command's time goes. Phases are marked where they end; the
//! breakdown goes to stderr when the command ends. Without the variable a mark is one relaxed
//! atomic load.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// 0: not yet read, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);
static MARKS: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("APIARY_TIMING").is_some_and(|v| v == "1");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        s => s == 2,
    }
}

/// The phase named `phase` ends now.
pub fn mark(phase: &'static str) {
    if enabled() {
        MARKS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((phase, Instant::now()));
    }
}

/// The breakdown since the first mark, one line: `timing: args 0.10 ms, store 0.85 ms, ... =
/// total`. Empty when timing is off or nothing was marked.
pub fn report() -> String {
    if !enabled() {
        return String::new();
    }
    let marks = MARKS.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(first), Some(last)) = (marks.first(), marks.last()) else {
        return String::new();
    };
    let parts: Vec<String> = marks
        .windows(2)
        .map(|w| {
            format!(
                "{} {:.2} ms",
                w[1].0,
                (w[1].1 - w[0].1).as_secs_f64() * 1000.0
            )
        })
        .collect();
    format!(
        "timing: {} = {:.2} ms",
        parts.join(", "),
        (last.1 - first.1).as_secs_f64() * 1000.0
    )
}
