//! Image references arrive in load requests and declarations. A reference that parses must
//! print back to a string that parses to the same reference, since the cache keys and the
//! store record references by their printed form.
#![no_main]

use apiary_oci::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: apiary_fuzz::emit_seeds("oci_reference"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(r) = text.parse::<ImageRef>() else { return };
    let printed = r.to_string();
    let again: ImageRef = match printed.parse() {
        Ok(a) => a,
        Err(e) => panic!("{text:?} parsed, but its printed form {printed:?} does not: {e}"),
    };
    assert_eq!(r, again, "{text:?} → {printed:?} changed on re-parse");
    let _ = (r.api_host(), r.reference(), r.repository_name());
    let _ = apiary_oci::sign::signature_tag(r.digest.as_deref().unwrap_or("sha256:00"));
    let _ = apiary_oci::sign::payload_for(&r, "sha256:0000000000000000000000000000000000000000000000000000000000000000");
});
