//! The daemon decodes protobuf from any client on its socket, then converts each request into
//! the manager's types (crates/apiary-api/src/convert.rs); the CLI does the same with the
//! daemon's answers. The first input byte picks the message (`apiary_fuzz::seeds::GRPC_KINDS`),
//! the rest is the encoded message. Conversions that accept a message must round-trip: turning
//! the result back into a message and converting again gives the same value.
#![no_main]

use apiary_api::convert::{self, map_ref_from_proto, program_id, Invalid};
use apiary_api::pb;
use apiary_fuzz::seeds::GRPC_KINDS;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `bytes` as `M` and checks prost's own round trip: the re-encoded message decodes to
/// one of the same encoded size. (Not `==`: a NaN double never equals itself, and map fields
/// are HashMaps, so re-encoded bytes may legitimately come in another order.)
fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
    assert_eq!(
        again.encoded_len(),
        m.encoded_len(),
        "prost round trip changed the message"
    );
    Some(m)
}

/// A view converted from a message, turned back into a message and converted again, is the same.
fn round_trip<P, V>(p: P)
where
    V: TryFrom<P, Error = Invalid> + std::fmt::Debug,
    for<'a> P: From<&'a V>,
{
    let Ok(v) = V::try_from(p) else { return };
    let back = P::from(&v);
    match V::try_from(back) {
        Ok(again) => assert_eq!(
            format!("{v:?}"),
            format!("{again:?}"),
            "conversion round trip"
        ),
        Err(e) => panic!("{v:?} converted back to a message that does not convert: {e}"),
    }
}

fn attach(spec: pb::AttachSpec) {
    round_trip::<pb::AttachSpec, apiary::core::AttachSpec>(spec);
}

fn hook(h: pb::HookRef) {
    round_trip::<pb::HookRef, apiary::core::Hook>(h);
}

/// What the server does with an object source before the manager sees it.
fn object_source(o: Option<pb::ObjectSource>) {
    match o.and_then(|o| o.object) {
        Some(pb::object_source::Object::Image(i)) => {
            let _ = i.pull_policy.parse::<apiary_oci::PullPolicy>();
            let _ = i.reference.parse::<apiary_oci::ImageRef>();
        }
        Some(pb::object_source::Object::Path(p)) => {
            let _ = std::path::Path::new(&p).is_absolute();
        }
        Some(pb::object_source::Object::Bytes(b)) => {
            let _ = apiary_core::elf::inspect(&b);
        }
        None => {}
    }
}

fn request(kind: &str, body: &[u8]) {
    match kind {
        "LoadRequest" => {
            let Some(r) = decode::<pb::LoadRequest>(body) else {
                return;
            };
            object_source(r.object);
            for p in &r.programs {
                let _ = convert::program_type_from_proto(p.r#type, "programs.type");
            }
            let _ = r.map_owner_id.map(|i| program_id(i, "map_owner_id"));
            let _ = convert::raw_globals_from_proto(r.raw_globals);
            let _ = convert::typed_globals_from_proto(r.typed_globals);
            if let Some(a) = r.attach {
                attach(a);
            }
        }
        "AttachRequest" => {
            let Some(r) = decode::<pb::AttachRequest>(body) else {
                return;
            };
            let _ = program_id(r.program_id, "program_id");
            if let Some(a) = r.spec {
                attach(a);
            }
        }
        "DetachRequest" => {
            let Some(r) = decode::<pb::DetachRequest>(body) else {
                return;
            };
            let _ = convert::link_id(r.link_id, "link_id");
        }
        "UnloadRequest" => {
            let Some(r) = decode::<pb::UnloadRequest>(body) else {
                return;
            };
            for i in r.program_ids {
                let _ = program_id(i, "program_ids");
            }
        }
        "UpdateRequest" => {
            let Some(r) = decode::<pb::UpdateRequest>(body) else {
                return;
            };
            let _ = program_id(r.program_id, "program_id");
            object_source(r.object);
        }
        "ListProgramsRequest" => {
            let _ = decode::<pb::ListProgramsRequest>(body);
        }
        "GetProgramRequest" => {
            let Some(r) = decode::<pb::GetProgramRequest>(body) else {
                return;
            };
            let _ = program_id(r.id, "id");
        }
        "ListLinksRequest" => {
            let Some(r) = decode::<pb::ListLinksRequest>(body) else {
                return;
            };
            let _ = r.program_id.map(|i| program_id(i, "program_id"));
        }
        "GetLinkRequest" => {
            let Some(r) = decode::<pb::GetLinkRequest>(body) else {
                return;
            };
            let _ = convert::link_id(r.id, "id");
        }
        "ListMapsRequest" => {
            let _ = decode::<pb::ListMapsRequest>(body);
        }
        "DumpMapRequest" => {
            let Some(r) = decode::<pb::DumpMapRequest>(body) else {
                return;
            };
            if let Ok(m) = map_ref_from_proto(r.map) {
                let back = convert::map_ref_to_proto(&m);
                let again = map_ref_from_proto(Some(back)).expect("map ref round trip");
                assert_eq!(format!("{m:?}"), format!("{again:?}"));
            }
        }
        "ListChainsRequest" => {
            let _ = decode::<pb::ListChainsRequest>(body);
        }
        "GetChainRequest" => {
            let Some(r) = decode::<pb::GetChainRequest>(body) else {
                return;
            };
            if let Some(h) = r.hook {
                hook(h);
            }
        }
        "WatchRequest" => {
            let _ = decode::<pb::WatchRequest>(body);
        }
        _ => response(kind, body),
    }
}

/// The client's side: answers from a daemon become the views the CLI prints.
fn response(kind: &str, body: &[u8]) {
    use apiary::{LinkView, MapView, ProgramView};
    match kind {
        "LoadResponse" => {
            let Some(r) = decode::<pb::LoadResponse>(body) else {
                return;
            };
            r.programs
                .into_iter()
                .for_each(round_trip::<_, ProgramView>);
        }
        "AttachResponse" => {
            let Some(r) = decode::<pb::AttachResponse>(body) else {
                return;
            };
            r.link.into_iter().for_each(round_trip::<_, LinkView>);
        }
        "UnloadResponse" => {
            let _ = decode::<pb::UnloadResponse>(body);
        }
        "UpdateResponse" => {
            let Some(r) = decode::<pb::UpdateResponse>(body) else {
                return;
            };
            r.report
                .into_iter()
                .for_each(round_trip::<_, apiary::UpdateReport>);
        }
        "ListProgramsResponse" => {
            let Some(r) = decode::<pb::ListProgramsResponse>(body) else {
                return;
            };
            r.programs
                .into_iter()
                .for_each(round_trip::<_, ProgramView>);
        }
        "GetProgramResponse" => {
            let Some(r) = decode::<pb::GetProgramResponse>(body) else {
                return;
            };
            r.program
                .into_iter()
                .for_each(round_trip::<_, apiary::ProgramDetail>);
        }
        "ListLinksResponse" => {
            let Some(r) = decode::<pb::ListLinksResponse>(body) else {
                return;
            };
            r.links.into_iter().for_each(round_trip::<_, LinkView>);
        }
        "ListMapsResponse" => {
            let Some(r) = decode::<pb::ListMapsResponse>(body) else {
                return;
            };
            r.maps.into_iter().for_each(round_trip::<_, MapView>);
        }
        "DumpMapResponse" => {
            let Some(r) = decode::<pb::DumpMapResponse>(body) else {
                return;
            };
            r.dump
                .into_iter()
                .for_each(round_trip::<_, apiary::MapDump>);
        }
        "ListChainsResponse" => {
            let Some(r) = decode::<pb::ListChainsResponse>(body) else {
                return;
            };
            r.chains
                .into_iter()
                .for_each(round_trip::<_, apiary::chain::ChainView>);
        }
        "GetChainResponse" => {
            let Some(r) = decode::<pb::GetChainResponse>(body) else {
                return;
            };
            r.chain
                .into_iter()
                .for_each(round_trip::<_, apiary::chain::ChainView>);
        }
        "Event" => {
            let _ = decode::<pb::Event>(body);
        }
        other => unreachable!("selector names unknown kind {other}"),
    }
}

fuzz_target!(init: apiary_fuzz::emit_seeds("grpc_request"), |data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let kind = GRPC_KINDS[selector as usize % GRPC_KINDS.len()];
    request(kind, body);
});
