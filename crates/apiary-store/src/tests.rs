use super::*;
use apiary_core::TcDirection;

fn new_prog<'a>(
    name: &'a str,
    meta: &'a BTreeMap<String, String>,
    owner: Option<ProgramId>,
) -> NewProgram<'a> {
    NewProgram {
        name,
        prog_type: ProgramType::Xdp,
        section: "xdp",
        source: "/tmp/x.o",
        object_sha256: "abc",
        map_owner_id: owner,
        globals: &[],
        metadata: meta,
    }
}

#[test]
fn programs_maps_links_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let meta: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    let (a, b) = s
        .write(|tx| -> Result<_> {
            put_object(tx, "abc", b"\x7fELF")?;
            let a = insert_program(tx, &new_prog("a", &meta, None))?;
            set_program_kernel(tx, a, 42, "deadbeef")?;
            let m = insert_map(
                tx,
                &MapRecord {
                    id: MapId(0),
                    owner_id: a,
                    name: "counts".into(),
                    map_type: "hash".into(),
                    kernel_id: 7,
                    key_size: 4,
                    value_size: 8,
                    max_entries: 16,
                    by_name: false,
                },
            )?;
            add_program_map(tx, a, m)?;
            let b = insert_program(tx, &new_prog("b", &meta, Some(a)))?;
            add_program_map(tx, b, m)?;
            Ok((a, b))
        })
        .unwrap();
    let p = get_program(s.read(), a).unwrap().unwrap();
    assert_eq!(
        (p.name.as_str(), p.kernel_id, p.tag.as_str()),
        ("a", 42, "deadbeef")
    );
    assert_eq!(p.metadata.get("app").map(String::as_str), Some("web"));
    assert_eq!(maps_of_program(s.read(), b).unwrap()[0].name, "counts");
    assert_eq!(map_borrowers(s.read(), a).unwrap(), vec![b]);

    let spec = AttachSpec::Tc(apiary_core::types::tc::TcAttach {
        iface: "veth0".into(),
        netns: None,
        direction: TcDirection::Ingress,
        priority: 10,
        proceed_on: vec![],
        legacy: true,
    });
    let handle = TcHandle {
        ifindex: 3,
        handle: 1,
        priority: 49152,
    };
    let l = s
        .write(|tx| -> Result<_> {
            let l = insert_link(tx, a, &spec)?;
            set_link_kernel(tx, l, &[5], &LinkKind::TcFilter(handle))?;
            Ok(l)
        })
        .unwrap();
    let lr = get_link(s.read(), l).unwrap().unwrap();
    assert_eq!(lr.spec, spec);
    assert_eq!(lr.kernel_link_ids, vec![5]);
    assert_eq!(lr.kind, LinkKind::TcFilter(handle));
    assert_eq!(list_links(s.read(), Some(a)).unwrap().len(), 1);
    assert_eq!(list_links(s.read(), Some(b)).unwrap().len(), 0);

    s.write(|tx| -> Result<_> {
        delete_program(tx, b)?;
        delete_program(tx, a)
    })
    .unwrap();
    assert!(list_programs(s.read()).unwrap().is_empty());
    assert!(list_maps(s.read()).unwrap().is_empty());
    assert!(
        get_object(s.read(), "abc").unwrap().is_none(),
        "orphan object bytes are dropped"
    );
}

#[test]
fn ids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let meta = BTreeMap::new();
    let a = s
        .write(|tx| -> Result<_> {
            put_object(tx, "abc", b"x")?;
            insert_program(tx, &new_prog("a", &meta, None))
        })
        .unwrap();
    s.write(|tx| -> Result<_> { delete_program(tx, a) })
        .unwrap();
    let b = s
        .write(|tx| -> Result<_> {
            put_object(tx, "abc", b"x")?;
            insert_program(tx, &new_prog("b", &meta, None))
        })
        .unwrap();
    assert!(
        b.0 > a.0,
        "pins are named by id, so an id must never come back"
    );
}

#[test]
fn failed_transaction_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let meta = BTreeMap::new();
    let r: Result<()> = s.write(|tx| {
        put_object(tx, "abc", b"x")?;
        insert_program(tx, &new_prog("a", &meta, None))?;
        Err(StoreError::Sql(rusqlite::Error::InvalidQuery))
    });
    assert!(r.is_err());
    assert!(list_programs(s.read()).unwrap().is_empty());
    // Reopening runs no migration twice.
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert!(list_programs(s.read()).unwrap().is_empty());
}

/// A store written by the schema before typed rows (version 3) reads back typed: '' becomes no
/// namespace / no direction, and the JSON a link kept becomes its kind.
#[test]
fn version_3_rows_migrate_to_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apiary.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        for m in &schema::MIGRATIONS[..3] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 3).unwrap();
        c.execute_batch(
            "INSERT INTO objects VALUES ('abc', x'00');
             INSERT INTO programs (name, prog_type, section, source, object_sha256, kernel_id, tag, globals, metadata, loaded_at)
                 VALUES ('p', 'xdp', 'xdp', 's', 'abc', 7, 't', '[]', '{}', 'now');
             INSERT INTO chains VALUES (1, 'xdp', 'veth0', '', '', 'skb', 10, 11);
             INSERT INTO chains VALUES (2, 'tc', 'veth1', '/run/netns/a', 'egress', 'auto', 12, 13);",
        )
        .unwrap();
        let spec = |s: &str| s.replace('\'', "\"");
        let xdp = spec("{'type':'xdp','iface':'veth0','mode':'skb','priority':50}");
        let tc =
            spec("{'type':'tc','iface':'veth1','direction':'ingress','priority':1,'legacy':true}");
        let links = [
            (xdp.as_str(), Some(r#"{"chain":1}"#)),
            (
                tc.as_str(),
                Some(
                    r#"{"iface":"veth1","netns":null,"ifindex":4,"direction":"ingress","handle":2,"priority":49152}"#,
                ),
            ),
            (xdp.as_str(), None),
        ];
        for (spec, extra) in links {
            c.execute(
                "INSERT INTO links (program_id, spec, kernel_link_ids, extra, created_at) VALUES (1, ?1, '[]', ?2, 'now')",
                rusqlite::params![spec, extra],
            )
            .unwrap();
        }
        c.execute_batch("INSERT INTO chain_slots VALUES (1, 1, 50, 0, 4);")
            .unwrap();
    }
    let mut s = Store::open(dir.path()).unwrap();
    let chains = list_chains(s.read()).unwrap();
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0].hook.netns, None);
    assert_eq!(chains[0].hook.direction, None);
    assert_eq!(chains[0].hook.mode, apiary_core::XdpMode::Skb);
    assert_eq!(chains[1].hook.netns, Some("/run/netns/a".into()));
    assert_eq!(chains[1].hook.direction, Some(TcDirection::Egress));
    assert_eq!(
        find_chain(s.read(), &chains[1].hook).unwrap(),
        Some(chains[1].clone())
    );
    assert_eq!(
        chain_slots(s.read(), ChainId(1)).unwrap().len(),
        1,
        "slots still point at their chain"
    );
    let kinds: Vec<LinkKind> = list_links(s.read(), None)
        .unwrap()
        .into_iter()
        .map(|l| l.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            LinkKind::ChainMember,
            LinkKind::TcFilter(TcHandle {
                ifindex: 4,
                handle: 2,
                priority: 49152
            }),
            LinkKind::Links
        ]
    );
    // The hook's identity stays unique after the rebuild.
    let dup = s.write(|tx| -> Result<_> { insert_chain(tx, &chains[0]) });
    assert!(dup.is_err(), "a second chain on the same hook is refused");
}

/// Frames in the WAL and how many of them are checkpointed (a PASSIVE checkpoint's answer).
fn wal_frames(s: &Store) -> (i64, i64) {
    // Read-only check: a checkpoint of nothing new reports the WAL as it is.
    s.read()
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .unwrap()
}

#[test]
fn commits_without_checkpointing_are_checkpointed_when_it_is_on_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let meta = BTreeMap::new();
    s.write(|tx| -> Result<_> { put_object(tx, "abc", b"\x7fELF") })
        .unwrap();
    s.set_checkpointing(false).unwrap();
    for i in 0..(WAL_CHECKPOINT_PAGES * 2) {
        s.write(|tx| -> Result<_> { insert_program(tx, &new_prog(&format!("p{i}"), &meta, None)) })
            .unwrap();
    }
    // Past the threshold, and nothing was checkpointed by a commit: the WAL's size says so.
    let wal = dir.path().join("apiary.db-wal");
    let grown = std::fs::metadata(&wal).unwrap().len();
    assert!(
        grown > 2 * (WAL_CHECKPOINT_PAGES as u64) * 4096,
        "the WAL kept every commit: {grown} bytes"
    );
    s.set_checkpointing(true).unwrap();
    let (frames, done) = wal_frames(&s);
    assert_eq!(frames, done, "all of the WAL checkpointed");
    // And each commit is there, from a new connection.
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        list_programs(s.read()).unwrap().len() as i64,
        WAL_CHECKPOINT_PAGES * 2
    );
}
