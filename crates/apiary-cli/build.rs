//! The release binary's code layout: the functions apiary runs most (listed in `layout.order`,
//! made by `bench/layout.py`) are placed first, together, by the linker. The kernel maps 64 kB
//! of a file around each page fault, so code spread over the binary's text costs resident
//! memory far beyond what runs; grouped, the daemon's and a command's code share a few hundred
//! pages. Names the binary no longer has are skipped, so a stale list costs only its benefit.
//! Debug builds are not affected, nor targets other than x86_64 Linux with GNU libc, the one
//! whose default linker is Rust's own lld (the option is lld's); `APIARY_NO_LAYOUT=1` turns it
//! off (another linker, or to measure the difference).

fn main() {
    let order = std::path::Path::new("layout.order");
    println!("cargo:rerun-if-changed=layout.order");
    println!("cargo:rerun-if-env-changed=APIARY_NO_LAYOUT");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !release
        || target != "x86_64-unknown-linux-gnu"
        || !order.exists()
        || std::env::var_os("APIARY_NO_LAYOUT").is_some()
    {
        return;
    }
    let path = std::fs::canonicalize(order).expect("layout.order exists");
    println!(
        "cargo:rustc-link-arg-bin=apiary=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    println!("cargo:rustc-link-arg-bin=apiary=-Wl,--no-warn-symbol-ordering");
    // The position-independent binary's 25,000 relative relocations as a bitmap (DT_RELR, glibc
    // 2.36+) instead of 24-byte entries: 600 kB less for the dynamic loader to read, and keep
    // resident, at every start.
    println!("cargo:rustc-link-arg-bin=apiary=-Wl,-z,pack-relative-relocs");
}
