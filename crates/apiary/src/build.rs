//! `apiary build`: from a `.bpf.c` to an object and a package, with no Makefile. clang compiles
//! for BPF against a `vmlinux.h` generated from the running kernel's BTF (or a BTF file) by
//! bpftool and against libbpf's BPF-side headers, which this binary carries; both are written
//! to a cache directory once and reused. An event struct declared in a header next to the
//! source (`prog.bpf.h` or `prog.h`, eunomia's convention) becomes the package's event type.

use crate::package::Package;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/libbpf_headers.rs"));

/// The running kernel's BTF, where `vmlinux.h` comes from by default.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {error}")]
    Source {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: expected a C source (NAME.bpf.c or NAME.c)")]
    NotC { path: PathBuf },
    #[error("{tool} not found ({error}); install it: apt-get install {package}")]
    ToolMissing {
        tool: String,
        package: &'static str,
        error: std::io::Error,
    },
    #[error("clang could not compile {path}:\n{stderr}")]
    Compile { path: PathBuf, stderr: String },
    #[error("cannot read the kernel BTF {path}: {error} (give one with --btf FILE)")]
    Btf {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("bpftool could not turn {path} into vmlinux.h:\n{stderr}")]
    Bpftool { path: PathBuf, stderr: String },
    #[error("cache directory {path}: {error}")]
    Cache {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: the compiled object cannot be packaged: {reason}")]
    Package { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub source: PathBuf,
    /// Where the object and the package go.
    pub out_dir: PathBuf,
    /// Extra include directories (searched before the generated ones).
    pub includes: Vec<PathBuf>,
    /// NAME or NAME=VALUE.
    pub defines: Vec<String>,
    /// BTF to generate `vmlinux.h` from; default [`KERNEL_BTF`].
    pub btf: Option<PathBuf>,
    pub cache_dir: PathBuf,
    /// The compiler (default `clang`, or `$CLANG`).
    pub clang: String,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub object: PathBuf,
    pub package: PathBuf,
    pub object_size: usize,
    pub package_size: usize,
    /// The object without DWARF, as the package holds it.
    pub stripped_size: usize,
    /// The event struct the header next to the source declares, if any.
    pub header_event_type: Option<String>,
    /// Compiler warnings (clang's stderr when it succeeded).
    pub warnings: String,
    pub compile_time: Duration,
}

/// `$APIARY_CACHE_DIR`, else `$XDG_CACHE_HOME/apiary`, else `~/.cache/apiary`.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("APIARY_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("apiary")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/apiary")))
        .unwrap_or_else(|| std::env::temp_dir().join("apiary-cache"))
}

/// The compiler `apiary build` uses: `$CLANG`, else `clang`.
pub fn default_clang() -> String {
    std::env::var("CLANG")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "clang".into())
}

/// Whether `source` names a C file, which `apiary run` builds before running.
pub fn is_c_source(source: &str) -> bool {
    source.ends_with(".c")
}

/// `prog` for `dir/prog.bpf.c` (or `dir/prog.c`).
fn stem(source: &Path) -> Option<String> {
    let name = source.file_name()?.to_str()?;
    let base = name.strip_suffix(".c")?;
    Some(base.strip_suffix(".bpf").unwrap_or(base).to_string())
}

fn cache_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |error| BuildError::Cache {
        path: path.to_path_buf(),
        error,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a concurrent build never
/// reads half a header.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(cache_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(cache_err(path))
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// The directory holding `bpf/*.h` from libbpf, written once per header set.
fn libbpf_include(cache: &Path) -> Result<PathBuf, BuildError> {
    let mut all = Vec::new();
    for (name, body) in LIBBPF_HEADERS {
        all.extend_from_slice(name.as_bytes());
        all.extend_from_slice(body);
    }
    let dir = cache.join("libbpf").join(short_hash(&all));
    let bpf = dir.join("bpf");
    std::fs::create_dir_all(&bpf).map_err(cache_err(&bpf))?;
    for (name, body) in LIBBPF_HEADERS {
        let path = bpf.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(*body) {
            write_atomic(&path, body)?;
        }
    }
    Ok(dir)
}

/// The directory holding `vmlinux.h` for `btf`, generated by bpftool unless cached (keyed by
/// the BTF's digest, so a new kernel gets a new header).
fn vmlinux_include(cache: &Path, btf: &Path) -> Result<PathBuf, BuildError> {
    let bytes = std::fs::read(btf).map_err(|error| BuildError::Btf {
        path: btf.to_path_buf(),
        error,
    })?;
    let dir = cache.join("vmlinux").join(short_hash(&bytes));
    let header = dir.join("vmlinux.h");
    if header.is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(btf)
        .args(["format", "c"])
        .output()
        .map_err(|error| BuildError::ToolMissing {
            tool: "bpftool".into(),
            package: "bpftool",
            error,
        })?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(BuildError::Bpftool {
            path: btf.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    write_atomic(&header, &out.stdout)?;
    Ok(dir)
}

/// The header next to `source` by eunomia's convention: `prog.bpf.h`, else `prog.h`.
pub fn event_header(source: &Path) -> Option<PathBuf> {
    let stem = stem(source)?;
    let dir = source.parent().unwrap_or(Path::new("."));
    [format!("{stem}.bpf.h"), format!("{stem}.h")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// C text without comments and string literals, so names in them are not taken for code.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push_str("\"\"");
            }
            c => out.push(c),
        }
    }
    out
}

/// The structs a header defines (`struct NAME {`), in order.
pub fn header_structs(text: &str) -> Vec<String> {
    let code = strip_comments(text);
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("struct") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "struct".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = rest.trim_start();
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if after[name.len()..].trim_start().starts_with('{') && !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// The event struct of a header: the only one, else one with a conventional event name, else
/// the first.
pub fn header_event_type(text: &str) -> Option<String> {
    let structs = header_structs(text);
    ["event", "event_t", "data_t"]
        .iter()
        .find(|n| structs.iter().any(|s| s == *n))
        .map(|n| n.to_string())
        .or_else(|| structs.into_iter().next())
}

/// `-D__TARGET_ARCH_...` as bpf_tracing.h names this machine's architecture.
fn target_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "s390x" => "s390",
        "powerpc64" => "powerpc",
        "riscv64" => "riscv",
        "loongarch64" => "loongarch",
        _ => "x86",
    }
}

/// Compile `spec.source`, then write `NAME.bpf.o` and `NAME.package.json` into `spec.out_dir`.
pub fn build(spec: &BuildSpec) -> Result<Built, BuildError> {
    let source = &spec.source;
    // Checked here so a missing file is reported as such, not as clang's complaint.
    std::fs::File::open(source).map_err(|error| BuildError::Source {
        path: source.clone(),
        error,
    })?;
    let name = stem(source).ok_or_else(|| BuildError::NotC {
        path: source.clone(),
    })?;
    let header_event_type = event_header(source)
        .and_then(|h| std::fs::read_to_string(h).ok())
        .and_then(|t| header_event_type(&t));
    let libbpf = libbpf_include(&spec.cache_dir)?;
    // Generated (once per kernel) whether or not the source includes it: finding out would take
    // a preprocessor run. Without bpftool or BTF, sources that do not need it still build.
    let btf = spec
        .btf
        .clone()
        .unwrap_or_else(|| PathBuf::from(KERNEL_BTF));
    let vmlinux = vmlinux_include(&spec.cache_dir, &btf);
    if spec.btf.is_some() {
        // Asked for explicitly: its failure is the answer.
        if let Err(e) = vmlinux {
            return Err(e);
        }
    }
    std::fs::create_dir_all(&spec.out_dir).map_err(|error| BuildError::Write {
        path: spec.out_dir.clone(),
        error,
    })?;
    let object = spec.out_dir.join(format!("{name}.bpf.o"));
    let mut cmd = Command::new(&spec.clang);
    cmd.args(["-target", "bpf", "-g", "-O2", "-mcpu=v3"])
        .arg(format!("-D__TARGET_ARCH_{}", target_arch()));
    for d in &spec.defines {
        cmd.arg(format!("-D{d}"));
    }
    for i in &spec.includes {
        cmd.arg("-I").arg(i);
    }
    cmd.arg("-I").arg(
        source
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    if let Ok(v) = &vmlinux {
        cmd.arg("-I").arg(v);
    }
    cmd.arg("-I").arg(&libbpf);
    cmd.arg("-I")
        .arg(Path::new("/usr/include").join(format!("{}-linux-gnu", std::env::consts::ARCH)));
    cmd.arg("-c").arg(source).arg("-o").arg(&object);
    let started = Instant::now();
    let out = cmd.output().map_err(|error| BuildError::ToolMissing {
        tool: spec.clang.clone(),
        package: "clang",
        error,
    })?;
    let compile_time = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        if let Err(e) = vmlinux {
            if stderr.contains("vmlinux.h") {
                return Err(e);
            }
        }
        return Err(BuildError::Compile {
            path: source.clone(),
            stderr,
        });
    }
    let bytes = std::fs::read(&object).map_err(|error| BuildError::Source {
        path: object.clone(),
        error,
    })?;
    let mut pkg =
        Package::build_with(&name, &bytes, header_event_type.as_deref()).map_err(|reason| {
            BuildError::Package {
                path: object.clone(),
                reason,
            }
        })?;
    if let Some(path) = metrics_config(source) {
        // A declaration that does not parse fails the build: a tool must not ship it silently.
        pkg.metrics =
            Some(
                crate::metrics::Decls::read(&path).map_err(|e| BuildError::Package {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            );
    }
    let package = spec.out_dir.join(format!("{name}.package.json"));
    let json = serde_json::to_string_pretty(&pkg).map_err(|e| BuildError::Package {
        path: object.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&package, &json).map_err(|error| BuildError::Write {
        path: package.clone(),
        error,
    })?;
    Ok(Built {
        object,
        package,
        object_size: bytes.len(),
        package_size: json.len(),
        stripped_size: pkg.size,
        header_event_type,
        warnings: stderr,
        compile_time,
    })
}

/// `NAME.metrics.yaml` (or `.yml`) next to `NAME.bpf.c`: the metric declarations a build
/// puts into the package.
pub fn metrics_config(source: &Path) -> Option<PathBuf> {
    let name = stem(source)?;
    let dir = source.parent().unwrap_or(Path::new(""));
    ["yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{name}.metrics.{ext}")))
        .find(|p| p.is_file())
}

/// Where `apiary run prog.bpf.c` builds: a directory per source path under the cache.
pub fn run_out_dir(cache: &Path, source: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let name = stem(source).unwrap_or_else(|| "prog".into());
    cache.join("build").join(format!(
        "{name}-{}",
        short_hash(abs.as_os_str().as_encoded_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_event_struct_of_a_header() {
        let h = "/* struct not_this { */\n#define X \"struct nor_this {\"\nstruct config;\nstruct hdr { int a; };\nstruct event {\n  int pid;\n};\ntypedef struct event event_t;\n";
        assert_eq!(header_structs(h), vec!["hdr", "event"]);
        assert_eq!(header_event_type(h).as_deref(), Some("event"));
        assert_eq!(
            header_event_type("struct sample { int x; };").as_deref(),
            Some("sample")
        );
        assert_eq!(header_event_type("int x;"), None);
    }

    #[test]
    fn names_come_from_the_source() {
        assert_eq!(stem(Path::new("a/prog.bpf.c")).as_deref(), Some("prog"));
        assert_eq!(stem(Path::new("prog.c")).as_deref(), Some("prog"));
        assert_eq!(stem(Path::new("prog.o")), None);
        assert!(LIBBPF_HEADERS
            .iter()
            .any(|(n, b)| *n == "bpf_helpers.h" && !b.is_empty()));
    }
}
