//! A daemon no client can take down. Hostile objects (hundreds of deterministic mutations and
//! truncations of a real CO-RE object) are refused with a message or, when a mutation happens
//! to stay valid, loaded and unloaded, while the same daemon process keeps serving and its
//! store, bpffs and the kernel agree afterwards. A loader process that crashes mid-load costs
//! that one load, not the daemon; the next load works.

mod common;
mod grpc;

use apiary_api::pb;
use apiary_api::pb::apiary_client::ApiaryClient;
use common::daemon::{Daemon, DaemonOpts};
use common::*;
use grpc::{client, rt};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Mutex;
use tonic::transport::Channel;

/// The kernel checks count the `core` fixture's programs and maps by name, system-wide, and no
/// other suite loads it: the tests here that load it take turns.
static CORE_FIXTURE: Mutex<()> = Mutex::new(());

/// Deterministic pseudo-random numbers (splitmix64): the same mutations on every run, so a
/// failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// A section of the (64-bit little-endian) ELF object: where its header and contents are.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    header: usize,
    offset: usize,
    size: usize,
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}
fn u32_at(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}
fn u64_at(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
}

fn sections(obj: &[u8]) -> Vec<Section> {
    assert_eq!(
        &obj[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF fixture"
    );
    let shoff = u64_at(obj, 0x28);
    let shentsize = u16_at(obj, 0x3a);
    let shnum = u16_at(obj, 0x3c);
    let shstrndx = u16_at(obj, 0x3e);
    let hdr = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(obj, hdr(shstrndx) + 24);
    (0..shnum)
        .map(|i| {
            let h = hdr(i);
            let name_off = strtab + u32_at(obj, h);
            let end = obj[name_off..].iter().position(|b| *b == 0).unwrap_or(0);
            Section {
                name: String::from_utf8_lossy(&obj[name_off..name_off + end]).into_owned(),
                header: h,
                offset: u64_at(obj, h + 24),
                size: u64_at(obj, h + 32),
            }
        })
        .collect()
}

/// 300 damaged copies of `obj`, each with a label saying what was done.
fn mutations(obj: &[u8]) -> Vec<(String, Vec<u8>)> {
    let secs = sections(obj);
    let find = |n: &str| {
        secs.iter()
            .find(|s| s.name == n)
            .cloned()
            .unwrap_or_else(|| panic!("the fixture has no {n} section"))
    };
    let btf = find(".BTF");
    let ext = find(".BTF.ext");
    let strtab = find(".strtab");
    let mut rng = Rng(0x5eed_ab1e);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let interesting32: [u32; 9] = [
        0,
        1,
        2,
        0x7f,
        0x100,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
    ];

    // Truncations: at structure boundaries, then spread over the file.
    let shoff = u64_at(obj, 0x28);
    let mut cuts = vec![
        0,
        4,
        16,
        63,
        64,
        shoff,
        shoff + 64,
        shoff + 64 * 3,
        btf.offset,
        btf.offset + 8,
        btf.offset + 24,
        btf.offset + btf.size / 2,
        btf.offset + btf.size - 1,
        ext.offset + 10,
        ext.offset + ext.size / 2,
    ];
    while cuts.len() < 40 {
        cuts.push(rng.below(obj.len()));
    }
    for c in cuts {
        let c = c.min(obj.len() - 1);
        out.push((format!("truncate-{c}"), obj[..c].to_vec()));
    }
    // Bit flips anywhere.
    for _ in 0..50 {
        let mut m = obj.to_vec();
        let n = 1 + rng.below(4);
        let mut at = Vec::new();
        for _ in 0..n {
            let o = rng.below(m.len());
            m[o] ^= 1 << rng.below(8);
            at.push(format!("{o:#x}"));
        }
        out.push((format!("flip-{}", at.join("+")), m));
    }
    // Bit flips in the BTF.
    for _ in 0..50 {
        let mut m = obj.to_vec();
        let o = btf.offset + rng.below(btf.size);
        m[o] ^= 1 << rng.below(8);
        if rng.below(2) == 0 {
            let o2 = btf.offset + rng.below(btf.size);
            m[o2] ^= 1 << rng.below(8);
        }
        out.push((format!("btf-flip-{o:#x}"), m));
    }
    // BTF header fields: hdr_len, type_off, type_len, str_off, str_len (and magic/version/flags).
    for _ in 0..30 {
        let mut m = obj.to_vec();
        let field = rng.below(6);
        let (o, v) = if field == 0 {
            (btf.offset + rng.below(4), rng.next() as u8 as u32)
        } else {
            (
                btf.offset + 4 * field,
                rng.pick(&interesting32).wrapping_add(rng.below(3) as u32),
            )
        };
        if field == 0 {
            m[o] = v as u8;
        } else {
            m[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        out.push((format!("btf-header-{o:#x}={v:#x}"), m));
    }
    // BTF types: words overwritten (kinds, vlens, sizes, type ids, member offsets).
    let hdr_len = u32_at(obj, btf.offset + 4);
    let types = btf.offset + hdr_len + u32_at(obj, btf.offset + 8);
    let types_len = u32_at(obj, btf.offset + 12);
    for _ in 0..40 {
        let mut m = obj.to_vec();
        let o = types + (rng.below(types_len / 4) * 4);
        let v = match rng.below(3) {
            0 => rng.pick(&interesting32),
            1 => ((rng.below(32) as u32) << 24) | rng.below(0x10000) as u32,
            _ => rng.next() as u32,
        };
        m[o..o + 4].copy_from_slice(&v.to_le_bytes());
        out.push((format!("btf-type-{o:#x}={v:#x}"), m));
    }
    // BTF names that are not UTF-8 (what used to abort the daemon in libbpf-rs's callback).
    let strs = btf.offset + hdr_len + u32_at(obj, btf.offset + 16);
    let strs_len = u32_at(obj, btf.offset + 20);
    for _ in 0..20 {
        let mut m = obj.to_vec();
        let o = strs + 1 + rng.below(strs_len.saturating_sub(2));
        let n = 1 + rng.below(3);
        for k in 0..n {
            if o + k < strs + strs_len - 1 && m[o + k] != 0 {
                m[o + k] = rng.pick(&[0xff, 0xfe, 0x80, 0xc3]);
            }
        }
        out.push((format!("btf-name-{o:#x}"), m));
    }
    // BTF.ext: the CO-RE relocation, line and function info records.
    for _ in 0..30 {
        let mut m = obj.to_vec();
        let o = ext.offset + (rng.below(ext.size / 4) * 4);
        let v = if rng.below(2) == 0 {
            rng.pick(&interesting32)
        } else {
            rng.next() as u32
        };
        m[o..o + 4].copy_from_slice(&v.to_le_bytes());
        out.push((format!("btf-ext-{o:#x}={v:#x}"), m));
    }
    // Section headers: type, offset, size, link, info, entsize, name.
    let fields: [(usize, usize); 7] = [(4, 4), (24, 8), (32, 8), (40, 4), (44, 4), (56, 8), (0, 4)];
    for _ in 0..30 {
        let mut m = obj.to_vec();
        let s = &secs[1 + rng.below(secs.len() - 1)];
        let (off, width) = rng.pick(&fields);
        let v = rng.pick(&interesting32) as u64 + rng.below(2) as u64;
        let o = s.header + off;
        m[o..o + width].copy_from_slice(&v.to_le_bytes()[..width]);
        out.push((format!("shdr-{}+{off}={v:#x}", s.name), m));
    }
    // Symbol and section names that are not UTF-8.
    for _ in 0..10 {
        let mut m = obj.to_vec();
        let o = strtab.offset + 1 + rng.below(strtab.size - 2);
        if m[o] != 0 {
            m[o] = 0xff;
        }
        out.push((format!("strtab-{o:#x}"), m));
    }
    assert_eq!(out.len(), 300);
    out
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z')
}

/// Kernel ids of the programs (or maps) with this name, system-wide.
fn kernel_ids(kind: &str, name: &str) -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", kind, "show"])
        .output()
        .expect("bpftool");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(vec![]));
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"].as_str() == Some(name))
                .filter_map(|p| p["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// The daemon's loader process: its child running `apiary __loader-worker`.
fn loader_pid(daemon: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == daemon
            && cmdline
                .split(|b| *b == 0)
                .any(|a| a == apiary_kernel::worker::WORKER_ARG.as_bytes())
            && alive(pid))
        .then_some(pid)
    })
}

fn bytes_request(name: &str, bytes: Vec<u8>) -> pb::LoadRequest {
    pb::LoadRequest {
        object: Some(pb::ObjectSource {
            object: Some(pb::object_source::Object::Bytes(bytes)),
            name: name.to_string(),
        }),
        ..Default::default()
    }
}

async fn managed_ids(c: &mut ApiaryClient<Channel>) -> Vec<i64> {
    c.list_programs(pb::ListProgramsRequest::default())
        .await
        .expect("the daemon answers a list")
        .into_inner()
        .programs
        .iter()
        .filter_map(|p| p.id)
        .collect()
}

#[test]
fn hostile_objects_never_take_the_daemon_down() {
    if !privileged() {
        return;
    }
    let _turn = CORE_FIXTURE.lock().unwrap_or_else(|p| p.into_inner());
    let fixture = fixture("core");
    let obj = std::fs::read(&fixture).expect("read the CO-RE fixture");
    let cases = mutations(&obj);
    if let Ok(dir) = std::env::var("APIARY_HOSTILE_SAVE") {
        // To replay them by hand (`apiary load file --path DIR/N-LABEL.o`).
        std::fs::create_dir_all(&dir).expect("save dir");
        for (i, (label, m)) in cases.iter().enumerate() {
            std::fs::write(format!("{dir}/{i:03}-{label}.o"), m).expect("save");
        }
    }
    let progs_before = kernel_ids("prog", "core_getppid");
    let maps_before = kernel_ids("map", "core_counts");

    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    let pid = d.pid();
    let (mut refused, mut loaded, mut crashed) = (0, 0, 0);
    rt().block_on(async {
        let mut c = client(&d).await;
        // The unmutated object loads: the mutations start from something valid.
        let ok = c
            .load(bytes_request("hostile-original", obj.clone()))
            .await
            .expect("the fixture itself loads")
            .into_inner();
        let ids: Vec<i64> = ok.programs.iter().filter_map(|p| p.id).collect();
        assert_eq!(ids.len(), 1);
        c.unload(pb::UnloadRequest {
            program_ids: ids,
            force: true,
        })
        .await
        .expect("unload");

        for (batch, chunk) in cases.chunks(50).enumerate() {
            for (i, (label, bytes)) in chunk.iter().enumerate() {
                let name = format!("hostile-{}-{label}", batch * 50 + i);
                match c.load(bytes_request(&name, bytes.clone())).await {
                    Ok(r) => {
                        let ids: Vec<i64> = r
                            .into_inner()
                            .programs
                            .iter()
                            .filter_map(|p| p.id)
                            .collect();
                        assert!(!ids.is_empty(), "{name}: loaded, but no program came back");
                        c.unload(pb::UnloadRequest {
                            program_ids: ids,
                            force: true,
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{name}: unload: {e}"));
                        loaded += 1;
                    }
                    Err(status) => {
                        let msg = status.message().trim();
                        assert!(
                            !msg.is_empty(),
                            "{name}: refused without a message ({status:?})"
                        );
                        assert!(!msg.contains("panicked"), "{name}: {msg}");
                        if msg.contains("loader process") {
                            crashed += 1;
                        }
                        refused += 1;
                    }
                }
            }
            // Still the same process, still serving, and nothing of the batch is left.
            assert!(
                alive(pid),
                "the daemon died during batch {batch}:\n{}",
                d.log_text()
            );
            assert_eq!(
                managed_ids(&mut c).await,
                Vec::<i64>::new(),
                "after batch {batch}"
            );
        }
    });
    eprintln!(
        "{} hostile objects: {refused} refused ({crashed} of them ended the loader process), \
         {loaded} still valid and loaded then unloaded",
        cases.len()
    );
    assert_eq!(refused + loaded, cases.len());
    assert!(refused > cases.len() / 2, "most mutations must be refused");
    assert_eq!(d.pid(), pid);
    assert!(alive(pid));

    // Store, bpffs and kernel agree: nothing recorded, nothing pinned, nothing of these loads
    // alive in the kernel (the kernel frees unpinned objects shortly after their last fd).
    assert_eq!(a.pins(), Vec::<std::path::PathBuf>::new(), "leftover pins");
    assert!(
        eventually(10, || kernel_ids("prog", "core_getppid") == progs_before),
        "programs of the hostile loads leaked: {:?} (before: {progs_before:?})",
        kernel_ids("prog", "core_getppid")
    );
    assert!(
        eventually(10, || kernel_ids("map", "core_counts") == maps_before),
        "maps of the hostile loads leaked: {:?} (before: {maps_before:?})",
        kernel_ids("map", "core_counts")
    );
}

#[test]
fn a_crashing_loader_costs_one_load_not_the_daemon() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let marker = unique("crash-me-");
    let d = Daemon::start(
        a.state.path(),
        &a.bpffs,
        &DaemonOpts {
            env: vec![(apiary_kernel::worker::TEST_CRASH_ENV.into(), marker.clone())],
            ..Default::default()
        },
    );
    let pid = d.pid();
    let _turn = CORE_FIXTURE.lock().unwrap_or_else(|p| p.into_inner());
    let obj = std::fs::read(fixture("core")).expect("fixture");
    let before = kernel_ids("prog", "core_getppid");
    rt().block_on(async {
        let mut c = client(&d).await;
        // The loader process loads the program, then dies before handing it over.
        let e = c
            .load(bytes_request(&format!("{marker}.o"), obj.clone()))
            .await
            .expect_err("the loader process crashed");
        assert_eq!(
            e.message(),
            format!(
                "the loader process crashed with SIGSEGV while loading {marker}.o; nothing was loaded"
            )
        );
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(alive(pid), "the daemon survived:\n{}", d.log_text());
        assert!(managed_ids(&mut c).await.is_empty(), "nothing was recorded");

        // The next load gets a new loader process and works.
        let r = c
            .load(bytes_request("after-the-crash.o", obj.clone()))
            .await
            .expect("a load after the crash works")
            .into_inner();
        assert_eq!(r.programs.len(), 1);
        let kid = r.programs[0].kernel_id as u64;
        assert_eq!(managed_ids(&mut c).await.len(), 1);
        // Only the program of the second load exists: the crashed load's died with its process.
        assert!(
            eventually(10, || {
                let now = kernel_ids("prog", "core_getppid");
                now.difference(&before).copied().collect::<Vec<_>>() == vec![kid]
            }),
            "kernel has {:?}, expected only {kid} besides {before:?}",
            kernel_ids("prog", "core_getppid")
        );
    });
    assert_eq!(d.pid(), pid);
    assert!(alive(pid));
    assert!(
        d.log_text().contains("crashed with SIGSEGV"),
        "{}",
        d.log_text()
    );
}

/// Errors come back from the loader process as the same messages an in-process load gives,
/// and a loader process killed while idle is replaced at the next load.
#[test]
fn loader_errors_read_as_in_process_ones_and_a_killed_loader_is_replaced() {
    if !privileged() {
        return;
    }
    let a = Apiary::new();
    let d = Daemon::start(a.state.path(), &a.bpffs, &DaemonOpts::default());
    // Hex kernel pointers in a verifier log differ from load to load.
    let mask = |s: &str| -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("0x") {
            out.push_str(&rest[..i + 2]);
            rest = rest[i + 2..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
            out.push('…');
        }
        out.push_str(rest);
        out
    };
    let run = |endpoint: Option<&str>, args: &[&str]| -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiary"));
        cmd.env("APIARY_STATE_DIR", a.state.path())
            .env("APIARY_BPFFS", &a.bpffs)
            .env_remove("APIARY_ENDPOINT");
        if let Some(e) = endpoint {
            cmd.arg("--endpoint").arg(e);
        }
        let out = cmd.args(args).output().expect("run apiary");
        assert!(!out.status.success(), "{args:?} should fail");
        mask(&String::from_utf8_lossy(&out.stderr))
    };
    let bad = fixture("bad_verifier");
    let refused = fixture("refused");
    let net = fixture("net");
    // Damage that apiary's own ELF and BTF reading lets through, for libbpf to refuse: a map
    // definition field whose BTF name is not UTF-8 (libbpf-rs's callback used to abort on the
    // message naming it), and a CO-RE field the kernel does not have.
    let core = std::fs::read(fixture("core")).expect("fixture");
    let btf = sections(&core)
        .into_iter()
        .find(|s| s.name == ".BTF")
        .expect(".BTF");
    let in_btf = |needle: &[u8]| {
        core[btf.offset..btf.offset + btf.size]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| btf.offset + i)
            .unwrap_or_else(|| panic!("{needle:?} is not in the BTF strings"))
    };
    let mut bad_name = core.clone();
    bad_name[in_btf(b"\0type\0") + 1] = 0xff;
    let mut bad_field = core.clone();
    bad_field[in_btf(b"\0real_parent\0") + 11] = b'X';
    let bad_name_path = a.state.path().join("bad-name.o");
    let bad_field_path = a.state.path().join("bad-field.o");
    std::fs::write(&bad_name_path, &bad_name).expect("write");
    std::fs::write(&bad_field_path, &bad_field).expect("write");
    let cases: Vec<Vec<&str>> = vec![
        vec!["load", "file", "--path", bad.to_str().unwrap()],
        vec![
            "load",
            "file",
            "--path",
            refused.to_str().unwrap(),
            "--programs",
            "fentry:on_fentry",
        ],
        vec!["load", "file", "--path", net.to_str().unwrap()],
        vec![
            "load",
            "file",
            "--path",
            net.to_str().unwrap(),
            "--programs",
            "xdp:nope",
        ],
        vec!["load", "file", "--path", bad_name_path.to_str().unwrap()],
        vec!["load", "file", "--path", bad_field_path.to_str().unwrap()],
    ];
    let expected = [
        "the verifier rejected program \"out_of_bounds\"",
        "BPF trampolines",
        "contains 4 programs",
        "program \"nope\" not found",
        "unknown field '\u{FFFD}ype'",
        "struct task_struct.real_parenX",
    ];
    for (args, want) in cases.iter().zip(expected) {
        let local = run(None, args);
        let remote = run(Some(&d.endpoint()), args);
        assert!(local.starts_with("error: ") && local.len() > 10, "{local}");
        assert_eq!(remote, local, "{args:?}");
        assert!(!local.contains("loader process"), "{local}");
        assert!(
            local.contains(want),
            "{args:?}: expected {want:?} in {local}"
        );
    }

    // Kill the idle loader process: the next load starts another and works.
    let m = fixture("minimal");
    a.ok(&[
        "--endpoint",
        &d.endpoint(),
        "load",
        "file",
        "--path",
        m.to_str().unwrap(),
    ]);
    let first = loader_pid(d.pid()).expect("the daemon has a loader process after a load");
    // SAFETY: signalling the loader process this test found under its own daemon.
    unsafe {
        libc::kill(first as i32, libc::SIGKILL);
    }
    assert!(eventually(10, || !alive(first)));
    a.ok(&[
        "--endpoint",
        &d.endpoint(),
        "load",
        "file",
        "--path",
        m.to_str().unwrap(),
    ]);
    let second = loader_pid(d.pid()).expect("a new loader process");
    assert_ne!(first, second);
    let listed: Value = serde_json::from_str(&a.ok(&[
        "--endpoint",
        &d.endpoint(),
        "list",
        "programs",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
}
