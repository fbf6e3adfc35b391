//! Loads on several threads at once (a restore of many programs does this) keep their libbpf
//! messages apart: each rejected load reports its own verifier log, the same log it reports
//! when it runs alone, while other threads load and are rejected at the same time.
//!
//! Loading needs root; skips without it unless APIARY_REQUIRE_PRIVILEGED=1.

use apiary_kernel::{load, KernelError, LoadRequest};

/// `log` with kernel addresses (a map's, in `r1 = 0xffff...`) blanked: each load has its own.
fn without_addresses(log: &str) -> String {
    let mut out = String::new();
    let mut rest = log;
    while let Some(at) = rest.find("0xffff") {
        out.push_str(&rest[..at]);
        out.push_str("ADDR");
        let tail = &rest[at + 2..];
        let hex = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        rest = &tail[hex..];
    }
    out.push_str(rest);
    out
}

/// The program and verifier log (addresses blanked) `fixture`'s load is rejected with.
fn rejection(bytes: &[u8], fixture: &str) -> (String, String) {
    let err = load(&LoadRequest {
        object: bytes,
        source: fixture,
        programs: Vec::new(),
        globals: Vec::new(),
        reuse_maps: Vec::new(),
        object_name: None,
        core_btf: None,
    })
    .err()
    .unwrap_or_else(|| panic!("{fixture}: the verifier accepted it"));
    match err {
        KernelError::Verifier {
            program,
            verifier_log,
            ..
        } => (program, without_addresses(&verifier_log)),
        other => panic!("{fixture}: not a verifier rejection: {other}"),
    }
}

#[test]
fn concurrent_loads_report_their_own_verifier_logs() {
    if !apiary_fixtures::privileged() {
        return;
    }
    let fixtures = ["verifier_null", "verifier_loop", "verifier_stack"];
    let objects: Vec<Vec<u8>> = fixtures
        .iter()
        .map(|f| std::fs::read(apiary_fixtures::object(f)).expect("fixture"))
        .collect();
    // Alone first: what each one's rejection says.
    let alone: Vec<(String, String)> = objects
        .iter()
        .zip(fixtures)
        .map(|(o, f)| rejection(o, f))
        .collect();
    for (i, (program, log)) in alone.iter().enumerate() {
        assert!(!log.is_empty(), "{}: an empty verifier log", fixtures[i]);
        for (j, (other, _)) in alone.iter().enumerate() {
            if i != j {
                assert_ne!(program, other, "the fixtures' programs differ");
            }
        }
    }
    // Then all at once, many times over.
    std::thread::scope(|s| {
        for (i, object) in objects.iter().enumerate() {
            let alone = &alone;
            s.spawn(move || {
                for round in 0..25 {
                    let got = rejection(object, fixtures[i]);
                    assert_eq!(
                        got, alone[i],
                        "{} in round {round}: another thread's messages got into its log",
                        fixtures[i]
                    );
                }
            });
        }
    });
}
