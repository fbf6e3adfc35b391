//! Pull, push, cache and authentication against a real registry process.

mod common;

use apiary_oci::manifest::{sha256_digest, AnyManifest, OCI_INDEX};
use apiary_oci::{
    build, inspect, pull, push, Arch, Cache, ClientConfig, Error, PullPolicy, RegistryAuth,
    RegistryClient,
};
use base64ct::{Base64, Encoding};
use common::*;

fn host_arch() -> Arch {
    Arch::host().expect("tests run on an architecture images are built for")
}

#[test]
fn build_push_pull_round_trip() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let object = fixture("minimal");

    let built = build(&[(host_arch(), object.clone())]).unwrap();
    assert!(built.index.is_none(), "one object gives a plain manifest");
    let m = &built.manifests[0];
    assert_eq!(
        m.programs.get("count_getppid").map(String::as_str),
        Some("tracepoint")
    );
    assert_eq!(m.maps.get("counts").map(String::as_str), Some("array"));

    let image = reg.image("apiary/minimal:v1");
    let pushed = push(&cfg, &built, &image).unwrap();
    assert_eq!(pushed, built.digest());

    let pulled = pull(&cfg, &cache, &image, PullPolicy::Always).unwrap();
    assert_eq!(
        pulled.digest, pushed,
        "the digest recorded is the manifest's"
    );
    assert_eq!(pulled.index_digest, None);
    assert_eq!(pulled.object, object, "the object comes back byte for byte");
    assert_eq!(pulled.arch, host_arch());
    assert!(!pulled.from_cache);
    assert_eq!(
        serde_json::to_string(&pulled.programs).unwrap(),
        r#"{"count_getppid":"tracepoint"}"#
    );
    assert_eq!(
        serde_json::to_string(&pulled.maps).unwrap(),
        r#"{"counts":"array"}"#
    );
    assert_eq!(
        pulled.pinned().to_string(),
        format!("{}/apiary/minimal@{pushed}", reg.addr)
    );

    // The labels are stored where bpfman reads them: config.Labels, as JSON strings.
    let client = RegistryClient::new(&cfg).unwrap();
    let manifest = client.get_manifest(&image).unwrap();
    let AnyManifest::Image(manifest) =
        AnyManifest::parse(&manifest.bytes, manifest.media_type.as_deref()).unwrap()
    else {
        panic!("expected an image manifest");
    };
    let config = client
        .get_blob(&image, &manifest.config, 1 << 20, "config")
        .unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config["config"]["Labels"]["io.ebpf.programs"],
        r#"{"count_getppid":"tracepoint"}"#
    );
    assert_eq!(
        config["config"]["Labels"]["io.ebpf.maps"],
        r#"{"counts":"array"}"#
    );
    assert_eq!(config["architecture"], host_arch().name());
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(
        manifest.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // Pull by digest, and rebuilding gives the same digest (reproducible build).
    let by_digest = pull(
        &cfg,
        &cache,
        &image.with_digest(&pushed),
        PullPolicy::Always,
    )
    .unwrap();
    assert_eq!(by_digest.digest, pushed);
    assert_eq!(build(&[(host_arch(), object)]).unwrap().digest(), pushed);

    // inspect: from the cache, and from the registry without a cache.
    let info = inspect(&cfg, Some(&cache), &image).unwrap();
    assert!(info.from_cache);
    assert_eq!(info.programs, pulled.programs);
    let info = inspect(&cfg, None, &image).unwrap();
    assert!(!info.from_cache);
    assert_eq!(
        (info.digest.as_str(), info.maps.len()),
        (pushed.as_str(), 1)
    );

    // The cache lists both references; removing one keeps the shared blobs for the other.
    let listed = cache.list().unwrap();
    let refs: Vec<&str> = listed.iter().map(|c| c.reference.as_str()).collect();
    assert_eq!(refs.len(), 2, "{refs:?}");
    assert!(
        refs.contains(&format!("{}/apiary/minimal:v1", reg.addr).as_str()),
        "{refs:?}"
    );
    assert_eq!(listed[0].platforms[0].programs, pulled.programs);
    assert_eq!(cache.remove(&image.to_string()).unwrap(), 1);
    assert!(pull(&cfg, &cache, &image.with_digest(&pushed), PullPolicy::Never).is_ok());
    assert_eq!(cache.remove(&pushed).unwrap(), 1);
    assert!(cache.list().unwrap().is_empty());
    let blobs = std::fs::read_dir(cache_dir.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "removing the last reference removes its blobs");
    let e = cache.remove(&pushed).unwrap_err();
    assert!(matches!(e, Error::NotCached { .. }), "{e}");
}

#[test]
fn multi_arch_index_picks_the_host_arch() {
    let reg = Registry::start(Auth::None);
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let host = host_arch();
    let other = if host == Arch::Arm64 {
        Arch::Amd64
    } else {
        Arch::Arm64
    };
    // Different objects per architecture, so the test sees which one it got.
    let built = build(&[(other, fixture("net")), (host, fixture("minimal"))]).unwrap();
    let index = built.index.as_ref().expect("several objects give an index");
    let image = reg.image("apiary/multi:v1");
    let pushed = push(&reg.config(), &built, &image).unwrap();
    assert_eq!(pushed, sha256_digest(index));

    let client = RegistryClient::new(&reg.config()).unwrap();
    let fetched = client.get_manifest(&image).unwrap();
    assert_eq!(fetched.media_type.as_deref(), Some(OCI_INDEX));
    let AnyManifest::Index(ix) = AnyManifest::parse(&fetched.bytes, None).unwrap() else {
        panic!("expected an index");
    };
    let platforms: Vec<String> = ix
        .manifests
        .iter()
        .map(|d| {
            d.platform
                .as_ref()
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .unwrap()
        })
        .collect();
    assert_eq!(
        platforms,
        vec![format!("linux/{other}"), format!("linux/{host}")]
    );

    let pulled = pull(&reg.config(), &cache, &image, PullPolicy::Always).unwrap();
    let host_manifest = built.manifests.iter().find(|m| m.arch == host).unwrap();
    assert_eq!(pulled.arch, host);
    assert_eq!(
        pulled.digest, host_manifest.manifest_digest,
        "the digest is the chosen manifest's"
    );
    assert_eq!(pulled.index_digest.as_deref(), Some(pushed.as_str()));
    assert_eq!(pulled.object, fixture("minimal"));
    assert_eq!(
        pulled.programs.keys().collect::<Vec<_>>(),
        vec!["count_getppid"]
    );

    // Another architecture, chosen explicitly, gets its own object and labels (net.bpf.c's
    // programs are XDP, TC and TCX).
    let cfg_other = ClientConfig {
        arch: Some(other),
        ..reg.config()
    };
    let pulled_other = pull(&cfg_other, &cache, &image, PullPolicy::IfNotPresent).unwrap();
    assert!(
        !pulled_other.from_cache,
        "that architecture was not cached yet"
    );
    assert_eq!(pulled_other.object, fixture("net"));
    let kinds: std::collections::BTreeSet<&str> =
        pulled_other.programs.values().map(String::as_str).collect();
    assert!(
        kinds.contains("xdp") && kinds.contains("tc") && kinds.contains("tcx"),
        "{kinds:?}"
    );

    // An architecture the index lacks: a clear error listing what it has.
    let cfg_s390 = ClientConfig {
        arch: Some(Arch::S390x),
        ..reg.config()
    };
    let e = pull(&cfg_s390, &cache, &image, PullPolicy::Always).unwrap_err();
    assert!(matches!(e, Error::NoMatchingPlatform { .. }), "{e}");
    assert!(e.to_string().contains(&format!("linux/{host}")), "{e}");

    let info = inspect(&reg.config(), None, &image).unwrap();
    assert_eq!(info.platforms.len(), 2);
    assert_eq!(info.manifest_digest, host_manifest.manifest_digest);
}

#[test]
fn pull_policies_and_the_cache() {
    let mut reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let image = reg.image("apiary/policy:v1");

    // Never, with nothing cached: an error, and the registry is not needed to say so.
    let e = pull(&cfg, &cache, &image, PullPolicy::Never).unwrap_err();
    assert!(matches!(e, Error::NotCached { .. }), "{e}");
    assert!(e.to_string().contains("pull policy is Never"), "{e}");

    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();
    let digest = push(&cfg, &built, &image).unwrap();
    let first = pull(&cfg, &cache, &image, PullPolicy::IfNotPresent).unwrap();
    assert!(!first.from_cache);

    // Stop the registry: IfNotPresent and Never are served from the cache, Always fails.
    reg.stop();
    let second = pull(&cfg, &cache, &image, PullPolicy::IfNotPresent).unwrap();
    assert!(second.from_cache);
    assert_eq!(
        (second.digest.as_str(), second.object.as_slice()),
        (digest.as_str(), first.object.as_slice())
    );
    let by_digest = pull(
        &cfg,
        &cache,
        &image.with_digest(&digest),
        PullPolicy::IfNotPresent,
    )
    .unwrap();
    assert!(by_digest.from_cache);
    let never = pull(&cfg, &cache, &image, PullPolicy::Never).unwrap();
    assert_eq!(never.digest, digest);
    let e = pull(&cfg, &cache, &image, PullPolicy::Always).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");

    // A cache tampered with after the pull is refused like a tampered registry.
    let layer_digest = sha256_digest(&built.manifests[0].layer);
    let blob = cache_dir.join(&format!("blobs/sha256/{}", &layer_digest[7..]));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let e = pull(&cfg, &cache, &image, PullPolicy::Never).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
}

#[test]
fn basic_auth_required_and_given() {
    let reg = Registry::start(Auth::Htpasswd {
        user: "alice".into(),
        password: "s3cret".into(),
    });
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let image = reg.image("private/minimal:v1");
    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();

    let e = push(&reg.config(), &built, &image).unwrap_err();
    assert!(matches!(e, Error::AuthRequired { .. }), "{e}");
    let digest = push(&reg.config_with("alice", "s3cret"), &built, &image).unwrap();

    // Anonymous pull: refused with a message that says what to do.
    let e = pull(&reg.config(), &cache, &image, PullPolicy::Always).unwrap_err();
    assert!(matches!(e, Error::AuthRequired { .. }), "{e}");
    assert!(e.to_string().contains("requires authentication"), "{e}");
    // Wrong password: refused, and said so.
    let e = pull(
        &reg.config_with("alice", "wrong"),
        &cache,
        &image,
        PullPolicy::Always,
    )
    .unwrap_err();
    assert!(matches!(e, Error::AuthRejected { .. }), "{e}");

    // Explicit credentials.
    let pulled = pull(
        &reg.config_with("alice", "s3cret"),
        &cache,
        &image,
        PullPolicy::Always,
    )
    .unwrap();
    assert_eq!(pulled.digest, digest);

    // A podman/docker auth file with a base64 `auth` entry for this registry.
    let dir = TempDir::new("auth");
    let auth_file = dir.join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}, "other.example.com": {{"auth": "{}"}}}}}}"#,
            reg.addr,
            Base64::encode_string(b"alice:s3cret"),
            Base64::encode_string(b"x:y")
        ),
    )
    .unwrap();
    let cfg = ClientConfig {
        auth_file: Some(auth_file),
        ..reg.config()
    };
    let fresh = Cache::new(dir.join("cache"));
    let pulled = pull(&cfg, &fresh, &image, PullPolicy::Always).unwrap();
    assert_eq!(pulled.digest, digest);
    // Explicit credentials win over the file.
    let cfg = ClientConfig {
        credentials: Some(RegistryAuth::new("alice", "wrong")),
        ..cfg
    };
    assert!(matches!(
        pull(&cfg, &fresh, &image, PullPolicy::Always).unwrap_err(),
        Error::AuthRejected { .. }
    ));
}

#[test]
fn bearer_token_flow() {
    let tokens = TokenServer::start("bob", "hunter2");
    let reg = Registry::start(Auth::Token(tokens.clone()));
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let image = reg.image("team/tokened:v1");
    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();

    // Anonymous: the token service hands out a token without access; the registry refuses it.
    let e = push(&reg.config(), &built, &image).unwrap_err();
    assert!(matches!(e, Error::AuthRequired { .. }), "{e}");
    // Wrong password: the token service refuses.
    let e = push(&reg.config_with("bob", "nope"), &built, &image).unwrap_err();
    assert!(matches!(e, Error::AuthRejected { .. }), "{e}");
    assert!(
        e.to_string().contains("invalid username or password"),
        "{e}"
    );

    let cfg = reg.config_with("bob", "hunter2");
    let before = tokens.requests.load(std::sync::atomic::Ordering::Relaxed);
    let digest = push(&cfg, &built, &image).unwrap();
    let used = tokens.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        (1..=3).contains(&used),
        "a push fetches a token per scope, not per request: {used}"
    );
    let pulled = pull(&cfg, &cache, &image, PullPolicy::Always).unwrap();
    assert_eq!(pulled.digest, digest);
    assert_eq!(pulled.programs.len(), 1);

    let e = pull(&reg.config(), &cache, &image, PullPolicy::Always).unwrap_err();
    assert!(matches!(e, Error::AuthRequired { .. }), "{e}");
}

#[test]
fn https_verifies_certificates_by_default() {
    let dir = TempDir::new("tls");
    let (tls, ca) = tls_files(dir.path());
    let reg = Registry::start_with(Auth::None, Some(tls));
    let cache = Cache::new(dir.join("cache"));
    let image = reg.image("tls/minimal:v1");
    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();

    // Not marked insecure and the CA is unknown: refused.
    let strict = ClientConfig::default();
    let e = push(&strict, &built, &image).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e}");
    assert!(
        e.to_string().to_lowercase().contains("certificate")
            || e.to_string().contains("UnknownIssuer"),
        "{e}"
    );

    // With the private CA: verified HTTPS.
    let with_ca = ClientConfig {
        ca_file: Some(ca),
        ..ClientConfig::default()
    };
    let digest = push(&with_ca, &built, &image).unwrap();
    assert_eq!(
        pull(&with_ca, &cache, &image, PullPolicy::Always)
            .unwrap()
            .digest,
        digest
    );

    // --tls-verify=false: unverified HTTPS is allowed.
    let unverified = ClientConfig {
        tls_verify: false,
        ..ClientConfig::default()
    };
    assert_eq!(
        pull(&unverified, &cache, &image, PullPolicy::Always)
            .unwrap()
            .digest,
        digest
    );
}

#[test]
fn plain_http_only_for_insecure_registries() {
    let reg = Registry::start(Auth::None);
    let image = reg.image("plain/minimal:v1");
    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();
    let e = push(&ClientConfig::default(), &built, &image).unwrap_err();
    assert!(
        matches!(e, Error::Transport { .. }),
        "HTTPS to a plain-HTTP registry fails: {e}"
    );
    push(&reg.config(), &built, &image).unwrap();
}

#[test]
fn tampered_blob_in_registry_storage_is_refused() {
    let reg = Registry::start(Auth::None);
    let cfg = reg.config();
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let image = reg.image("apiary/tampered:v1");
    let built = build(&[(host_arch(), fixture("minimal"))]).unwrap();
    push(&cfg, &built, &image).unwrap();

    // Flip a byte of the layer where the registry keeps it; same size, different content.
    let layer_digest = sha256_digest(&built.manifests[0].layer);
    let file = reg.blob_file(&layer_digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();

    let e = pull(&cfg, &cache, &image, PullPolicy::Always).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert!(
        e.to_string().starts_with("digest mismatch for layer"),
        "{e}"
    );
    assert!(
        cache.list().unwrap().is_empty(),
        "nothing of a refused image is cached"
    );

    // A tampered config is refused the same way.
    let config_digest = sha256_digest(&built.manifests[0].config);
    let file = reg.blob_file(&config_digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let e = inspect(&cfg, None, &image).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("digest mismatch for image config"),
        "{e}"
    );
}

#[test]
fn missing_image_and_bad_reference() {
    let reg = Registry::start(Auth::None);
    let cache_dir = TempDir::new("cache");
    let cache = Cache::new(cache_dir.path());
    let e = pull(
        &reg.config(),
        &cache,
        &reg.image("nope/nothing:v1"),
        PullPolicy::Always,
    )
    .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = "localhost:5000/UPPER:v1"
        .parse::<apiary_oci::ImageRef>()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidReference { .. }), "{e}");
}
