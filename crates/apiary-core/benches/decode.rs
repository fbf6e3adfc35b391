//! The event decoder's ceiling on one core, without the kernel: `struct event` of the run
//! fixture written as JSON lines and as table rows. `cargo bench -p apiary-core --bench decode`.

use apiary_core::events::Format;
use std::time::Instant;

fn main() {
    let bytes = std::fs::read(apiary_fixtures::object("events")).expect("fixture");
    let info = apiary_core::elf::inspect(&bytes).expect("inspect");
    let btf = info.btf.as_ref().expect("btf");
    let id = btf.find_struct("event").expect("struct event");
    let f = Format::new(btf, id).expect("format");
    let mut ev = vec![0u8; f.size()];
    ev[0..4].copy_from_slice(&4242u32.to_le_bytes());
    ev[16..20].copy_from_slice(&1u32.to_le_bytes());
    ev[20..33].copy_from_slice(b"uprobe_target");
    let n = 5_000_000u32;
    for (label, json) in [("JSON lines", true), ("table rows", false)] {
        let mut out = String::with_capacity(1 << 20);
        let mut total = 0usize;
        let t0 = Instant::now();
        for i in 0..n {
            ev[4..8].copy_from_slice(&i.to_le_bytes());
            if json {
                f.write_json(&ev, &mut out);
            } else {
                f.write_row(&ev, &mut out);
            }
            out.push('\n');
            if out.len() > (1 << 20) - 512 {
                total += out.len();
                out.clear();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        total += out.len();
        println!(
            "decode {} ({} bytes each): {:.2} M events/s on one core ({:.0} ns/event, {} MB written)",
            label,
            f.size(),
            n as f64 / secs / 1e6,
            secs * 1e9 / n as f64,
            total >> 20
        );
    }
}
