//! `apiary run PACKAGE` reads a `.package.json` from a file or URL: the JSON, the base64 gzip
//! object inside it (bounded), the digest check, then inspection of the object.
#![no_main]

use apiary::package::{globals_of, Package};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: apiary_fuzz::emit_seeds("package"), |data: &[u8]| {
    let Ok(p) = Package::parse(data) else { return };
    let Ok(object) = p.object() else { return };
    if let Ok(info) = apiary_core::elf::inspect(&object) {
        let _ = globals_of(&info);
    }
});
