//! libbpf reports verifier logs and load diagnostics through one process-wide print callback.
//! apiary keeps them (instead of letting libbpf write to stderr) so that an error can show the
//! useful part of the log next to the program name.

use std::sync::Mutex;

static BUF: Mutex<String> = Mutex::new(String::new());
/// Serialises loads: the print callback is global, so two concurrent loads would mix logs.
pub(crate) static LOAD_LOCK: Mutex<()> = Mutex::new(());
const MAX: usize = 1 << 20;

fn callback(level: libbpf_rs::PrintLevel, msg: String) {
    if std::env::var_os("APIARY_LIBBPF_DEBUG").is_some() {
        eprint!("{msg}");
    }
    if matches!(level, libbpf_rs::PrintLevel::Debug) {
        return;
    }
    if let Ok(mut b) = BUF.lock() {
        if b.len() < MAX {
            b.push_str(&msg);
        }
    }
}

pub(crate) fn install() {
    let level = if std::env::var_os("APIARY_LIBBPF_DEBUG").is_some() {
        libbpf_rs::PrintLevel::Debug
    } else {
        libbpf_rs::PrintLevel::Info
    };
    libbpf_rs::set_print(Some((level, callback)));
}

pub(crate) fn take() -> String {
    match BUF.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(_) => String::new(),
    }
}

/// Pull the verifier log out of libbpf's messages and keep its useful tail: the verifier puts
/// the reason for a rejection at the end, after the instruction trace.
pub(crate) fn verifier_log(messages: &str, max_lines: usize) -> Option<String> {
    let start = messages.find("-- BEGIN PROG LOAD LOG --")?;
    let rest = &messages[start..];
    let body_start = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
    let end = rest.find("-- END PROG LOAD LOG --").unwrap_or(rest.len());
    let body = rest.get(body_start..end.max(body_start)).unwrap_or("");
    let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let skip = lines.len().saturating_sub(max_lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!(
            "... ({skip} earlier lines of the verifier log omitted)\n"
        ));
    }
    out.push_str(&lines[skip..].join("\n"));
    Some(out)
}

/// The last libbpf error line mentioning `needle`, used when there is no verifier log.
pub(crate) fn last_line_with(messages: &str, needle: &str) -> Option<String> {
    messages
        .lines()
        .rev()
        .find(|l| l.contains(needle))
        .map(|l| l.trim_start_matches("libbpf: ").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_tail() {
        let m = "libbpf: prog 'p': BPF program load failed: Permission denied\nlibbpf: prog 'p': -- BEGIN PROG LOAD LOG --\n0: (b7) r0 = 0\n1: (95) exit\nR0 !read_ok\n-- END PROG LOAD LOG --\nlibbpf: failed\n";
        assert_eq!(
            verifier_log(m, 10).unwrap(),
            "0: (b7) r0 = 0\n1: (95) exit\nR0 !read_ok"
        );
        let t = verifier_log(m, 1).unwrap();
        assert!(
            t.starts_with("... (2 earlier lines") && t.ends_with("R0 !read_ok"),
            "{t}"
        );
        assert!(verifier_log("nothing", 5).is_none());
    }
}
