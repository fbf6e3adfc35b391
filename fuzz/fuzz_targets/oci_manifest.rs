//! Registries are untrusted: a manifest, index or image config is parsed as each kind the
//! registry could claim it is (by Content-Type or by its own mediaType), and a config's labels
//! are read as apiary does before loading an image's programs.
#![no_main]

use apiary_oci::image::{labels_from_config, program_type_from_label};
use apiary_oci::manifest::{self, AnyManifest, ImageConfig};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST_LIST),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
];

fuzz_target!(init: apiary_fuzz::emit_seeds("oci_manifest"), |data: &[u8]| {
    for ct in CONTENT_TYPES {
        match AnyManifest::parse(data, *ct) {
            Ok(AnyManifest::Image(m)) => {
                for d in std::iter::once(&m.config).chain(&m.layers) {
                    let _ = apiary_oci::layer::LayerCompression::from_media_type(&d.media_type);
                    let _ = manifest::verify_digest("blob", &d.digest, data);
                }
            }
            Ok(AnyManifest::Index(i)) => {
                for d in &i.manifests {
                    if let Some(p) = &d.platform {
                        let _ = p.architecture.parse::<apiary_oci::Arch>();
                    }
                    let _ = manifest::verify_digest("manifest", &d.digest, data);
                }
            }
            Err(_) => {}
        }
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(data) {
        let _ = config.architecture.parse::<apiary_oci::Arch>();
        if let Ok((programs, maps)) = labels_from_config("fuzz/image:latest", &config) {
            for kind in programs.values() {
                let _ = program_type_from_label(kind);
            }
            let _ = maps.len();
        }
    }
});
