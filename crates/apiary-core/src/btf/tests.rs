use super::*;
use serde_json::json;

/// Assembles BTF blobs by hand so tests control every byte, including broken ones.
#[derive(Default)]
struct Builder {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

impl Builder {
    fn new() -> Self {
        Builder {
            strings: vec![0],
            ..Default::default()
        }
    }

    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, w: &[u32]) {
        for x in w {
            self.types.extend_from_slice(&x.to_le_bytes());
        }
    }

    fn head(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, st: u32) -> TypeId {
        let n = self.s(name);
        let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
        self.words(&[n, info, st]);
        self.count += 1;
        self.count
    }

    fn int(&mut self, name: &str, size: u32, enc: u32, bits: u32) -> TypeId {
        let id = self.head(name, KIND_INT, false, 0, size);
        self.words(&[(enc << 24) | bits]);
        id
    }

    fn simple(&mut self, kind: u32, name: &str, target: u32) -> TypeId {
        self.head(name, kind, false, 0, target)
    }

    fn array(&mut self, elem: TypeId, index: TypeId, len: u32) -> TypeId {
        let id = self.head("", KIND_ARRAY, false, 0, 0);
        self.words(&[elem, index, len]);
        id
    }

    fn composite(
        &mut self,
        kind: u32,
        name: &str,
        size: u32,
        kflag: bool,
        members: &[(&str, TypeId, u32, u32)],
    ) -> TypeId {
        let id = self.head(name, kind, kflag, members.len() as u32, size);
        for (n, ty, off, bits) in members {
            let n = self.s(n);
            let off = if kflag { (bits << 24) | off } else { *off };
            self.words(&[n, *ty, off]);
        }
        id
    }

    fn enum32(&mut self, name: &str, size: u32, signed: bool, vals: &[(&str, i32)]) -> TypeId {
        let id = self.head(name, KIND_ENUM, signed, vals.len() as u32, size);
        for (n, v) in vals {
            let n = self.s(n);
            self.words(&[n, *v as u32]);
        }
        id
    }

    fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        let tl = self.types.len() as u32;
        for w in [24u32, 0, tl, tl, self.strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

struct Fixture {
    btf: Btf,
    u8_t: TypeId,
    u32_t: TypeId,
    int_t: TypeId,
    state: TypeId,
    comm: TypeId,
    event: TypeId,
    ints3: TypeId,
    flt: TypeId,
    dbl: TypeId,
    bool_t: TypeId,
    ptr: TypeId,
    i8_t: TypeId,
}

/// struct event { u32 pid; int delta; enum state st; char comm[8]; struct inner in;
///                unsigned int counts[3]; unsigned int flag:1, level:3; _Bool ok; void *p; }
fn fixture() -> Fixture {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4, 0, 32);
    let int_t = b.int("int", 4, INT_SIGNED, 32);
    let chr = b.int("char", 1, INT_SIGNED, 8);
    let uchar = b.int("unsigned char", 1, 0, 8);
    let bool_t = b.int("_Bool", 1, INT_BOOL, 8);
    let idx = b.int("__ARRAY_SIZE_TYPE__", 4, 0, 32);
    let u32_t = b.simple(KIND_TYPEDEF, "u32", uint);
    let u8_t = b.simple(KIND_TYPEDEF, "u8", uchar);
    let state = b.enum32(
        "state",
        4,
        false,
        &[("IDLE", 0), ("RUNNING", 1), ("DONE", 7)],
    );
    let comm = b.array(chr, idx, 8);
    let ushort = b.int("unsigned short", 2, 0, 16);
    let inner = b.composite(
        KIND_STRUCT,
        "inner",
        8,
        false,
        &[("a", u32_t, 0, 0), ("b", ushort, 32, 0)],
    );
    let ints3 = b.array(uint, idx, 3);
    let void_ptr = b.simple(KIND_PTR, "", 0);
    let event = b.composite(
        KIND_STRUCT,
        "event",
        56,
        true,
        &[
            ("pid", u32_t, 0, 0),
            ("delta", int_t, 32, 0),
            ("st", state, 64, 0),
            ("comm", comm, 96, 0),
            ("in", inner, 160, 0),
            ("counts", ints3, 224, 0),
            ("flag", uint, 320, 1),
            ("level", uint, 321, 3),
            ("ok", bool_t, 328, 0),
            ("p", void_ptr, 384, 0),
        ],
    );
    let flt = b.head("float", KIND_FLOAT, false, 0, 4);
    let dbl = b.head("double", KIND_FLOAT, false, 0, 8);
    let i8_t = b.int("signed char", 1, INT_SIGNED, 8);
    let btf = Btf::parse(&b.finish()).expect("fixture parses");
    Fixture {
        btf,
        u8_t,
        u32_t,
        int_t,
        state,
        comm,
        event,
        ints3,
        flt,
        dbl,
        bool_t,
        ptr: void_ptr,
        i8_t,
    }
}

fn event_bytes() -> Vec<u8> {
    let mut v = vec![0u8; 56];
    v[0..4].copy_from_slice(&1234u32.to_le_bytes());
    v[4..8].copy_from_slice(&(-5i32).to_le_bytes());
    v[8..12].copy_from_slice(&7u32.to_le_bytes());
    v[12..16].copy_from_slice(b"bash");
    v[20..24].copy_from_slice(&99u32.to_le_bytes());
    v[24..26].copy_from_slice(&513u16.to_le_bytes());
    for (i, c) in [10u32, 20, 30].iter().enumerate() {
        v[28 + 4 * i..32 + 4 * i].copy_from_slice(&c.to_le_bytes());
    }
    v[40] = 0b1011; // flag = 1, level = 0b101
    v[41] = 1;
    v[48..56].copy_from_slice(&0xffff_8880_dead_beefu64.to_le_bytes());
    v
}

#[test]
fn parses_types_and_names_them_like_c() {
    let f = fixture();
    let btf = &f.btf;
    assert_eq!(btf.len(), 19);
    assert!(!btf.is_empty());
    assert!(matches!(btf.get(0), Some(Type::Void)));
    assert!(btf.get(19).is_none());
    assert_eq!(btf.type_name(f.u32_t), "u32");
    assert_eq!(btf.type_name(btf.resolve(f.u32_t)), "unsigned int");
    assert_eq!(btf.type_name(f.comm), "char[8]");
    assert_eq!(btf.type_name(f.event), "struct event");
    assert_eq!(btf.type_name(f.state), "enum state");
    assert_eq!(btf.type_name(f.ptr), "void *");
    assert_eq!(btf.size_of(f.event), Some(56));
    assert_eq!(btf.size_of(f.ints3), Some(12));
    assert_eq!(btf.size_of(f.ptr), Some(8));
    assert_eq!(btf.size_of(0), None);
    assert_eq!(btf.find_by_name("u32"), Some(f.u32_t));
    assert_eq!(btf.find_by_name("enum state"), Some(f.state));
    assert_eq!(btf.find_by_name("nope"), None);
    assert_eq!(btf.find_struct("event"), Some(f.event));
    assert_eq!(btf.find_struct("struct event"), Some(f.event));
    assert_eq!(btf.find_struct("union event"), None);
    let Some(Type::Struct { members, .. }) = btf.get(f.event) else {
        panic!("event is a struct");
    };
    assert_eq!(members.len(), 10);
    assert_eq!(
        members[7],
        Member {
            name: "level".into(),
            ty: 1,
            bit_offset: 321,
            bitfield_size: 3
        }
    );
}

#[test]
fn decodes_struct_with_nested_members_and_bitfields() {
    let f = fixture();
    let v = decode(&f.btf, f.event, &event_bytes()).unwrap();
    assert_eq!(
        v,
        json!({
            "pid": 1234, "delta": -5, "st": "DONE", "comm": "bash",
            "in": {"a": 99, "b": 513}, "counts": [10, 20, 30],
            "flag": 1, "level": 5, "ok": true, "p": "0xffff8880deadbeef"
        })
    );
}

#[test]
fn decode_rejects_short_input_at_every_length() {
    let f = fixture();
    let bytes = event_bytes();
    for n in 0..bytes.len() {
        match decode(&f.btf, f.event, &bytes[..n]) {
            Err(BtfError::ValueTooShort { needed, got, .. }) => {
                assert_eq!((needed, got), (56, n));
            }
            other => panic!("length {n}: expected ValueTooShort, got {other:?}"),
        }
    }
    let err = decode(&f.btf, f.u32_t, &[1, 2]).unwrap_err();
    assert_eq!(err.to_string(), "u32 needs 4 bytes but only 2 were given");
}

#[test]
fn decode_scalars_enums_and_strings() {
    let f = fixture();
    let btf = &f.btf;
    assert_eq!(decode(btf, f.state, &9u32.to_le_bytes()).unwrap(), json!(9));
    assert_eq!(
        decode(btf, f.state, &1u32.to_le_bytes()).unwrap(),
        json!("RUNNING")
    );
    assert_eq!(decode(btf, f.bool_t, &[0]).unwrap(), json!(false));
    assert_eq!(decode(btf, f.i8_t, &[0xff]).unwrap(), json!(-1));
    assert_eq!(
        decode(btf, f.flt, &1.5f32.to_le_bytes()).unwrap(),
        json!(1.5)
    );
    assert_eq!(
        decode(btf, f.dbl, &f64::NAN.to_le_bytes()).unwrap(),
        json!("NaN")
    );
    // Full buffer without NUL is still a string; control bytes switch to hex of the array.
    assert_eq!(decode(btf, f.comm, b"abcdefgh").unwrap(), json!("abcdefgh"));
    assert_eq!(
        decode(btf, f.comm, &[b'a', 1, 2, 0, 0, 0, 0, 0xff]).unwrap(),
        json!("0x61010200000000ff")
    );
    // u8 arrays are data, not text.
    let mut b = Builder::new();
    let uchar = b.int("unsigned char", 1, 0, 8);
    let arr = b.array(uchar, uchar, 3);
    let btf2 = Btf::parse(&b.finish()).unwrap();
    assert_eq!(
        decode(&btf2, arr, &[104, 0, 105]).unwrap(),
        json!([104, 0, 105])
    );
    assert!(matches!(
        decode(btf, 0, &[]),
        Err(BtfError::Unsupported { ref ty, .. }) if ty == "void"
    ));
}

#[test]
fn decode_flattens_anonymous_members_and_handles_unions() {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4, 0, 32);
    let uchar = b.int("unsigned char", 1, 0, 8);
    let anon_union = b.composite(
        KIND_UNION,
        "",
        4,
        false,
        &[("word", uint, 0, 0), ("low", uchar, 0, 0)],
    );
    let outer = b.composite(
        KIND_STRUCT,
        "outer",
        8,
        false,
        &[("", anon_union, 0, 0), ("", uint, 32, 0)],
    );
    let btf = Btf::parse(&b.finish()).unwrap();
    let mut bytes = 0x1234_5678u32.to_le_bytes().to_vec();
    bytes.extend(3u32.to_le_bytes());
    assert_eq!(
        decode(&btf, outer, &bytes).unwrap(),
        json!({"word": 0x1234_5678, "low": 0x78, "_anon0": 3})
    );
}

#[test]
fn decode_wide_ints_as_strings_and_legacy_bitfields() {
    let mut b = Builder::new();
    let u128_t = b.int("unsigned __int128", 16, 0, 128);
    let i128_t = b.int("__int128", 16, INT_SIGNED, 128);
    // Pre-kind-flag bitfield: the INT type itself is 4 bits wide.
    let nib = b.int("int", 4, INT_SIGNED, 4);
    let s = b.composite(
        KIND_STRUCT,
        "s",
        4,
        false,
        &[("lo", nib, 0, 0), ("hi", nib, 4, 0)],
    );
    let btf = Btf::parse(&b.finish()).unwrap();
    assert_eq!(
        decode(&btf, u128_t, &u128::MAX.to_le_bytes()).unwrap(),
        json!(u128::MAX.to_string())
    );
    assert_eq!(
        decode(&btf, i128_t, &(-2i128).to_le_bytes()).unwrap(),
        json!("-2")
    );
    assert_eq!(
        decode(&btf, s, &[0x7f, 0, 0, 0]).unwrap(),
        json!({"lo": -1, "hi": 7})
    );
}

#[test]
fn enum64_and_signed_enums() {
    let mut b = Builder::new();
    let e64 = b.head("big", KIND_ENUM64, false, 2, 8);
    let (n1, n2) = (b.s("SMALL"), b.s("HUGE"));
    b.words(&[n1, 1, 0, n2, 0, 0xffff_ffff]);
    let neg = b.enum32("sgn", 4, true, &[("MINUS", -3)]);
    let btf = Btf::parse(&b.finish()).unwrap();
    let Some(Type::Enum { values, signed, .. }) = btf.get(e64) else {
        panic!("enum64 parses as Enum");
    };
    assert!(!signed);
    assert_eq!(values[1].1 as u64, 0xffff_ffff_0000_0000);
    assert_eq!(
        decode(&btf, e64, &0xffff_ffff_0000_0000u64.to_le_bytes()).unwrap(),
        json!("HUGE")
    );
    assert_eq!(decode(&btf, e64, &5u64.to_le_bytes()).unwrap(), json!(5));
    assert_eq!(
        decode(&btf, neg, &(-3i32).to_le_bytes()).unwrap(),
        json!("MINUS")
    );
    assert_eq!(
        decode(&btf, neg, &(-4i32).to_le_bytes()).unwrap(),
        json!(-4)
    );
    assert_eq!(encode(&btf, neg, "MINUS").unwrap(), (-3i32).to_le_bytes());
    assert_eq!(
        encode(&btf, e64, "HUGE").unwrap(),
        0xffff_ffff_0000_0000u64.to_le_bytes()
    );
}

#[test]
fn encode_round_trips_through_decode() {
    let f = fixture();
    let btf = &f.btf;
    let cases: &[(TypeId, &str, Value)] = &[
        (f.u32_t, "4000000000", json!(4_000_000_000u32)),
        (f.u32_t, "0xff", json!(255)),
        (f.int_t, "-2147483648", json!(i32::MIN)),
        (f.i8_t, "-128", json!(-128)),
        (f.u8_t, "255", json!(255)),
        (f.bool_t, "true", json!(true)),
        (f.bool_t, "0", json!(false)),
        (f.state, "DONE", json!("DONE")),
        (f.state, "1", json!("RUNNING")),
        (f.state, "3", json!(3)),
        (f.comm, "nginx", json!("nginx")),
        (f.comm, "", json!("")),
        (f.ints3, "1, 2,0x3", json!([1, 2, 3])),
        (f.ints3, "9", json!([9, 0, 0])),
        (f.flt, "2.5", json!(2.5)),
        (f.dbl, "-0.125", json!(-0.125)),
    ];
    for (id, text, want) in cases {
        let bytes = encode(btf, *id, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(bytes.len() as u32, btf.size_of(*id).unwrap());
        assert_eq!(&decode(btf, *id, &bytes).unwrap(), want, "{text}");
    }
}

#[test]
fn encode_reports_range_and_format_errors() {
    let f = fixture();
    let btf = &f.btf;
    let err = encode(btf, f.u8_t, "300").unwrap_err();
    assert!(matches!(err, BtfError::ValueOutOfRange { .. }));
    assert_eq!(
        err.to_string(),
        "value 300 does not fit u8 (allowed 0..=255)"
    );
    assert!(matches!(
        encode(btf, f.u32_t, "-1"),
        Err(BtfError::ValueOutOfRange { .. })
    ));
    assert!(matches!(
        encode(btf, f.i8_t, "-129"),
        Err(BtfError::ValueOutOfRange { .. })
    ));
    assert!(matches!(
        encode(btf, f.i8_t, "128"),
        Err(BtfError::ValueOutOfRange { .. })
    ));
    assert!(matches!(
        encode(btf, f.u32_t, "99999999999999999999999999999999999999999999"),
        Err(BtfError::ValueOutOfRange { .. })
    ));
    for bad in ["abc", "", "1.5", "-", "0x", "+-3", "0xg"] {
        assert!(
            matches!(
                encode(btf, f.u32_t, bad),
                Err(BtfError::InvalidValue { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        encode(btf, f.bool_t, "yes"),
        Err(BtfError::InvalidValue { .. })
    ));
    let err = encode(btf, f.state, "BOGUS").unwrap_err();
    assert!(err.to_string().contains("IDLE, RUNNING, DONE"), "{err}");
    let err = encode(btf, f.comm, "12345678").unwrap_err();
    assert!(err.to_string().contains("at most 7"), "{err}");
    assert!(encode(btf, f.comm, "1234567").is_ok());
    assert!(matches!(
        encode(btf, f.ints3, "1,2,3,4"),
        Err(BtfError::InvalidValue { .. })
    ));
    assert!(matches!(
        encode(btf, f.ints3, "1,x"),
        Err(BtfError::InvalidValue { .. })
    ));
    assert!(matches!(
        encode(btf, f.flt, "1e39"),
        Err(BtfError::ValueOutOfRange { .. })
    ));
    assert!(matches!(
        encode(btf, f.dbl, "inf"),
        Err(BtfError::InvalidValue { .. })
    ));
    let err = encode(btf, f.event, "1").unwrap_err();
    assert!(
        matches!(err, BtfError::Unsupported { ref ty, .. } if ty == "struct event"),
        "{err:?}"
    );
    assert!(matches!(
        encode(btf, f.ptr, "0"),
        Err(BtfError::Unsupported { .. })
    ));
}

#[test]
fn parses_every_kind() {
    let mut b = Builder::new();
    let int_t = b.int("int", 4, INT_SIGNED, 32);
    let fwd = b.head("later", KIND_FWD, true, 0, 0);
    let vol = b.simple(KIND_VOLATILE, "", int_t);
    let cst = b.simple(KIND_CONST, "", vol);
    let ptr = b.simple(KIND_PTR, "", int_t);
    let rst = b.simple(KIND_RESTRICT, "", ptr);
    let tag = b.simple(KIND_TYPE_TAG, "user", int_t);
    let proto = b.head("", KIND_FUNC_PROTO, false, 2, int_t);
    let pn = b.s("x");
    b.words(&[pn, cst, 0, 0]);
    let func = b.head("main_fn", KIND_FUNC, false, 1, proto);
    let var = b.head("counter", KIND_VAR, false, 0, cst);
    b.words(&[1]);
    let sec = b.head(".data", KIND_DATASEC, false, 1, 4);
    b.words(&[var, 0, 4]);
    let flt = b.head("float", KIND_FLOAT, false, 0, 4);
    let decl = b.head("my_tag", KIND_DECL_TAG, false, 0, func);
    b.words(&[u32::MAX]);
    let fptr = b.simple(KIND_PTR, "", proto);
    let btf = Btf::parse(&b.finish()).unwrap();

    assert!(matches!(
        btf.get(fwd),
        Some(Type::Fwd { is_union: true, .. })
    ));
    assert_eq!(btf.resolve(cst), int_t);
    assert_eq!(btf.resolve(tag), int_t);
    assert_eq!(btf.resolve(rst), ptr);
    assert_eq!(btf.type_name(fwd), "union later");
    assert_eq!(btf.type_name(rst), "int *");
    assert_eq!(btf.type_name(fptr), "int (*)(int, ...)");
    assert!(matches!(
        btf.get(func),
        Some(Type::Func { linkage: Linkage::Global, proto: p, .. }) if *p == proto
    ));
    assert!(matches!(
        btf.get(var),
        Some(Type::Var {
            linkage: Linkage::Global,
            ..
        })
    ));
    assert!(matches!(btf.get(flt), Some(Type::Float { size: 4, .. })));
    assert!(matches!(
        btf.get(decl),
        Some(Type::DeclTag {
            component_idx: -1,
            ..
        })
    ));
    assert_eq!(btf.func_names(), vec!["main_fn".to_string()]);
    assert_eq!(
        btf.datasecs().map(|(id, _)| id).collect::<Vec<_>>(),
        vec![sec]
    );
    assert_eq!(btf.datasec_var(".data", "counter"), Some(cst));
    assert_eq!(btf.find_by_name("counter"), None);
    assert_eq!(btf.find_by_name("later"), Some(fwd));
    assert_eq!(btf.find_by_name("float"), Some(flt));
    assert_eq!(btf.size_of(var), Some(4));
    assert_eq!(
        decode(&btf, sec, &7i32.to_le_bytes()).unwrap(),
        json!({"counter": 7})
    );
    assert_eq!(encode(&btf, var, "-7").unwrap(), (-7i32).to_le_bytes());
}

#[test]
fn rejects_bad_headers() {
    assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated { .. })));
    assert!(matches!(
        Btf::parse(&[0x12, 0x34, 1, 0]),
        Err(BtfError::BadMagic { magic: 0x3412 })
    ));
    let err = Btf::parse(&[0xeb, 0x9f, 1, 0]).unwrap_err();
    assert_eq!(err.to_string(), "big-endian BTF not supported");
    let mut blob = Builder::new().finish();
    blob[2] = 2;
    assert!(matches!(
        Btf::parse(&blob),
        Err(BtfError::UnsupportedVersion { version: 2 })
    ));
    let mut blob = Builder::new().finish();
    blob[4] = 8;
    assert!(matches!(Btf::parse(&blob), Err(BtfError::BadHeader { .. })));
    let empty = Btf::parse(&Builder::new().finish()).unwrap();
    assert_eq!(empty.len(), 1);
    assert!(empty.is_empty());
}

#[test]
fn rejects_unknown_kinds_bad_strings_and_dangling_refs() {
    let mut b = Builder::new();
    b.head("", 25, false, 0, 0);
    let err = Btf::parse(&b.finish()).unwrap_err();
    assert!(matches!(err, BtfError::UnknownKind { kind: 25, id: 1 }));
    assert!(err.to_string().contains("kind 25"));

    let mut b = Builder::new();
    b.words(&[9999, KIND_PTR << 24, 0]);
    assert!(matches!(
        Btf::parse(&b.finish()),
        Err(BtfError::BadString { offset: 9999, .. })
    ));

    let mut b = Builder::new();
    b.simple(KIND_PTR, "", 5);
    assert!(matches!(
        Btf::parse(&b.finish()),
        Err(BtfError::BadTypeRef {
            id: 1,
            target: 5,
            ..
        })
    ));

    // A vlen far beyond the data must fail cleanly before allocating for it.
    let mut b = Builder::new();
    b.head("huge", KIND_STRUCT, false, 0xffff, 4);
    assert!(matches!(
        Btf::parse(&b.finish()),
        Err(BtfError::Truncated { .. })
    ));
}

#[test]
fn every_truncation_of_a_valid_blob_is_an_error() {
    let mut b = Builder::new();
    let int_t = b.int("int", 4, INT_SIGNED, 32);
    b.composite(
        KIND_STRUCT,
        "pair",
        8,
        false,
        &[("a", int_t, 0, 0), ("b", int_t, 32, 0)],
    );
    let blob = b.finish();
    assert!(Btf::parse(&blob).is_ok());
    for n in 0..blob.len() {
        assert!(
            Btf::parse(&blob[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn cycles_terminate() {
    let mut b = Builder::new();
    // 1: typedef a -> 2, 2: typedef b -> 1 (a cycle), 3: struct self { struct self s; }
    b.simple(KIND_TYPEDEF, "a", 2);
    b.simple(KIND_TYPEDEF, "b", 1);
    let me = b.composite(KIND_STRUCT, "self", 4, false, &[("s", 3, 0, 0)]);
    let ptr_cycle = b.simple(KIND_PTR, "", 5);
    let ptr_cycle2 = b.simple(KIND_CONST, "", 4);
    let btf = Btf::parse(&b.finish()).unwrap();
    let r = btf.resolve(1);
    assert!(r == 1 || r == 2);
    assert_eq!(btf.size_of(1), None);
    assert_eq!(btf.type_name(1), "a");
    assert!(decode(&btf, 1, &[0; 8]).is_err());
    assert!(encode(&btf, 1, "1").is_err());
    assert!(matches!(
        decode(&btf, me, &[0; 4]),
        Err(BtfError::TooComplex { .. })
    ));
    assert!(btf.type_name(ptr_cycle).ends_with('*'));
    assert_eq!(btf.size_of(ptr_cycle2), Some(8));
}

#[test]
fn decode_output_is_budgeted() {
    // A union of 1000 overlapping 1000-element arrays would be a million values from 1 KB.
    let mut b = Builder::new();
    let uchar = b.int("unsigned char", 1, 0, 8);
    let arr = b.array(uchar, uchar, 1000);
    let members: Vec<(String, TypeId)> = (0..1100).map(|i| (format!("m{i}"), arr)).collect();
    let refs: Vec<(&str, TypeId, u32, u32)> = members
        .iter()
        .map(|(n, t)| (n.as_str(), *t, 0, 0))
        .collect();
    let u = b.composite(KIND_UNION, "u", 1000, false, &refs);
    let btf = Btf::parse(&b.finish()).unwrap();
    assert!(matches!(
        decode(&btf, u, &[0; 1000]),
        Err(BtfError::TooComplex { .. })
    ));
}
