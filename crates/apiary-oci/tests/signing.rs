//! cosign-compatible signing and verification, and signature policies, against a real registry.
//! Keys come from `openssl genpkey`, from apiary's own cosign-format writer, and from a cosign key
//! file written by Python/libsodium (tests/fixtures).

mod common;

use apiary_oci::manifest::{
    sha256_digest, AnyManifest, Descriptor, ImageManifest, COSIGN_SIMPLESIGNING, OCI_CONFIG,
    OCI_MANIFEST,
};
use apiary_oci::sign::{payload_for, signature_tag, SIGNATURE_ANNOTATION};
use apiary_oci::{
    build, enforce, pull_verified, push, sign, verify, Arch, Cache, Error, ImageRef, PullPolicy,
    RegistryClient, SignatureMode, SignaturePolicy, SigningKey, Verdict, VerifyingKey,
};
use base64ct::{Base64, Encoding};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn host() -> Arch {
    Arch::host().unwrap()
}

fn push_minimal(reg: &Registry, name: &str) -> (ImageRef, String) {
    let image = reg.image(name);
    let built = build(&[(host(), fixture("minimal"))]).unwrap();
    let digest = push(&reg.config(), &built, &image).unwrap();
    (image, digest)
}

fn fixture_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn sign_with_openssl_key_and_verify() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let dir = TempDir::new("keys");
    let (key_path, pub_path) = openssl_keypair(dir.path(), "signer");
    let (_, other_pub) = openssl_keypair(dir.path(), "other");
    let key = SigningKey::from_file(&key_path, None).unwrap();
    let public = VerifyingKey::from_file(&pub_path).unwrap();
    let wrong = VerifyingKey::from_file(&other_pub).unwrap();
    assert_eq!(key.verifying_key(), public);

    let (image, digest) = push_minimal(&reg, "signed/minimal:v1");
    // Before signing: unsigned, with the tag it looked for.
    let e = verify(&cfg, &image, std::slice::from_ref(&public)).unwrap_err();
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(&signature_tag(&digest)), "{e}");

    assert_eq!(
        sign(&cfg, &image, &key).unwrap(),
        digest,
        "a tag is signed by its digest"
    );
    let v = verify(&cfg, &image, std::slice::from_ref(&public)).unwrap();
    assert_eq!(v.digest, digest);
    assert_eq!(v.docker_reference, format!("{}/signed/minimal", reg.addr));
    assert_eq!(v.key, public.fingerprint());
    verify(
        &cfg,
        &image.with_digest(&digest),
        std::slice::from_ref(&public),
    )
    .unwrap();

    // The wrong key: refused, with the reason.
    let e = verify(&cfg, &image, std::slice::from_ref(&wrong)).unwrap_err();
    assert!(matches!(e, Error::SignatureInvalid { .. }), "{e}");
    assert!(
        e.to_string().contains("made by none of the 1 given key(s)"),
        "{e}"
    );
    // Either of several keys.
    verify(&cfg, &image, &[wrong.clone(), public.clone()]).unwrap();

    // The stored form is cosign's: tag sha256-<hex>.sig, one simple-signing layer whose blob is
    // the payload, the base64 DER signature in the annotation; openssl verifies it.
    let client = RegistryClient::new(&cfg).unwrap();
    let sig_ref = image.with_tag(&signature_tag(&digest));
    let fetched = client.get_manifest(&sig_ref).unwrap();
    let AnyManifest::Image(m) = AnyManifest::parse(&fetched.bytes, None).unwrap() else {
        panic!("signature manifest")
    };
    assert_eq!(m.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(m.layers.len(), 1);
    let layer = &m.layers[0];
    assert_eq!(layer.media_type, COSIGN_SIMPLESIGNING);
    let payload = client
        .get_blob(&sig_ref, layer, 1 << 20, "payload")
        .unwrap();
    assert_eq!(payload, payload_for(&image, &digest).unwrap());
    let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc["critical"]["image"]["docker-manifest-digest"], digest);
    assert_eq!(doc["critical"]["type"], "cosign container image signature");
    assert!(doc["optional"].is_null());
    let sig_b64 = &layer.annotations.as_ref().unwrap()[SIGNATURE_ANNOTATION];
    std::fs::write(dir.join("payload"), &payload).unwrap();
    std::fs::write(dir.join("sig.der"), Base64::decode_vec(sig_b64).unwrap()).unwrap();
    let out = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pub_path)
        .arg("-signature")
        .arg(dir.join("sig.der"))
        .arg(dir.join("payload")));
    assert!(out.contains("Verified OK"), "{out}");

    // Signing again with the same key adds nothing; another key adds a second layer.
    sign(&cfg, &image, &key).unwrap();
    let second = SigningKey::generate().unwrap();
    sign(&cfg, &image, &second).unwrap();
    let fetched = client.get_manifest(&sig_ref).unwrap();
    let AnyManifest::Image(m) = AnyManifest::parse(&fetched.bytes, None).unwrap() else {
        panic!()
    };
    assert_eq!(m.layers.len(), 2);
    verify(&cfg, &image, &[second.verifying_key()]).unwrap();
    verify(&cfg, &image, std::slice::from_ref(&public)).unwrap();
}

#[test]
fn openssl_signatures_verify() {
    // openssl signs with a random nonce (so about half of these have a high S); apiary's
    // verifier must accept them all, as cosign's does.
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let dir = TempDir::new("openssl-sigs");
    let (key_path, pub_path) = openssl_keypair(dir.path(), "k");
    let public = VerifyingKey::from_file(&pub_path).unwrap();
    let (image, digest) = push_minimal(&reg, "openssl/minimal:v1");
    let payload = payload_for(&image, &digest).unwrap();
    std::fs::write(dir.join("payload"), &payload).unwrap();
    let mut last = String::new();
    for _ in 0..6 {
        run(Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key_path)
            .arg("-out")
            .arg(dir.join("sig"))
            .arg(dir.join("payload")));
        last = Base64::encode_string(&std::fs::read(dir.join("sig")).unwrap());
        assert!(public.verify_base64(&payload, &last));
    }
    // Stored by hand the way cosign stores it, it verifies through the registry.
    let client = RegistryClient::new(&cfg).unwrap();
    let sig_ref = image.with_tag(&signature_tag(&digest));
    client.push_blob(&sig_ref, &payload).unwrap();
    let config =
        br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    client.push_blob(&sig_ref, config).unwrap();
    let mut ann = BTreeMap::new();
    ann.insert(SIGNATURE_ANNOTATION.to_string(), last);
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor::for_bytes(OCI_CONFIG, config),
        layers: vec![Descriptor {
            annotations: Some(ann),
            ..Descriptor::for_bytes(COSIGN_SIMPLESIGNING, &payload)
        }],
        annotations: None,
    };
    client
        .put_manifest(
            &sig_ref,
            sig_ref.reference(),
            &serde_json::to_vec(&manifest).unwrap(),
            OCI_MANIFEST,
        )
        .unwrap();
    verify(&cfg, &image, &[public]).unwrap();
}

#[test]
fn cosign_encrypted_keys() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let dir = TempDir::new("cosign-keys");

    // apiary's own writer: an ENCRYPTED SIGSTORE PRIVATE KEY file, read back with its password.
    let original = SigningKey::generate().unwrap();
    let key_file = dir.join("cosign.key");
    std::fs::write(
        &key_file,
        original.to_cosign_encrypted_pem(b"correct horse").unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("cosign.pub"),
        original.verifying_key().to_pem().unwrap(),
    )
    .unwrap();
    let loaded = SigningKey::from_file(&key_file, Some(b"correct horse")).unwrap();
    let e = SigningKey::from_file(&key_file, Some(b"battery staple")).unwrap_err();
    assert!(
        e.to_string().contains("cosign.key") && e.to_string().contains("wrong password"),
        "{e}"
    );
    let (image, digest) = push_minimal(&reg, "cosign/own:v1");
    sign(&cfg, &image, &loaded).unwrap();
    let public = VerifyingKey::from_file(&dir.join("cosign.pub")).unwrap();
    assert_eq!(verify(&cfg, &image, &[public]).unwrap().digest, digest);

    // A cosign key file written by Python (hashlib scrypt + libsodium secretbox).
    let key = SigningKey::from_file(
        &fixture_file("cosign-python.key"),
        Some(b"apiary-fixture-password"),
    )
    .unwrap();
    let public = VerifyingKey::from_file(&fixture_file("cosign-python.pub")).unwrap();
    assert_eq!(key.verifying_key(), public);
    let (image, _) = push_minimal(&reg, "cosign/python:v1");
    sign(&cfg, &image, &key).unwrap();
    verify(&cfg, &image, &[public]).unwrap();
    let e = SigningKey::from_file(&fixture_file("cosign-python.key"), Some(b"nope")).unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
}

#[test]
fn require_signed_refuses_unsigned_and_wrongly_signed_images() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let key = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    let require = SignaturePolicy::new(SignatureMode::RequireSigned);

    let (unsigned, digest) = push_minimal(&reg, "policy/unsigned:v1");
    let e =
        pull_verified(&cfg, &cache, &unsigned, PullPolicy::Always, &require, &keys).unwrap_err();
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");
    assert!(
        cache.list().unwrap().is_empty(),
        "a refused image is not cached"
    );
    let e = enforce(&require, &cfg, &unsigned, &digest, &keys).unwrap_err();
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");

    // Warn lets it through with the reason.
    let warn = SignaturePolicy::new(SignatureMode::Warn);
    let (pulled, verdict) =
        pull_verified(&cfg, &cache, &unsigned, PullPolicy::Always, &warn, &keys).unwrap();
    assert_eq!(pulled.digest, digest);
    assert!(
        matches!(&verdict, Verdict::Warning(w) if w.contains("is not signed")),
        "{verdict:?}"
    );
    // AllowUnsigned does not look.
    let (_, verdict) = pull_verified(
        &cfg,
        &cache,
        &unsigned,
        PullPolicy::Always,
        &SignaturePolicy::default(),
        &keys,
    )
    .unwrap();
    assert_eq!(verdict, Verdict::NotChecked);

    // Signed by another key: refused.
    let (other_signed, _) = push_minimal(&reg, "policy/other:v1");
    sign(&cfg, &other_signed, &SigningKey::generate().unwrap()).unwrap();
    let e = pull_verified(
        &cfg,
        &cache,
        &other_signed,
        PullPolicy::Always,
        &require,
        &keys,
    )
    .unwrap_err();
    assert!(matches!(e, Error::SignatureInvalid { .. }), "{e}");

    // RequireSigned with no key configured is a configuration error, not a pass.
    let e = pull_verified(&cfg, &cache, &unsigned, PullPolicy::Always, &require, &[]).unwrap_err();
    assert!(matches!(e, Error::NoVerificationKeys { .. }), "{e}");

    // Per-registry scopes: only the `secure/` namespace requires signatures.
    let scoped = SignaturePolicy::new(SignatureMode::AllowUnsigned)
        .with_scope(format!("{}/secure", reg.addr), SignatureMode::RequireSigned);
    let (secure, _) = push_minimal(&reg, "secure/prog:v1");
    let e = pull_verified(&cfg, &cache, &secure, PullPolicy::Always, &scoped, &keys).unwrap_err();
    assert!(matches!(e, Error::Unsigned { .. }), "{e}");
    pull_verified(&cfg, &cache, &unsigned, PullPolicy::Always, &scoped, &keys).unwrap();
    sign(&cfg, &secure, &key).unwrap();
    let (_, verdict) =
        pull_verified(&cfg, &cache, &secure, PullPolicy::Always, &scoped, &keys).unwrap();
    assert!(matches!(verdict, Verdict::Verified(_)), "{verdict:?}");
}

#[test]
fn signed_image_verifies_from_the_cache_offline() {
    let mut reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let key = SigningKey::generate().unwrap();
    let keys = [key.verifying_key()];
    let require = SignaturePolicy::new(SignatureMode::RequireSigned);
    let (image, digest) = push_minimal(&reg, "offline/prog:v1");
    sign(&cfg, &image, &key).unwrap();

    let (first, verdict) = pull_verified(
        &cfg,
        &cache,
        &image,
        PullPolicy::IfNotPresent,
        &require,
        &keys,
    )
    .unwrap();
    assert!(!first.from_cache);
    let Verdict::Verified(v) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(v.digest, digest);

    reg.stop();
    let (again, verdict) = pull_verified(
        &cfg,
        &cache,
        &image,
        PullPolicy::IfNotPresent,
        &require,
        &keys,
    )
    .unwrap();
    assert!(again.from_cache);
    assert!(
        matches!(verdict, Verdict::Verified(_)),
        "cached signatures verify offline: {verdict:?}"
    );
    let (_, verdict) =
        pull_verified(&cfg, &cache, &image, PullPolicy::Never, &require, &keys).unwrap();
    assert!(matches!(verdict, Verdict::Verified(_)));
    // Another key: the cached signature does not verify, and Never forbids asking again.
    let other = [SigningKey::generate().unwrap().verifying_key()];
    let e = pull_verified(&cfg, &cache, &image, PullPolicy::Never, &require, &other).unwrap_err();
    assert!(matches!(e, Error::SignatureInvalid { .. }), "{e}");
}

#[test]
fn multi_arch_signature_on_the_index() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let key = SigningKey::generate().unwrap();
    let other = if host() == Arch::Arm64 {
        Arch::Amd64
    } else {
        Arch::Arm64
    };
    let built = build(&[(host(), fixture("minimal")), (other, fixture("net"))]).unwrap();
    let image = reg.image("multi/signed:v1");
    let index_digest = push(&cfg, &built, &image).unwrap();
    // `cosign sign` of a multi-arch tag signs the index.
    assert_eq!(sign(&cfg, &image, &key).unwrap(), index_digest);
    let require = SignaturePolicy::new(SignatureMode::RequireSigned);
    let (pulled, verdict) = pull_verified(
        &cfg,
        &cache,
        &image,
        PullPolicy::Always,
        &require,
        &[key.verifying_key()],
    )
    .unwrap();
    assert_eq!(pulled.index_digest.as_deref(), Some(index_digest.as_str()));
    let Verdict::Verified(v) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(v.digest, index_digest);
    assert_ne!(pulled.digest, index_digest);
    assert_eq!(sha256_digest(&built.manifests[0].manifest), pulled.digest);
}
