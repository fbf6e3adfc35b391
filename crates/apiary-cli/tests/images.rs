//! Bytecode images end to end through the CLI, against a real registry on 127.0.0.1 (Debian's
//! docker-registry): build, push, load from the image, prove the program runs; cache and pull
//! policies; cosign-compatible signatures required, verified and refused.

mod common;

use common::*;
use std::process::Command;

/// A real registry on 127.0.0.1, without auth or TLS.
struct Registry {
    _process: apiary_fixtures::RegistryProcess,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let process = apiary_fixtures::RegistryProcess::start(dir.path(), &|_| String::new());
        Registry {
            addr: process.addr.clone(),
            _process: process,
            _dir: dir,
        }
    }
}

#[test]
fn build_push_load_from_the_image_and_run() {
    if !privileged() {
        return;
    }
    let reg = Registry::start();
    let a = Apiary::new();
    let image = format!("{}/apiary/minimal:v1", reg.addr);
    let built = a.json(&[
        "image",
        "build",
        "--bytecode",
        fixture("minimal").to_str().unwrap(),
        "-t",
        &image,
    ]);
    assert_eq!(built["pushed"], false);
    let pushed = a.json(&["image", "push", &image, "--tls-verify=false"]);
    assert_eq!(
        pushed["digest"], built["digest"],
        "push sends what build made"
    );
    let info = a.json(&["image", "inspect", &image, "--tls-verify=false"]);
    assert_eq!(
        info["programs"],
        serde_json::json!({"count_getppid": "tracepoint"})
    );
    assert_eq!(info["maps"]["counts"], "array");

    let loaded = a.json(&[
        "load",
        "image",
        "--image-url",
        &image,
        "--tls-verify=false",
        "tracepoint",
        "--tracepoint",
        "syscalls/sys_enter_getppid",
    ]);
    let p = &loaded[0];
    let id = p["id"].as_i64().unwrap();
    let digest = info["manifest_digest"].as_str().unwrap();
    assert_eq!(
        p["source"],
        format!("{}/apiary/minimal@{digest}", reg.addr),
        "the store records the digest loaded"
    );
    assert_eq!(p["metadata"]["apiary.dev/image"], image.as_str());
    Command::new(apiary_fixtures::uprobe_target())
        .arg("3")
        .output()
        .unwrap();
    assert!(
        a.counter(&format!("{id}:counts"), 0) >= 3,
        "the program from the image runs"
    );

    // Cached by digest: with the registry gone, IfNotPresent and Never still load.
    drop(reg);
    let again = a.json(&[
        "load",
        "image",
        "--image-url",
        &image,
        "--pull-policy",
        "IfNotPresent",
    ]);
    assert_eq!(again[0]["source"], p["source"]);
    a.json(&[
        "load",
        "image",
        "--image-url",
        &image,
        "--pull-policy",
        "Never",
    ]);
    let e = a.fails(&[
        "load",
        "image",
        "--image-url",
        &image,
        "--pull-policy",
        "Always",
        "--tls-verify=false",
    ]);
    assert!(!e.is_empty());
    let e = a.fails(&[
        "load",
        "image",
        "--image-url",
        "127.0.0.1:1/nothing:v1",
        "--pull-policy",
        "Never",
    ]);
    assert!(
        e.contains("not found") || e.contains("not cached") || e.contains("cache"),
        "{e}"
    );
    let list = a.json(&["image", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    a.ok(&["image", "rm", &image]);
    assert!(a.json(&["image", "list"]).as_array().unwrap().is_empty());
}

#[test]
fn signatures_are_required_verified_and_refused() {
    if !privileged() {
        return;
    }
    let reg = Registry::start();
    let a = Apiary::new();
    let keys = tempfile::tempdir().unwrap();
    let (key, publ) = openssl_keypair(keys.path(), "good");
    let (_, other) = openssl_keypair(keys.path(), "other");
    let signed = format!("{}/apiary/signed:v1", reg.addr);
    let unsigned = format!("{}/apiary/unsigned:v1", reg.addr);
    // Different content: a signature covers a digest, wherever that content is stored.
    for (img, obj) in [
        (&signed, fixture("minimal")),
        (&unsigned, fixture("minimal_v2")),
    ] {
        a.ok(&[
            "image",
            "build",
            "--bytecode",
            obj.to_str().unwrap(),
            "-t",
            img,
            "--push",
            "--tls-verify=false",
        ]);
    }
    a.ok(&[
        "image",
        "sign",
        "--key",
        key.to_str().unwrap(),
        &signed,
        "--tls-verify=false",
    ]);
    let v = a.json(&[
        "image",
        "verify",
        "--key",
        publ.to_str().unwrap(),
        &signed,
        "--tls-verify=false",
    ]);
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    let e = a.fails(&[
        "image",
        "verify",
        "--key",
        other.to_str().unwrap(),
        &signed,
        "--tls-verify=false",
    ]);
    assert!(e.to_lowercase().contains("signature"), "{e}");

    // A verification key makes signatures required for the load.
    let ok = a.json(&[
        "load",
        "image",
        "--image-url",
        &signed,
        "--tls-verify=false",
        "--verify-key",
        publ.to_str().unwrap(),
    ]);
    assert!(ok[0]["metadata"]["apiary.dev/image-signature"]
        .as_str()
        .unwrap()
        .starts_with("verified"));
    let before = a.program_ids();
    for (img, k) in [(&signed, &other), (&unsigned, &publ)] {
        let e = a.fails(&[
            "load",
            "image",
            "--image-url",
            img,
            "--tls-verify=false",
            "--pull-policy",
            "Always",
            "--verify-key",
            k.to_str().unwrap(),
        ]);
        assert!(e.to_lowercase().contains("sign"), "{e}");
        assert_eq!(
            a.program_ids(),
            before,
            "a failed verification loads nothing"
        );
    }
    // Warn lets an unsigned image through and says so in the record.
    let w = a.json(&[
        "load",
        "image",
        "--image-url",
        &unsigned,
        "--tls-verify=false",
        "--verify-key",
        publ.to_str().unwrap(),
        "--signature-policy",
        "warn",
    ]);
    assert!(w[0]["metadata"]["apiary.dev/image-signature"]
        .as_str()
        .unwrap()
        .starts_with("UNVERIFIED"));
}
