//! `apiary build` and `apiary run prog.bpf.c`: a C source with a counter map and a ring buffer
//! whose event struct is declared in `prog.h` compiles against a vmlinux.h from the running
//! kernel's BTF and libbpf's headers carried by the binary; the package is small and its events
//! decode by field name though its DWARF is stripped; build failures say what to do.

mod common;

use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const HEADER: &str = r#"#ifndef PROG_H
#define PROG_H
/* struct not_the_event { int x; }; -- comments do not count */
struct event {
    int pid;
    int ppid;
    unsigned long long count;
    char comm[16];
};
#endif
"#;

/// CO-RE (vmlinux.h, BPF_CORE_READ), a counter map and a ring buffer whose record type only a
/// local variable uses: clang leaves it out of BTF, so only DWARF (and the package) has it.
const SOURCE: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "prog.h"
#include "extra.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    __u32 k = COUNTER_KEY;
    __u64 *c = bpf_map_lookup_elem(&counts, &k);
    if (!c)
        return 0;
    __u64 n = __sync_fetch_and_add(c, EXTRA_STEP) + EXTRA_STEP;
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = BPF_CORE_READ(t, real_parent, tgid);
    e->count = n;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
"#;

/// A source tree: `prog.bpf.c` and `prog.h`, `inc/extra.h` for `-I`, and a cache directory.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(source: &str) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("prog.bpf.c"), source).unwrap();
        std::fs::write(dir.path().join("prog.h"), HEADER).unwrap();
        std::fs::create_dir(dir.path().join("inc")).unwrap();
        std::fs::write(dir.path().join("inc/extra.h"), "#define EXTRA_STEP 1\n").unwrap();
        Tree { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn s(&self, p: &str) -> String {
        self.path(p).display().to_string()
    }

    /// `apiary ARGS` with this tree's cache directory.
    fn cmd(&self, a: &Apiary) -> std::process::Command {
        let mut c = a.cmd();
        c.env("APIARY_CACHE_DIR", self.path("cache"));
        c
    }

    /// The flags the source needs: `-I inc -D COUNTER_KEY=0`.
    fn flags(&self) -> Vec<String> {
        vec![
            "-I".into(),
            self.s("inc"),
            "-D".into(),
            "COUNTER_KEY=0".into(),
        ]
    }
}

fn run(c: &mut std::process::Command) -> Run {
    Run::from(c.output().expect("run apiary"))
}

#[test]
fn build_writes_an_object_and_a_small_package_that_keeps_its_event_type() {
    let a = Apiary::new();
    let t = Tree::new(SOURCE);
    let out = t.path("out");
    let r = run(t
        .cmd(&a)
        .arg("build")
        .arg(t.path("prog.bpf.c"))
        .args(t.flags())
        .args(["-o", out.to_str().unwrap()]));
    assert!(r.ok, "build failed: {}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("event type from the header next to the source: struct event"),
        "{}",
        r.stderr
    );
    // vmlinux.h and libbpf's headers were written to the cache, keyed by content.
    let vmlinux: Vec<PathBuf> = std::fs::read_dir(t.path("cache/vmlinux"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("vmlinux.h"))
        .collect();
    assert_eq!(vmlinux.len(), 1);
    let text = std::fs::read_to_string(&vmlinux[0]).unwrap();
    assert!(text.contains("struct task_struct {"), "a real vmlinux.h");

    let object = std::fs::read(out.join("prog.bpf.o")).unwrap();
    assert!(object.starts_with(b"\x7fELF"));
    let pkg_text = std::fs::read_to_string(out.join("prog.package.json")).unwrap();
    let p: Value = serde_json::from_str(&pkg_text).unwrap();
    assert_eq!(p["event_types"]["events"], "struct event", "{p}");
    assert_eq!(
        p["event_type_defs"]["events"]["types"][0]["Struct"]["name"], "event",
        "the package carries the struct only DWARF had: {}",
        p["event_type_defs"]
    );
    let (size, full) = (
        p["size"].as_u64().unwrap(),
        p["size_with_debug"].as_u64().unwrap(),
    );
    assert_eq!(full as usize, object.len());
    assert!(size * 4 < full, "DWARF stripped: {size} of {full} bytes");
    assert!(
        pkg_text.len() <= 32 * 1024,
        "a CO-RE tool's package is tens of kB: {} bytes",
        pkg_text.len()
    );
    let programs: Vec<&str> = p["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(programs, ["on_getppid"]);
    // inspect of the package names the event type the stripped object no longer holds.
    let v = a.json(&["inspect", out.join("prog.package.json").to_str().unwrap()]);
    assert_eq!(v["event_types"]["events"], "struct event", "{v}");
}

#[test]
fn run_of_a_c_source_builds_it_and_decodes_events_by_field_name() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let t = Tree::new(SOURCE);
    let mut args = vec!["run".to_string(), t.s("prog.bpf.c")];
    args.extend(t.flags());
    args.extend(
        ["-o", "json", "--duration", "60s", "--dump-map", "counts"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut child = t
        .cmd(&a)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn run");
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut notes = Vec::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("apiary run exited early: {notes:?}");
        }
        notes.push(line.trim_end().to_string());
        if line.starts_with("running") {
            break;
        }
    }
    assert!(
        notes.iter().any(|n| n
            .contains("events from ring buffer events decoded as struct event (from the package")),
        "{notes:?}"
    );
    // Events arrive on a reader thread; getppid() is called until ours show up.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let me = std::process::id() as i64;
    let mut ours: Vec<Value> = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while ours.len() < 3 && Instant::now() < end {
        // SAFETY: getppid has no preconditions.
        unsafe {
            libc::getppid();
        }
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            if v["pid"] == me {
                ours.push(v);
            }
        }
    }
    // SAFETY: signalling our own child, as Ctrl-C does.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success(), "run exits 0 on Ctrl-C");
    reader.join().unwrap();
    let rest: Vec<Value> = rx
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert!(ours.len() >= 3, "events from this process: {ours:?}");
    let parent = std::os::unix::process::parent_id() as i64;
    for e in &ours {
        assert_eq!(e["ppid"], parent, "CO-RE read of real_parent->tgid: {e}");
        assert!(e["count"].as_u64().unwrap() >= 1, "{e}");
        assert!(e["comm"].is_string(), "{e}");
    }
    // The counter map's last dump counts at least every event seen.
    let last = rest
        .iter()
        .rev()
        .find(|v| v["_map"] == "counts")
        .unwrap_or_else(|| panic!("a final dump of counts: {rest:?}"));
    let counted = last["entries"][0]["value"].as_u64().unwrap();
    let max_seen = ours
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(counted >= max_seen, "counts {counted} >= {max_seen}");
}

fn exit(r: &Run) -> i32 {
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.code.expect("exited")
}

#[test]
fn build_errors_say_what_went_wrong() {
    let a = Apiary::new();
    let t = Tree::new(SOURCE);
    // No such file.
    let r = run(t.cmd(&a).args(["build", &t.s("nosuch.bpf.c")]));
    assert_eq!(exit(&r), 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot read") && r.stderr.contains("nosuch.bpf.c"),
        "{}",
        r.stderr
    );

    // A compile error: clang's own message, with the line, and exit status 2.
    std::fs::write(
        t.path("bad.bpf.c"),
        "#include \"vmlinux.h\"\nint f(void) { return undeclared_thing; }\n",
    )
    .unwrap();
    let r = run(t
        .cmd(&a)
        .args(["build", &t.s("bad.bpf.c"), "-o", &t.s("out")]));
    assert_eq!(exit(&r), 2, "{}", r.stderr);
    assert!(r.stderr.contains("clang could not compile"), "{}", r.stderr);
    assert!(
        r.stderr.contains("bad.bpf.c:2:") && r.stderr.contains("undeclared_thing"),
        "clang's message: {}",
        r.stderr
    );
    // run of a source that does not compile fails the same way, before loading anything.
    let r = run(t
        .cmd(&a)
        .args(["run", &t.s("bad.bpf.c"), "--duration", "1s"]));
    assert_eq!(exit(&r), 2, "{}", r.stderr);
    assert!(r.stderr.contains("undeclared_thing"), "{}", r.stderr);

    // Without -D the source's macro is missing: that too is clang's message.
    let r = run(t
        .cmd(&a)
        .args(["build", &t.s("prog.bpf.c"), "-I", &t.s("inc")]));
    assert_eq!(exit(&r), 2, "{}", r.stderr);
    assert!(r.stderr.contains("COUNTER_KEY"), "{}", r.stderr);

    // No clang on PATH: the error names the package to install.
    let empty = tempfile::tempdir().unwrap();
    let r = run(t
        .cmd(&a)
        .env("PATH", empty.path())
        .env_remove("CLANG")
        .args(["build", &t.s("prog.bpf.c")]));
    assert_eq!(exit(&r), 6, "{}", r.stderr);
    assert!(
        r.stderr.contains("clang not found") && r.stderr.contains("apt-get install clang"),
        "{}",
        r.stderr
    );

    // No bpftool (clang present): a source that includes vmlinux.h says to install it.
    let only_clang = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(which("clang"), only_clang.path().join("clang")).unwrap();
    let r = run(t
        .cmd(&a)
        .env("PATH", only_clang.path())
        .env("APIARY_CACHE_DIR", t.path("fresh-cache"))
        .env_remove("CLANG")
        .args(["build", &t.s("prog.bpf.c"), "-o", &t.s("out2")])
        .args(t.flags()));
    assert_eq!(exit(&r), 6, "{}", r.stderr);
    assert!(r.stderr.contains("apt-get install bpftool"), "{}", r.stderr);

    // A BTF file that does not exist.
    let r = run(t
        .cmd(&a)
        .args(["build", &t.s("prog.bpf.c"), "--btf", &t.s("nosuch.btf")]));
    assert_eq!(exit(&r), 2, "{}", r.stderr);
    assert!(r.stderr.contains("nosuch.btf"), "{}", r.stderr);
}

/// An explicit BTF file gives the same header as the running kernel's.
#[test]
fn build_with_a_btf_file() {
    let a = Apiary::new();
    let t = Tree::new(SOURCE);
    let r = run(t
        .cmd(&a)
        .args([
            "build",
            &t.s("prog.bpf.c"),
            "--btf",
            "/sys/kernel/btf/vmlinux",
        ])
        .args(t.flags())
        .args(["-o", &t.s("out")]));
    assert!(r.ok, "{}", r.stderr);
    assert!(t.path("out/prog.package.json").is_file());
}

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(tool))
}
