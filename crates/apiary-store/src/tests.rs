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
                    id: 0,
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
    let l = s
        .write(|tx| -> Result<_> {
            let l = insert_link(tx, a, &spec)?;
            set_link_kernel(tx, l, &[5], Some(&serde_json::json!({"handle": 1})))?;
            Ok(l)
        })
        .unwrap();
    let lr = get_link(s.read(), l).unwrap().unwrap();
    assert_eq!(lr.spec, spec);
    assert_eq!(lr.kernel_link_ids, vec![5]);
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
