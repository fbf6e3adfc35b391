//! `cargo bench -p apiary-oci`: how long registry operations take against a local registry
//! (Debian's docker-registry on 127.0.0.1, plain HTTP) with the `minimal` fixture object.

#[path = "../tests/common/mod.rs"]
mod common;

use apiary_oci::{
    build, pull, pull_verified, push, sign, verify, Arch, Cache, PullPolicy, SignatureMode,
    SignaturePolicy, SigningKey,
};
use common::*;
use std::time::{Duration, Instant};

fn time<T>(n: usize, mut f: impl FnMut(usize) -> T) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let t = Instant::now();
            std::hint::black_box(f(i));
            t.elapsed()
        })
        .collect()
}

fn report(what: &str, mut d: Vec<Duration>) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    let mean = d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64;
    println!(
        "{what:<58} n={:<4} min {:>7.2} ms  median {:>7.2} ms  mean {:>7.2} ms",
        d.len(),
        ms(d[0]),
        ms(d[d.len() / 2]),
        mean
    );
}

fn main() {
    let host = Arch::host().expect("a known architecture");
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let object = fixture("minimal");
    let built = build(&[(host, object.clone())]).unwrap();
    let image = reg.image("bench/minimal:v1");
    push(&cfg, &built, &image).unwrap();
    let layer = built.manifests[0].layer.len();
    println!(
        "object {} bytes, layer {} bytes (gzip), registry {}",
        object.len(),
        layer,
        reg.addr
    );

    report(
        "build (labels, tar+gzip, config, manifest)",
        time(50, |_| build(&[(host, object.clone())]).unwrap()),
    );
    report(
        "push (blobs already there: HEADs + manifest PUT)",
        time(20, |i| {
            push(&cfg, &built, &reg.image(&format!("bench/minimal:t{i}"))).unwrap()
        }),
    );
    report(
        "push to a new repository (blob uploads + manifest)",
        time(20, |i| {
            push(&cfg, &built, &reg.image(&format!("bench/new{i}:v1"))).unwrap()
        }),
    );
    let dirs: Vec<TempDir> = (0..30).map(|_| TempDir::new("bench-cache")).collect();
    report(
        "pull Always, empty cache (manifest, config, layer, unpack)",
        time(dirs.len(), |i| {
            pull(
                &cfg,
                &Cache::new(dirs[i].path()),
                &image,
                PullPolicy::Always,
            )
            .unwrap()
        }),
    );
    let cache = Cache::new(dirs[0].path());
    report(
        "pull IfNotPresent, cached (no registry contact)",
        time(200, |_| {
            pull(&cfg, &cache, &image, PullPolicy::IfNotPresent).unwrap()
        }),
    );

    let key = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    sign(&cfg, &image, &key).unwrap();
    report(
        "verify (signature manifest + payload + ECDSA)",
        time(30, |_| verify(&cfg, &image, &keys).unwrap()),
    );
    let require = SignaturePolicy::new(SignatureMode::RequireSigned);
    report(
        "pull Always + RequireSigned, empty cache",
        time(20, |_| {
            let d = TempDir::new("bench-signed");
            pull_verified(
                &cfg,
                &Cache::new(d.path()),
                &image,
                PullPolicy::Always,
                &require,
                &keys,
            )
            .unwrap()
        }),
    );
    let signed_cache = TempDir::new("bench-signed-cache");
    let c = Cache::new(signed_cache.path());
    pull_verified(&cfg, &c, &image, PullPolicy::IfNotPresent, &require, &keys).unwrap();
    report(
        "pull IfNotPresent + RequireSigned, cached (offline re-verify)",
        time(100, |_| {
            pull_verified(&cfg, &c, &image, PullPolicy::IfNotPresent, &require, &keys).unwrap()
        }),
    );
    report(
        "sign (resolve, payload, ECDSA, push signature image)",
        time(10, |i| {
            sign(
                &cfg,
                &reg.image(&format!("bench/minimal:t{i}")),
                &SigningKey::generate().unwrap(),
            )
            .unwrap()
        }),
    );
    let pem = key.to_cosign_encrypted_pem(b"pw").unwrap();
    report(
        "decrypt a cosign key (scrypt N=32768)",
        time(5, |_| SigningKey::from_pem(&pem, Some(b"pw")).unwrap()),
    );
}
