//! Embeds libbpf's BPF-side headers (from the vendored libbpf-sys, the same libbpf that loads the
//! objects) so `apiary build` compiles on a machine without libbpf-dev: the binary writes them
//! to its cache directory before calling clang.

use std::path::PathBuf;

/// The headers a BPF program includes as `<bpf/NAME>`.
const HEADERS: &[&str] = &[
    "bpf_helpers.h",
    "bpf_helper_defs.h",
    "bpf_tracing.h",
    "bpf_core_read.h",
    "bpf_endian.h",
    "usdt.bpf.h",
];

fn main() {
    let include = PathBuf::from(
        std::env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers (DEP_BPF_INCLUDE)"),
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let mut code = String::from("/// libbpf's BPF-side headers: (file name, contents).\npub const LIBBPF_HEADERS: &[(&str, &[u8])] = &[\n");
    for h in HEADERS {
        let path = include.join("bpf").join(h);
        assert!(path.is_file(), "libbpf-sys lacks {}", path.display());
        println!("cargo:rerun-if-changed={}", path.display());
        code.push_str(&format!(
            "    ({h:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("libbpf_headers.rs"), code).expect("write libbpf_headers.rs");
    println!("cargo:rerun-if-changed=build.rs");
}
