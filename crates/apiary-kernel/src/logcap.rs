//! libbpf reports verifier logs and load diagnostics through one process-wide print callback.
//! apiary keeps them (instead of letting libbpf write to stderr) so that an error can show the
//! useful part of the log next to the program name.
//!
//! The callback is apiary's own rather than libbpf-rs's `set_print`: that one turns each message
//! into a `String` and panics on bytes that are not UTF-8 (a section or BTF name in a mutated
//! object is enough), and a panic inside a callback called from C aborts the process. Here the
//! message is formatted by the C library, converted lossily, and nothing can unwind out.
//!
//! libbpf calls the callback on the thread that called it, so each thread keeps its own
//! messages: loads on several threads at once (a restore of many programs) do not mix their
//! logs and need no lock between them.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    /// This thread's libbpf messages since the last `take`.
    static BUF: RefCell<String> = const { RefCell::new(String::new()) };
}
const MAX: usize = 1 << 20;
/// APIARY_LIBBPF_DEBUG, read once at install: the callback runs for every libbpf line.
static DEBUG: AtomicBool = AtomicBool::new(false);
/// Most libbpf lines fit here; longer ones (a whole verifier log is one message) are formatted
/// a second time into a buffer of their exact size.
const FIRST_TRY: usize = 1024;

extern "C" {
    // The libc function, declared with the va_list as the pointer it is at the ABI level on
    // x86_64 (a one-element array decays to a pointer) and aarch64 (a 32-byte struct is passed
    // by reference): bindgen's `va_list` types differ between the two, this does not.
    fn vsnprintf(buf: *mut c_char, size: usize, fmt: *const c_char, ap: *mut c_void) -> c_int;
}

/// The bytes of a `va_list` object: copying them is what C's `va_copy` does on these ABIs,
/// which is what a second formatting pass needs (the first one consumes its `va_list`).
#[cfg(target_arch = "x86_64")]
type VaListBytes = [u64; 3];
#[cfg(target_arch = "aarch64")]
type VaListBytes = [u64; 4];

/// The callback handed to libbpf. It must never unwind into C: everything it does is inside
/// `catch_unwind`, and what it calls does not panic by design (lossy UTF-8, poisoned locks
/// tolerated, stderr errors ignored).
unsafe extern "C" fn print(level: c_uint, fmt: *const c_char, ap: *mut c_void) -> c_int {
    let debug = DEBUG.load(Ordering::Relaxed);
    if level == libbpf_sys::LIBBPF_DEBUG && !debug {
        return 0;
    }
    if fmt.is_null() || ap.is_null() {
        return 0;
    }
    // SAFETY: libbpf passes a NUL-terminated printf format and the va_list of its arguments,
    // valid for the duration of this call.
    let bytes = std::panic::catch_unwind(|| unsafe { format(fmt, ap) });
    let Ok(bytes) = bytes else {
        return 0;
    };
    let _ = std::panic::catch_unwind(|| deliver(level, &bytes));
    0
}

/// Format one libbpf message with the C library's vsnprintf.
///
/// # Safety
/// `fmt` and `ap` must be the format string and va_list libbpf called the print callback with.
unsafe fn format(fmt: *const c_char, ap: *mut c_void) -> Vec<u8> {
    let mut first = [0u8; FIRST_TRY];
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let n = {
        // SAFETY: `ap` points at a live va_list of exactly this size on this architecture.
        let mut copy: VaListBytes = unsafe { std::ptr::read_unaligned(ap as *const VaListBytes) };
        // SAFETY: the buffer is FIRST_TRY bytes long; the copy is a valid va_list.
        unsafe {
            vsnprintf(
                first.as_mut_ptr().cast(),
                FIRST_TRY,
                fmt,
                (&mut copy as *mut VaListBytes).cast(),
            )
        }
    };
    // Elsewhere there is no portable va_copy: one pass, and a long message is cut short.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: the buffer is FIRST_TRY bytes long and `ap` is libbpf's va_list, used once.
    let n = unsafe { vsnprintf(first.as_mut_ptr().cast(), FIRST_TRY, fmt, ap) };
    let Ok(len) = usize::try_from(n) else {
        return b"(libbpf message that could not be formatted)\n".to_vec();
    };
    if len < FIRST_TRY {
        return first[..len].to_vec();
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mut full = vec![0u8; len + 1];
        // SAFETY: the buffer holds `len + 1` bytes; `ap` was not consumed (the first pass used
        // a copy).
        let m = unsafe { vsnprintf(full.as_mut_ptr().cast(), full.len(), fmt, ap) };
        full.truncate(usize::try_from(m).unwrap_or(0).min(len));
        full
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        first[..FIRST_TRY - 1].to_vec()
    }
}

fn deliver(level: c_uint, bytes: &[u8]) {
    let msg = String::from_utf8_lossy(bytes);
    if DEBUG.load(Ordering::Relaxed) {
        let _ = std::io::stderr().write_all(msg.as_bytes());
    }
    if level == libbpf_sys::LIBBPF_DEBUG {
        return;
    }
    // `try_with`/`try_borrow_mut`: during thread teardown, or re-entered, the message is dropped
    // rather than panicking.
    let _ = BUF.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            if b.len() < MAX {
                b.push_str(&msg);
            }
        }
    });
}

/// Install the callback (once per process; later calls do nothing).
pub(crate) fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_now);
}

fn install_now() {
    DEBUG.store(
        std::env::var_os("APIARY_LIBBPF_DEBUG").is_some(),
        Ordering::Relaxed,
    );
    type Raw = unsafe extern "C" fn(c_uint, *const c_char, *mut c_void) -> c_int;
    let ours: Raw = print;
    // SAFETY: the two function pointer types differ only in how the va_list parameter is
    // spelled; both are a pointer in the C ABI (see `vsnprintf` above). A function pointer is
    // never null, so the Option is `Some`.
    let cb = unsafe { std::mem::transmute::<Raw, libbpf_sys::libbpf_print_fn_t>(ours) };
    // SAFETY: libbpf_set_print only stores the pointer; `print` lives for the whole program.
    unsafe {
        libbpf_sys::libbpf_set_print(cb);
    }
}

/// This thread's messages since the last call.
pub(crate) fn take() -> String {
    BUF.with(|b| std::mem::take(&mut *b.borrow_mut()))
}

/// The verifier log inside libbpf's messages (between its BEGIN/END PROG LOAD LOG markers),
/// whole: the diagnosis reads all of it, the error keeps its tail.
pub(crate) fn verifier_log_body(messages: &str) -> Option<&str> {
    let start = messages.find("-- BEGIN PROG LOAD LOG --")?;
    let rest = &messages[start..];
    let body_start = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
    let end = rest.find("-- END PROG LOAD LOG --").unwrap_or(rest.len());
    let body = rest.get(body_start..end.max(body_start)).unwrap_or("");
    body.lines().any(|l| !l.trim().is_empty()).then_some(body)
}

/// Pull the verifier log out of libbpf's messages and keep its useful tail: the verifier puts
/// the reason for a rejection at the end, after the instruction trace.
#[cfg(test)]
pub(crate) fn verifier_log(messages: &str, max_lines: usize) -> Option<String> {
    let body = verifier_log_body(messages)?;
    Some(apiary_core::verifier::diagnose(body, max_lines).log_tail)
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

    extern "C" {
        // libbpf's own printf-style logger (internal, but linked in statically): the way to
        // hand the callback a real va_list from a test.
        fn libbpf_print(level: c_uint, fmt: *const c_char, ...);
    }

    /// What libbpf prints, through the installed callback, for `fmt` and one string argument.
    fn printed(level: c_uint, fmt: &std::ffi::CStr, arg: &std::ffi::CStr, n: c_int) -> String {
        install();
        take();
        // SAFETY: a printf format taking one string and one int, with both supplied.
        unsafe { libbpf_print(level, fmt.as_ptr(), arg.as_ptr(), n) };
        take()
    }

    #[test]
    fn non_utf8_message_is_kept_lossily() {
        let got = printed(
            libbpf_sys::LIBBPF_WARN,
            c"libbpf: elf: section '%s' (%d) is odd\n",
            c"\xff\xfe.text\xc3",
            7,
        );
        assert_eq!(
            got,
            "libbpf: elf: section '\u{FFFD}\u{FFFD}.text\u{FFFD}' (7) is odd\n"
        );
    }

    #[test]
    fn long_message_is_formatted_whole() {
        // Longer than the first buffer: a verifier log arrives as one message.
        let body = "x".repeat(FIRST_TRY * 5 + 3);
        let arg = std::ffi::CString::new(body.clone()).expect("no NUL");
        let got = printed(libbpf_sys::LIBBPF_INFO, c"log %s end %d\n", &arg, 42);
        assert_eq!(got, format!("log {body} end 42\n"));
    }

    #[test]
    fn debug_lines_are_dropped_unless_asked_for() {
        if std::env::var_os("APIARY_LIBBPF_DEBUG").is_some() {
            return;
        }
        let got = printed(libbpf_sys::LIBBPF_DEBUG, c"dbg %s %d\n", c"a", 1);
        assert_eq!(got, "");
    }

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
