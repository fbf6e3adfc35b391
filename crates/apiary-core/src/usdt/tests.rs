use super::*;

/// One `.note.stapsdt` note as an assembler lays it out (name and desc padded to 4 bytes).
fn note_bytes(owner: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(owner.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(owner);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out.extend_from_slice(desc);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

fn desc(pc: u64, base: u64, sema: u64, provider: &str, name: &str, args: &str) -> Vec<u8> {
    let mut d = Vec::new();
    for a in [pc, base, sema] {
        d.extend_from_slice(&a.to_le_bytes());
    }
    for s in [provider, name, args] {
        d.extend_from_slice(s.as_bytes());
        d.push(0);
    }
    d
}

#[test]
fn notes_are_read_and_foreign_ones_skipped() {
    let mut data = note_bytes(
        b"stapsdt\0",
        3,
        &desc(
            0x1178,
            0x2018,
            0x4028,
            "apiary",
            "hit",
            "-4@-20(%rbp) -8@-8(%rbp)",
        ),
    );
    // A GNU build-id note in the same section is not a probe.
    data.extend(note_bytes(b"GNU\0", 3, &[1, 2, 3, 4]));
    data.extend(note_bytes(
        b"stapsdt\0",
        3,
        &desc(0x2000, 0, 0, "libc", "setjmp", ":"),
    ));
    let notes = parse_notes(&data).unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(
        notes[0],
        Note {
            provider: "apiary".into(),
            name: "hit".into(),
            pc: 0x1178,
            base: 0x2018,
            semaphore: 0x4028,
            args: "-4@-20(%rbp) -8@-8(%rbp)".into(),
        }
    );
    // Old sdt.h wrote ":" for no arguments.
    assert_eq!(notes[1].args, "");
}

#[test]
fn malformed_notes_are_errors_not_panics() {
    let good = note_bytes(b"stapsdt\0", 3, &desc(1, 2, 3, "p", "n", ""));
    for cut in 1..good.len() {
        // Every truncation either parses (cut in padding) or names the note.
        if let Err(e) = parse_notes(&good[..cut]) {
            assert!(matches!(e, UsdtError::BadNote { index: 0, .. }), "{e}");
        }
    }
    let mut no_nul = desc(1, 2, 3, "p", "n", "");
    no_nul.pop();
    let e = parse_notes(&note_bytes(b"stapsdt\0", 3, &no_nul)).unwrap_err();
    assert!(e.to_string().contains("not NUL-terminated"), "{e}");
    let e = parse_notes(&note_bytes(b"stapsdt\0", 3, &desc(1, 2, 3, "p", "", ""))).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = parse_notes(&note_bytes(b"stapsdt\0", 3, &[0; 20])).unwrap_err();
    assert!(e.to_string().contains("three addresses"), "{e}");
}

#[test]
fn argument_forms() {
    let a = parse_arg("-4@%eax").unwrap();
    assert_eq!(
        (a.kind, a.reg_off, a.signed, a.bitshift),
        (ArgKind::Reg, 80, true, 32)
    );
    let a = parse_arg("-4@%edi").unwrap();
    assert_eq!((a.kind, a.reg_off), (ArgKind::Reg, 112));
    let a = parse_arg("8@-8(%rbp)").unwrap();
    assert_eq!(
        (a.kind, a.val_off as i64, a.reg_off, a.signed, a.bitshift),
        (ArgKind::RegDeref, -8, 32, false, 0)
    );
    let a = parse_arg("8@$5").unwrap();
    assert_eq!((a.kind, a.val_off, a.reg_off), (ArgKind::Const, 5, 0));
    let a = parse_arg("-4@$-9").unwrap();
    assert_eq!(a.val_off as i64, -9);
    let a = parse_arg("1@(%rsp)").unwrap();
    assert_eq!(
        (a.kind, a.val_off, a.reg_off, a.bitshift),
        (ArgKind::RegDeref, 0, 152, 56)
    );
    let a = parse_arg("-2@%cx").unwrap();
    assert_eq!((a.reg_off, a.bitshift), (88, 48));
    let a = parse_arg("-1@%sil").unwrap();
    assert_eq!(a.reg_off, 104);
    let a = parse_arg("8@%r10").unwrap();
    assert_eq!(a.reg_off, 56);
    let a = parse_arg("-1@-96(%rbp,%rax,8)").unwrap();
    assert_eq!(
        (
            a.kind,
            a.val_off as i64,
            a.reg_off,
            a.idx_reg_off,
            a.scale_shift
        ),
        (ArgKind::Sib, -96, 32, 80, 3)
    );
    let a = parse_arg("4@(%rbx,%rcx)").unwrap();
    assert_eq!(
        (a.kind, a.idx_reg_off, a.scale_shift),
        (ArgKind::Sib, 88, 0)
    );
}

#[test]
fn unsupported_arguments_say_why() {
    for (spec, why) in [
        ("3@%eax", "expected 1, 2, 4 or 8"),
        ("8@%xmm0", "unknown x86-64 register %xmm0"),
        ("8@counter(%rip)", "symbolic operands"),
        ("4@-4(%rbp,%rax,3)", "index scale 3"),
        ("%eax", "SIZE@LOCATION"),
        ("4@*%eax", "unsupported location"),
        ("4@-4(%rbp", "unbalanced"),
    ] {
        let e = parse_arg(spec).unwrap_err();
        assert!(e.contains(why), "{spec}: {e}");
    }
    let e = Spec::parse("p:n", "-4@%eax 8@%bogus").unwrap_err();
    assert_eq!(
        e.to_string(),
        "USDT probe p:n: argument #1 \"8@%bogus\": unknown x86-64 register %bogus"
    );
    let many = vec!["8@%rax"; 13].join(" ");
    assert!(matches!(
        Spec::parse("p:n", &many),
        Err(UsdtError::TooManyArgs { count: 13, .. })
    ));
}

#[test]
fn spec_bytes_match_usdt_bpf_h() {
    // The bytes clang gives struct __bpf_usdt_arg_spec (libbpf 1.7) for arg_type = 3,
    // idx_reg_off = 0xabc, scale_bitshift = 0xd, reg_off = 0x1234, arg_signed = 1,
    // arg_bitshift = 0x38 and val_off = 0x0102030405060708, checked with a C program.
    let arg = ArgSpec {
        kind: ArgKind::Sib,
        val_off: 0x0102030405060708,
        reg_off: 0x1234,
        idx_reg_off: 0xabc,
        scale_shift: 0xd,
        signed: true,
        bitshift: 0x38,
    };
    let spec = Spec {
        args: vec![arg, parse_arg("-4@%eax").unwrap()],
        cookie: 0x1122334455667788,
    };
    let b = spec.encode(SpecLayout::V17).unwrap();
    assert_eq!(b.len(), 304);
    assert_eq!(
        &b[..24],
        &[8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0xbc, 0xda, 0, 0, 0x34, 0x12, 1, 0x38, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        &b[24..48],
        &[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 80, 0, 1, 32, 0, 0, 0, 0, 0, 0]
    );
    assert!(b[48..288].iter().all(|x| *x == 0));
    assert_eq!(&b[288..296], &0x1122334455667788u64.to_le_bytes());
    assert_eq!(&b[296..298], &2i16.to_le_bytes());

    let legacy = Spec {
        args: vec![parse_arg("8@-8(%rbp)").unwrap()],
        cookie: 7,
    };
    let b = legacy.encode(SpecLayout::Legacy).unwrap();
    assert_eq!(b.len(), 208);
    assert_eq!(
        &b[..16],
        &[0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 32, 0, 0, 0]
    );
    assert_eq!(&b[192..200], &7u64.to_le_bytes());
    assert_eq!(&b[200..202], &1i16.to_le_bytes());
    assert!(spec
        .encode(SpecLayout::Legacy)
        .unwrap_err()
        .contains("libbpf 1.7"));
    assert_eq!(SpecLayout::from_value_size(304), Some(SpecLayout::V17));
    assert_eq!(SpecLayout::from_value_size(208), Some(SpecLayout::Legacy));
    assert_eq!(SpecLayout::from_value_size(100), None);
}

fn note(pc: u64, base: u64, sema: u64, name: &str, args: &str) -> Note {
    Note {
        provider: "app".into(),
        name: name.into(),
        pc,
        base,
        semaphore: sema,
        args: args.into(),
    }
}

/// A non-PIE executable's layout: text loaded at 0x401000 from file offset 0x1000, data at
/// 0x404000 from 0x3000.
fn exec_segments() -> Vec<Segment> {
    vec![
        Segment {
            vaddr: 0x400000,
            memsz: 0x800,
            offset: 0,
            exec: false,
        },
        Segment {
            vaddr: 0x401000,
            memsz: 0x2000,
            offset: 0x1000,
            exec: true,
        },
        Segment {
            vaddr: 0x404df0,
            memsz: 0x400,
            offset: 0x3df0,
            exec: false,
        },
    ]
}

#[test]
fn sites_become_file_offsets() {
    let bin = UsdtBinary {
        machine: EM_X86_64,
        notes: vec![
            note(0x401234, 0x402018, 0x405028, "hit", "-4@%edi 8@$5"),
            note(0x401300, 0x402018, 0x405028, "hit", "-4@-20(%rbp) 8@$5"),
            note(0x401400, 0x402018, 0, "other", ""),
        ],
        segments: exec_segments(),
        base_section: Some(0x402018),
    };
    let sites = bin.sites("app", "hit").unwrap();
    assert_eq!(sites.len(), 2);
    assert_eq!(sites[0].file_offset, 0x1234);
    assert_eq!(sites[1].file_offset, 0x1300);
    assert_eq!(sites[0].semaphore_offset, 0x4028);
    assert_eq!(sites[0].spec.args.len(), 2);
    assert_eq!(sites[1].args, "-4@-20(%rbp) 8@$5");
    let other = bin.sites("app", "other").unwrap();
    assert_eq!(
        (other[0].semaphore_offset, other[0].spec.args.len()),
        (0, 0)
    );

    // prelink moved the binary by 0x100: the section header moved, the notes did not.
    let moved = UsdtBinary {
        base_section: Some(0x402118),
        ..bin.clone()
    };
    let s = moved.sites("app", "hit").unwrap();
    assert_eq!((s[0].file_offset, s[0].semaphore_offset), (0x1334, 0x4128));

    let e = bin.sites("app", "missing").unwrap_err();
    assert_eq!(
        e.to_string(),
        "no USDT probe app:missing in the binary; it has: app:hit, app:other"
    );
}

#[test]
fn addresses_outside_their_segments_are_refused() {
    let mut bin = UsdtBinary {
        machine: EM_X86_64,
        notes: vec![note(0x404e00, 0, 0, "hit", "")],
        segments: exec_segments(),
        base_section: None,
    };
    let e = bin.sites("app", "hit").unwrap_err();
    assert!(
        e.to_string().contains("no loadable executable segment"),
        "{e}"
    );
    // A semaphore must be data: the kernel writes its count there.
    bin.notes = vec![note(0x401234, 0, 0x401240, "hit", "")];
    let e = bin.sites("app", "hit").unwrap_err();
    assert!(e.to_string().contains("semaphore address 0x401240"), "{e}");
    bin.machine = 183; // aarch64: its argument syntax differs.
    bin.notes = vec![note(0x401234, 0, 0, "hit", "-4@x0")];
    assert!(matches!(
        bin.sites("app", "hit"),
        Err(UsdtError::UnsupportedMachine { machine: 183 })
    ));
}

#[test]
fn the_test_binary_probes_land_on_nops() {
    let path = apiary_fixtures::usdt_target();
    let bytes = std::fs::read(&path).unwrap();
    let bin = read_binary(&bytes).unwrap();
    assert_eq!(bin.probe_names(), vec!["apiary:hit".to_string()]);
    let sites = bin.sites("apiary", "hit").unwrap();
    assert_eq!(sites.len(), 2, "{sites:?}");
    for s in &sites {
        // The probe is a NOP in the file, where the uprobe goes.
        assert_eq!(bytes[s.file_offset as usize], 0x90, "{s:?}");
        assert_eq!(s.spec.args.len(), 2);
        assert_ne!(s.semaphore_offset, 0);
        // The semaphore (a zeroed 2-byte counter) is in the file's data.
        assert_eq!(&bytes[s.semaphore_offset as usize..][..2], &[0, 0]);
    }
    assert_eq!(sites[0].semaphore_offset, sites[1].semaphore_offset);
    assert!(matches!(
        read_binary(b"#!/bin/sh\n"),
        Err(UsdtError::NotElf)
    ));
    let no_probes = std::fs::read(apiary_fixtures::uprobe_target()).unwrap();
    assert_eq!(read_binary(&no_probes).unwrap_err(), UsdtError::NoProbes);
}
