//! `apiary completions` and `apiary man`: the scripts load in their shells and the pages render
//! with man, and both know the subcommands the binary parses.

use std::process::Command;

const APIARY: &str = env!("CARGO_BIN_EXE_apiary");

fn out(c: &mut Command) -> (bool, String, String) {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let script = format!(
        "source <({APIARY} completions bash) && complete -p apiary && \
         COMP_WORDS=(apiary bu) COMP_CWORD=1 COMP_LINE='apiary bu' COMP_POINT=9 && \
         _apiary apiary bu apiary && printf 'CANDIDATE %s\\n' \"${{COMPREPLY[@]}}\""
    );
    let (ok, stdout, stderr) = out(Command::new("bash").args(["-c", &script]));
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("complete") && stdout.contains("apiary"),
        "complete -p apiary: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "CANDIDATE build"),
        "`apiary bu<TAB>` offers build: {stdout}"
    );
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let (ok, stdout, stderr) = out(Command::new(APIARY).args(["completions", shell]));
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("build") && stdout.contains("completions"),
            "{shell}: {stdout}"
        );
    }
    let (ok, _, stderr) = out(Command::new(APIARY).args(["completions", "tcsh"]));
    assert!(!ok && stderr.contains("tcsh"), "{stderr}");
}

#[test]
fn man_pages_render_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) =
        out(Command::new(APIARY).args(["man", "-o", dir.path().to_str().unwrap()]));
    assert!(ok, "{stderr}");
    for page in ["apiary.1", "apiary-build.1", "apiary-run.1"] {
        let path = dir.path().join(page);
        assert!(path.is_file(), "{page} written: {stderr}");
        let (ok, text, err) = out(Command::new("man")
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .args(["-l", path.to_str().unwrap()]));
        assert!(ok, "man -l {page}: {err}");
        assert!(text.contains("NAME"), "{page}: {text}");
        if page == "apiary-build.1" {
            assert!(text.contains("vmlinux.h"), "the build page: {text}");
            assert!(text.contains("--btf"), "{text}");
        }
    }
    // Without -o the main page goes to stdout.
    let (ok, text, err) = out(Command::new(APIARY).arg("man"));
    assert!(ok, "{err}");
    assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
    assert!(text.contains("build"), "lists the subcommands");
}

/// Subcommands are built lazily (clap's `defer`); deferred, the doc comment of a struct of
/// flags would replace the subcommand's own help line. Each help starts with its own.
#[test]
fn each_subcommand_help_starts_with_its_own_summary() {
    for (path, first) in [
        (&["serve"][..], "Run the daemon"),
        (&["agent"], "Run the Kubernetes node agent"),
        (&["operator"], "Run the Kubernetes operator"),
        (&["csi"], "Run the CSI node plugin"),
        (&["run"], "Load an object in the foreground"),
        (&["build"], "Compile a BPF C source"),
        (&["load", "file"], "Load from a local object file"),
        (&["load", "image"], "Load from a bytecode image"),
        (&["attach"], "Attach a loaded program to a hook"),
        (&["attach", "1", "xdp"], "XDP on an interface"),
        (&["image", "build"], "Build a bytecode image"),
        (&["image", "pull"], "Pull an image into the cache"),
        (&["trace", "run"], "Run a bpftrace script"),
        (&["k8s", "manifests"], "Print everything a cluster needs"),
    ] {
        let (ok, stdout, stderr) = out(Command::new(APIARY).args(path).arg("--help"));
        assert!(ok, "apiary {path:?} --help: {stderr}");
        assert!(
            stdout.starts_with(first),
            "apiary {path:?} --help starts with {:?}",
            stdout.lines().next().unwrap_or_default()
        );
    }
}
