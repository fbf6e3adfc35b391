//! Seed inputs per target, made from the compiled BPF fixtures (tests/fixtures builds them with
//! clang) and apiary's own writers: the package builder, the image builder, the layer builder,
//! prost. Starting from valid inputs lets the fuzzer reach deep code (BTF type walks, label
//! parsing, request conversion) in seconds instead of rediscovering each format's magic.

use apiary_api::pb;
use prost::Message;
use std::io;
use std::path::{Path, PathBuf};

/// The gRPC target's message kinds, in selector order (the first input byte picks one). Requests
/// are what the daemon decodes from clients; responses are what the CLI decodes from a daemon.
pub const GRPC_KINDS: &[&str] = &[
    "LoadRequest",
    "AttachRequest",
    "DetachRequest",
    "UnloadRequest",
    "UpdateRequest",
    "ListProgramsRequest",
    "GetProgramRequest",
    "ListLinksRequest",
    "GetLinkRequest",
    "ListMapsRequest",
    "DumpMapRequest",
    "ListChainsRequest",
    "GetChainRequest",
    "WatchRequest",
    "LoadResponse",
    "AttachResponse",
    "UnloadResponse",
    "UpdateResponse",
    "ListProgramsResponse",
    "GetProgramResponse",
    "ListLinksResponse",
    "ListMapsResponse",
    "DumpMapResponse",
    "ListChainsResponse",
    "GetChainResponse",
    "Event",
];

/// Every compiled fixture object, by name, sorted.
pub fn fixture_objects() -> io::Result<Vec<(String, Vec<u8>)>> {
    let dir: PathBuf = apiary_fixtures::object("minimal")
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| io::Error::other("fixture path has no parent"))?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(".bpf.o") {
            out.push((stem.to_string(), std::fs::read(&path)?));
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(io::Error::other(format!(
            "no compiled fixtures in {}",
            dir.display()
        )));
    }
    Ok(out)
}

/// The raw `.BTF` blob inside an object: found by its header (magic 0xeb9f, version 1) and
/// sized from the header's section lengths.
pub fn btf_blob(object: &[u8]) -> Option<&[u8]> {
    let start = object.windows(4).position(|w| w == [0x9f, 0xeb, 1, 0])?;
    let word = |o: usize| -> Option<usize> {
        let b = object.get(start + o..start + o + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // Header length, then whichever of the type and string sections ends last.
    let len = word(4)? + (word(8)? + word(12)?).max(word(16)? + word(20)?);
    object.get(start..start + len)
}

/// Recognisable bytes: every offset holds a different value, so decoders show distinct fields.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
        .collect()
}

/// Writes the seeds of `target` into `dir` (created if needed) and returns how many.
pub fn write(target: &str, dir: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let inputs = make(target)?;
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), input)?;
    }
    Ok(inputs.len())
}

fn make(target: &str) -> io::Result<Vec<Vec<u8>>> {
    let objects = fixture_objects()?;
    let blobs: Vec<&[u8]> = objects.iter().filter_map(|(_, o)| btf_blob(o)).collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    match target {
        "elf_inspect" => out.extend(objects.iter().map(|(_, o)| o.clone())),
        "btf_decode" | "event_format" => {
            for b in &blobs {
                out.push(crate::join(b, &pattern(256)));
                out.push(crate::join(b, &[0u8; 64]));
                out.push(crate::join(b, &[0xffu8; 24]));
            }
        }
        "btf_encode" => {
            let texts = [
                "0",
                "1",
                "-1",
                "42",
                "0x7f",
                "-0x80",
                "true",
                "false",
                "hello",
                "1,2,3",
                "3.5",
                "-1e300",
                "18446744073709551616",
                "",
            ];
            for b in &blobs {
                for t in texts {
                    out.push(crate::join(b, t.as_bytes()));
                }
            }
        }
        "package" => {
            for (name, o) in &objects {
                // Objects inspect refuses (a legacy maps section) make no package; skip them.
                if let Ok(p) = apiary::package::Package::build(name, o) {
                    out.push(serde_json::to_vec_pretty(&p).map_err(io::Error::other)?);
                }
            }
            out.push(br#"{"format":"apiary-package/v1"}"#.to_vec());
        }
        "oci_manifest" => {
            let obj = objects
                .iter()
                .find(|(n, _)| n == "minimal")
                .map(|(_, o)| o.clone())
                .ok_or_else(|| io::Error::other("no minimal fixture"))?;
            let single = apiary_oci::build(&[(apiary_oci::Arch::Amd64, obj.clone())])
                .map_err(io::Error::other)?;
            let multi = apiary_oci::build(&[
                (apiary_oci::Arch::Amd64, obj.clone()),
                (apiary_oci::Arch::Arm64, obj),
            ])
            .map_err(io::Error::other)?;
            for m in single.manifests.iter().chain(&multi.manifests) {
                out.push(m.manifest.clone());
                out.push(m.config.clone());
            }
            out.extend(multi.index);
            out.push(
                br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#
                    .to_vec(),
            );
            out.push(
                br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"io.ebpf.bpf_function_name":"pass","io.ebpf.program_type":"xdp"}}}"#
                    .to_vec(),
            );
        }
        "oci_reference" => {
            for r in [
                "quay.io/bpfman-bytecode/xdp_pass:latest",
                "localhost:5000/a/b/c:v1.2",
                "ubuntu",
                "docker.io/library/ubuntu@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "[::1]:5000/x:y",
                "registry.example.com:443/ns/repo:tag@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ] {
                out.push(r.as_bytes().to_vec());
            }
        }
        "oci_layer" => {
            for (name, o) in objects.iter().take(4) {
                let (gz, tar) = apiary_oci::layer::build_layer(&format!("{name}.o"), o)
                    .map_err(io::Error::other)?;
                out.push([&[0u8][..], &gz].concat());
                out.push([&[1u8][..], &tar].concat());
            }
        }
        "grpc_request" => out.extend(grpc_seeds()),
        other => return Err(io::Error::other(format!("no seeds for target {other}"))),
    }
    Ok(out)
}

fn kind(name: &str) -> u8 {
    GRPC_KINDS.iter().position(|k| *k == name).unwrap_or(0) as u8
}

fn framed(name: &str, m: &impl Message) -> Vec<u8> {
    let mut v = vec![kind(name)];
    v.extend(m.encode_to_vec());
    v
}

fn grpc_seeds() -> Vec<Vec<u8>> {
    use pb::attach_spec::Hook;
    let xdp = pb::AttachSpec {
        hook: Some(Hook::Xdp(pb::XdpAttach {
            iface: "veth0".into(),
            netns: Some("/var/run/netns/test".into()),
            mode: pb::XdpMode::Skb as i32,
            priority: Some(50),
            proceed_on: vec!["pass".into(), "dispatcher_return".into()],
        })),
    };
    let tc = pb::AttachSpec {
        hook: Some(Hook::Tc(pb::TcAttach {
            iface: "veth0".into(),
            netns: None,
            direction: pb::Direction::Egress as i32,
            priority: None,
            proceed_on: vec!["ok".into()],
            legacy: false,
        })),
    };
    let uprobe = pb::AttachSpec {
        hook: Some(Hook::Uprobe(pb::UprobeAttach {
            target: "libc".into(),
            fn_name: Some("malloc".into()),
            offset: 0,
            retprobe: true,
            pid: Some(1),
        })),
    };
    let perf = pb::AttachSpec {
        hook: Some(Hook::PerfEvent(pb::PerfEventAttach {
            event: pb::SoftwareEvent::CpuClock as i32,
            frequency: 99,
            cpu: Some(0),
        })),
    };
    let tracepoint = pb::AttachSpec {
        hook: Some(Hook::Tracepoint(pb::TracepointAttach {
            tracepoint: "syscalls/sys_enter_getppid".into(),
        })),
    };
    let load = pb::LoadRequest {
        object: Some(pb::ObjectSource {
            object: Some(pb::object_source::Object::Bytes(b"\x7fELF....".to_vec())),
            name: "prog.bpf.o".into(),
        }),
        programs: vec![pb::ProgramSelector {
            r#type: pb::ProgramType::Xdp as i32,
            name: "pass".into(),
        }],
        raw_globals: vec![pb::RawGlobal {
            name: "limit".into(),
            value: vec![1, 0, 0, 0],
        }],
        typed_globals: vec![pb::TypedGlobal {
            name: "name".into(),
            value: "hello".into(),
        }],
        metadata: [("app".to_string(), "demo".to_string())].into(),
        map_owner_id: Some(3),
        attach: Some(xdp.clone()),
    };
    let image_load = pb::LoadRequest {
        object: Some(pb::ObjectSource {
            object: Some(pb::object_source::Object::Image(pb::ImageSource {
                reference: "localhost:5000/xdp:v1".into(),
                pull_policy: "IfNotPresent".into(),
            })),
            name: String::new(),
        }),
        attach: Some(tracepoint),
        ..Default::default()
    };
    let hook = pb::HookRef {
        kind: pb::ChainKind::Tc as i32,
        iface: "eth1".into(),
        netns: None,
        direction: pb::Direction::Ingress as i32,
    };
    let program = pb::Program {
        id: Some(7),
        kernel_id: 42,
        name: "pass".into(),
        ..Default::default()
    };
    let mut out = vec![
        framed("LoadRequest", &load),
        framed("LoadRequest", &image_load),
        framed(
            "AttachRequest",
            &pb::AttachRequest {
                program_id: 1,
                spec: Some(tc),
            },
        ),
        framed(
            "AttachRequest",
            &pb::AttachRequest {
                program_id: 2,
                spec: Some(uprobe),
            },
        ),
        framed(
            "AttachRequest",
            &pb::AttachRequest {
                program_id: 3,
                spec: Some(perf),
            },
        ),
        framed("DetachRequest", &pb::DetachRequest { link_id: 4 }),
        framed(
            "UnloadRequest",
            &pb::UnloadRequest {
                program_ids: vec![1, 2, 3],
                force: true,
            },
        ),
        framed(
            "UpdateRequest",
            &pb::UpdateRequest {
                program_id: 1,
                object: Some(pb::ObjectSource {
                    object: Some(pb::object_source::Object::Path("/tmp/x.o".into())),
                    name: String::new(),
                }),
                program: Some("pass".into()),
                raw_globals: Vec::new(),
                typed_globals: Vec::new(),
            },
        ),
        framed(
            "ListProgramsRequest",
            &pb::ListProgramsRequest {
                all: true,
                metadata: [("k".to_string(), "v".to_string())].into(),
            },
        ),
        framed("GetProgramRequest", &pb::GetProgramRequest { id: 9 }),
        framed(
            "ListLinksRequest",
            &pb::ListLinksRequest {
                program_id: Some(2),
            },
        ),
        framed("GetLinkRequest", &pb::GetLinkRequest { id: 5 }),
        framed("ListMapsRequest", &pb::ListMapsRequest { all: true }),
        framed(
            "DumpMapRequest",
            &pb::DumpMapRequest {
                map: Some(pb::dump_map_request::Map::ProgramMap(pb::ProgramMapRef {
                    program_id: 1,
                    map_name: "counts".into(),
                })),
                limit: Some(10),
            },
        ),
        framed("ListChainsRequest", &pb::ListChainsRequest {}),
        framed("GetChainRequest", &pb::GetChainRequest { hook: Some(hook) }),
        framed("WatchRequest", &pb::WatchRequest {}),
        framed(
            "LoadResponse",
            &pb::LoadResponse {
                programs: vec![program.clone()],
            },
        ),
        framed(
            "ListProgramsResponse",
            &pb::ListProgramsResponse {
                programs: vec![program],
            },
        ),
        framed(
            "UnloadResponse",
            &pb::UnloadResponse {
                unloaded: vec![1, 2],
            },
        ),
    ];
    // Responses whose seeds are just the empty message; the fuzzer fills them in.
    for k in [
        "AttachResponse",
        "UpdateResponse",
        "GetProgramResponse",
        "ListLinksResponse",
        "ListMapsResponse",
        "DumpMapResponse",
        "ListChainsResponse",
        "GetChainResponse",
        "Event",
    ] {
        out.push(vec![kind(k)]);
    }
    out
}
