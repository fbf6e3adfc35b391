//! Hostile and malformed images, pushed to a real registry and pulled: each is refused with an
//! error that says what is wrong, and nothing of it reaches the cache.

mod common;

use apiary_oci::manifest::{DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_TAR};
use apiary_oci::{pull, Cache, ClientConfig, Error, Limits, PullPolicy, PulledImage};
use common::*;
use tar::EntryType;

struct Fixture {
    reg: Registry,
    _cache_dir: TempDir,
    cache: Cache,
}

impl Fixture {
    fn new() -> Fixture {
        let reg = Registry::start(Auth::None);
        let cache_dir = TempDir::new("cache");
        let cache = Cache::new(cache_dir.path());
        Fixture {
            reg,
            _cache_dir: cache_dir,
            cache,
        }
    }

    /// Pushes `layer` under `name` with the minimal fixture's labels and pulls it with `cfg`.
    fn pull_layer(
        &self,
        name: &str,
        layer: &[u8],
        media: &str,
        cfg: &ClientConfig,
    ) -> Result<PulledImage, Error> {
        let image = self.reg.image(&format!("hostile/{name}:v1"));
        push_raw(&self.reg.config(), &image, layer, media, MINIMAL_LABELS);
        let r = pull(cfg, &self.cache, &image, PullPolicy::Always);
        if r.is_err() {
            assert!(
                self.cache.list().unwrap().is_empty(),
                "{name}: a refused image is not cached"
            );
        }
        r
    }

    fn refuse(&self, name: &str, tar: &[u8]) -> Error {
        self.pull_layer(name, &gzip(tar), OCI_LAYER_GZIP, &self.reg.config())
            .expect_err(name)
    }
}

fn one_file(name: &str, kind: EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    tar_entry(&mut t, name, kind, link, data);
    tar_end(&mut t);
    t
}

/// A 64-byte ELF header for `machine` (little-endian, 64-bit).
fn elf_header(machine: u16) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b
}

#[test]
fn path_traversal_is_refused() {
    let f = Fixture::new();
    let obj = fixture("minimal");
    let e = f.refuse("dotdot", &one_file("../x", EntryType::Regular, None, &obj));
    assert_eq!(e.to_string(), "layer entry ../x escapes the image");
    let e = f.refuse(
        "nested-dotdot",
        &one_file("a/../../etc/x.o", EntryType::Regular, None, &obj),
    );
    assert!(matches!(e, Error::PathEscape { .. }), "{e}");
    let e = f.refuse(
        "absolute",
        &one_file("/etc/cron.d/x", EntryType::Regular, None, &obj),
    );
    assert_eq!(e.to_string(), "layer entry /etc/cron.d/x escapes the image");
    // A directory entry that escapes is refused too, before any file.
    let mut t = Vec::new();
    tar_entry(&mut t, "../up/", EntryType::Directory, None, b"");
    tar_entry(&mut t, "prog.o", EntryType::Regular, None, &obj);
    tar_end(&mut t);
    assert!(matches!(
        f.refuse("dir-dotdot", &t),
        Error::PathEscape { .. }
    ));
    // Names from a PAX extended header or a GNU long-name entry are checked too.
    let mut t = Vec::new();
    tar_entry(
        &mut t,
        "PaxHeaders/ok.o",
        EntryType::XHeader,
        None,
        b"18 path=../evil.o\n",
    );
    tar_entry(&mut t, "ok.o", EntryType::Regular, None, &obj);
    tar_end(&mut t);
    assert_eq!(
        f.refuse("pax", &t).to_string(),
        "layer entry ../evil.o escapes the image"
    );
    let long = format!("{}/../../../etc/x.o", "d".repeat(120));
    let mut t = Vec::new();
    tar_entry(
        &mut t,
        "././@LongLink",
        EntryType::GNULongName,
        None,
        format!("{long}\0").as_bytes(),
    );
    tar_entry(&mut t, "ok.o", EntryType::Regular, None, &obj);
    tar_end(&mut t);
    assert_eq!(
        f.refuse("gnu-long", &t).to_string(),
        format!("layer entry {long} escapes the image")
    );
}

#[test]
fn links_and_devices_are_refused() {
    let f = Fixture::new();
    let e = f.refuse(
        "symlink",
        &one_file("prog.o", EntryType::Symlink, Some("/etc/shadow"), b""),
    );
    assert_eq!(
        e.to_string(),
        "layer entry prog.o is a symlink; a bytecode layer may only hold regular files and directories"
    );
    let e = f.refuse(
        "hardlink",
        &one_file("prog.o", EntryType::Link, Some("/etc/shadow"), b""),
    );
    assert!(e.to_string().contains("is a hardlink"), "{e}");
    let e = f.refuse("fifo", &one_file("prog.o", EntryType::Fifo, None, b""));
    assert!(e.to_string().contains("is a fifo"), "{e}");
    let e = f.refuse("chardev", &one_file("prog.o", EntryType::Char, None, b""));
    assert!(e.to_string().contains("character device"), "{e}");
}

#[test]
fn oversized_layers_are_refused() {
    let f = Fixture::new();
    let small = ClientConfig {
        limits: Limits {
            max_uncompressed: 1 << 20,
            ..Limits::default()
        },
        ..f.reg.config()
    };
    // A 2 MiB entry with a 1 MiB cap: refused from the entry header, before reading it.
    let big = one_file("prog.o", EntryType::Regular, None, &vec![0u8; 2 << 20]);
    let e = f
        .pull_layer("big-entry", &gzip(&big), OCI_LAYER_GZIP, &small)
        .unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("is larger than the limit (1048576 bytes)"),
        "{e}"
    );

    // Many small entries adding up past the cap: the stream cap stops the gzip bomb.
    let mut t = Vec::new();
    for i in 0..40 {
        tar_entry(&mut t, &format!("d{i}/"), EntryType::Directory, None, b"");
        tar_entry(
            &mut t,
            &format!("pad{i}"),
            EntryType::Regular,
            None,
            &vec![0u8; 100 << 10],
        );
    }
    tar_end(&mut t);
    let e = f
        .pull_layer("bomb", &gzip(&t), OCI_LAYER_GZIP, &small)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "layer is larger than the limit (1048576 bytes)"
    );

    // The default cap (64 MiB) holds against a 65 MiB entry that compresses to ~64 KiB.
    let huge = one_file("prog.o", EntryType::Regular, None, &vec![0u8; 65 << 20]);
    let e = f
        .pull_layer("huge", &gzip(&huge), OCI_LAYER_GZIP, &f.reg.config())
        .unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { limit, .. } if limit == 64 << 20),
        "{e}"
    );

    // The compressed cap is checked against the descriptor, before downloading.
    let tight = ClientConfig {
        limits: Limits {
            max_compressed: 100,
            ..Limits::default()
        },
        ..f.reg.config()
    };
    let ok_tar = one_file("prog.o", EntryType::Regular, None, &fixture("minimal"));
    let e = f
        .pull_layer("compressed-cap", &gzip(&ok_tar), OCI_LAYER_GZIP, &tight)
        .unwrap_err();
    assert!(e.to_string().starts_with("layer ("), "{e}");
    assert!(
        e.to_string()
            .ends_with("is larger than the limit (100 bytes)"),
        "{e}"
    );
}

#[test]
fn objects_that_are_not_bpf_are_refused() {
    let f = Fixture::new();
    let e = f.refuse(
        "text",
        &one_file(
            "prog.o",
            EntryType::Regular,
            None,
            b"#!/bin/sh\necho not an object\n",
        ),
    );
    assert_eq!(
        e.to_string(),
        "the image's object is not a BPF ELF file: no ELF header"
    );
    let e = f.refuse(
        "x86",
        &one_file("prog.o", EntryType::Regular, None, &elf_header(62)),
    );
    assert_eq!(
        e.to_string(),
        "the image's object is not a BPF ELF file: ELF machine is 62, not BPF (247)"
    );
    // A real x86-64 program from this machine.
    let true_bin = std::fs::read("/bin/true").unwrap();
    let e = f.refuse(
        "bin-true",
        &one_file("true", EntryType::Regular, None, &true_bin),
    );
    assert!(matches!(e, Error::NotBpf { .. }), "{e}");
    // A big-endian BPF object on a little-endian host.
    let mut be = elf_header(0);
    be[5] = 2;
    be[18..20].copy_from_slice(&247u16.to_be_bytes());
    let e = f.refuse("bpfeb", &one_file("prog.o", EntryType::Regular, None, &be));
    assert!(matches!(e, Error::WrongEndianness { .. }), "{e}");
}

#[test]
fn layer_shape_errors() {
    let f = Fixture::new();
    let obj = fixture("minimal");
    let mut two = Vec::new();
    tar_entry(&mut two, "a.o", EntryType::Regular, None, &obj);
    tar_entry(&mut two, "b.o", EntryType::Regular, None, &obj);
    tar_end(&mut two);
    let e = f.refuse("two-files", &two);
    assert!(e.to_string().contains("holds 2 files (a.o, b.o)"), "{e}");
    let mut empty = Vec::new();
    tar_entry(&mut empty, "dir/", EntryType::Directory, None, b"");
    tar_end(&mut empty);
    assert!(f
        .refuse("empty", &empty)
        .to_string()
        .contains("holds no file"));
    let e = f
        .pull_layer(
            "not-gzip",
            b"this is not gzip",
            OCI_LAYER_GZIP,
            &f.reg.config(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("not a valid (gzip) tar"), "{e}");
    let e = f
        .pull_layer(
            "zstd",
            &gzip(b"x"),
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &f.reg.config(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

#[test]
fn layouts_bpfman_tooling_produces_are_accepted() {
    let f = Fixture::new();
    let obj = fixture("minimal");
    // `COPY bpf_x86_bpfel.o /` with docker's media type, as `bpfman image build` pushes.
    let t = one_file("bpf_x86_bpfel.o", EntryType::Regular, None, &obj);
    let p = f
        .pull_layer(
            "docker-media",
            &gzip(&t),
            DOCKER_LAYER_GZIP,
            &f.reg.config(),
        )
        .unwrap();
    assert_eq!(
        (p.object_path.as_str(), p.object.as_slice()),
        ("bpf_x86_bpfel.o", obj.as_slice())
    );
    // A `./` prefix and a directory entry, and an uncompressed layer.
    let mut t = Vec::new();
    tar_entry(&mut t, "./", EntryType::Directory, None, b"");
    tar_entry(&mut t, "./prog.o", EntryType::Regular, None, &obj);
    tar_end(&mut t);
    let p = f
        .pull_layer("dot-slash", &t, OCI_LAYER_TAR, &f.reg.config())
        .unwrap();
    assert_eq!(p.object, obj);
    assert_eq!(
        p.programs.get("count_getppid").map(String::as_str),
        Some("tracepoint")
    );
}

#[test]
fn labels_must_be_present() {
    let f = Fixture::new();
    let image = f.reg.image("hostile/nolabels:v1");
    let t = one_file("prog.o", EntryType::Regular, None, &fixture("minimal"));
    push_raw(
        &f.reg.config(),
        &image,
        &gzip(&t),
        OCI_LAYER_GZIP,
        &[("maintainer", "x")],
    );
    let e = pull(&f.reg.config(), &f.cache, &image, PullPolicy::Always).unwrap_err();
    assert!(
        e.to_string()
            .contains("is not a bytecode image: its config has no io.ebpf.programs label"),
        "{e}"
    );
}
