//! A bytecode layer is a (gzip) tar from a registry: it must yield one regular file whose path
//! stays inside the image, never more bytes than the limit, and errors (not panics) for bombs,
//! links, devices and garbage. The first input byte picks the compression.
#![no_main]

use apiary_oci::layer::{check_object_for, extract_object, LayerCompression};
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

const LIMIT: u64 = 1 << 20;

fuzz_target!(init: apiary_fuzz::emit_seeds("oci_layer"), |data: &[u8]| {
    let Some((&mode, layer)) = data.split_first() else { return };
    let compression = if mode & 1 == 0 {
        LayerCompression::Gzip
    } else {
        LayerCompression::None
    };
    let Ok(obj) = extract_object(layer, compression, LIMIT) else { return };
    assert!(obj.bytes.len() as u64 <= LIMIT, "{} bytes past the limit", obj.bytes.len());
    // Placed under an image directory, the entry must stay inside it.
    let mut depth = 0i64;
    for c in Path::new(&obj.path).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => panic!("absolute entry {:?}", obj.path),
        }
        assert!(depth >= 0, "entry {:?} escapes the image", obj.path);
    }
    assert!(!obj.path.contains('\0'), "NUL in entry {:?}", obj.path);
    let _ = check_object_for(&obj.bytes, apiary_oci::Arch::Amd64);
});
