//! The one place where apiary's errors become gRPC statuses (server) and statuses become
//! apiary's errors again (client). The status message is the error's own text, so the CLI
//! prints the same line whether it ran the operation in-process or through a daemon.

use crate::convert::Invalid;
use crate::pb;
use apiary::kernel::KernelError;
use apiary::{Error, ErrorCode};
use prost::Message;
use tonic::{Code, Status};

/// Trailer carrying an `ErrorDetail` on every error status.
pub const ERROR_DETAIL_KEY: &str = "apiary-error-bin";

/// Trailer carrying a `VerifierDiagnosis` on the status of a verifier rejection.
pub const VERIFIER_DETAIL_KEY: &str = "apiary-verifier-bin";

/// `kind` in an ErrorDetail for kernel objects (KernelError::NotFound).
const KERNEL_OBJECT: &str = "kernel object";

pub fn code_of(c: ErrorCode) -> Code {
    match c {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::Unimplemented => Code::Unimplemented,
        ErrorCode::Rejected => Code::InvalidArgument,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Internal => Code::Internal,
    }
}

/// Server side: the status for a manager error.
pub fn to_status(e: &Error) -> Status {
    let mut status = Status::new(code_of(e.code()), e.to_string());
    let code = e.code().name().to_string();
    let detail = match e {
        Error::NotFound { kind, id, hint } => pb::ErrorDetail {
            kind: kind.to_string(),
            id: id.clone(),
            hint: hint.clone(),
            code,
        },
        Error::Kernel(KernelError::NotFound { what }) => pb::ErrorDetail {
            kind: KERNEL_OBJECT.into(),
            id: what.clone(),
            hint: String::new(),
            code,
        },
        _ => pb::ErrorDetail {
            code,
            ..Default::default()
        },
    };
    status.metadata_mut().insert_bin(
        ERROR_DETAIL_KEY,
        tonic::metadata::MetadataValue::from_bytes(&detail.encode_to_vec()),
    );
    if let Error::Kernel(KernelError::Verifier {
        program, diagnosis, ..
    }) = e
    {
        let mut v = crate::convert::verifier_to_pb(program, diagnosis);
        // The message already ends with the log tail, and a client accepts 16 kB of headers
        // and trailers in all (hyper's default): the tail is not sent twice.
        v.log_tail.clear();
        status.metadata_mut().insert_bin(
            VERIFIER_DETAIL_KEY,
            tonic::metadata::MetadataValue::from_bytes(&v.encode_to_vec()),
        );
    }
    status
}

impl From<Invalid> for Status {
    fn from(e: Invalid) -> Self {
        Status::invalid_argument(format!("invalid request: {e}"))
    }
}

/// `Error::NotFound` holds its kind as a `&'static str`; these are the kinds the manager uses.
fn static_kind(kind: &str) -> Option<&'static str> {
    ["program", "link", "map", "chain", "image"]
        .into_iter()
        .find(|k| *k == kind)
}

/// Client side: the manager error a status stands for, with the same message and the same
/// class as in-process (the class travels in the status details; a status without them, from
/// another server, is classed by its code). Transport-level statuses (daemon gone,
/// deadline...) name the endpoint.
pub fn from_status(s: &Status, endpoint: &str) -> Error {
    let msg = s.message().to_string();
    let detail = s
        .metadata()
        .get_bin(ERROR_DETAIL_KEY)
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| pb::ErrorDetail::decode(b.as_ref()).ok());
    let remote = |code: ErrorCode| Error::Remote {
        code: detail
            .as_ref()
            .and_then(|d| ErrorCode::from_name(&d.code))
            .unwrap_or(code),
        message: msg.clone(),
    };
    // A verifier rejection becomes the same kernel error as in-process, so it prints the same
    // summary and keeps its structure for callers (the Kubernetes agent's status).
    let verifier = s
        .metadata()
        .get_bin(VERIFIER_DETAIL_KEY)
        .and_then(|v| v.to_bytes().ok())
        .and_then(|b| pb::VerifierDiagnosis::decode(b.as_ref()).ok());
    if let (Code::InvalidArgument, Some(v)) = (s.code(), verifier) {
        let (program, mut diagnosis) = crate::convert::verifier_from_pb(v);
        if diagnosis.log_tail.is_empty() {
            if let Some((_, tail)) = msg.split_once("\nverifier log:\n") {
                diagnosis.log_tail = tail.to_string();
            }
        }
        return Error::Kernel(KernelError::Verifier {
            program,
            verifier_log: diagnosis.log_tail.clone(),
            diagnosis: Box::new(diagnosis),
        });
    }
    match s.code() {
        Code::InvalidArgument => remote(ErrorCode::InvalidArgument),
        Code::FailedPrecondition => remote(ErrorCode::FailedPrecondition),
        Code::Internal => remote(ErrorCode::Internal),
        Code::Unimplemented => remote(ErrorCode::Unimplemented),
        Code::PermissionDenied => remote(ErrorCode::PermissionDenied),
        Code::ResourceExhausted => remote(ErrorCode::ResourceExhausted),
        Code::AlreadyExists => remote(ErrorCode::AlreadyExists),
        Code::NotFound => match &detail {
            Some(d) if d.kind == KERNEL_OBJECT => {
                Error::Kernel(KernelError::NotFound { what: d.id.clone() })
            }
            Some(d) => match static_kind(&d.kind) {
                Some(kind) => Error::NotFound {
                    kind,
                    id: d.id.clone(),
                    hint: d.hint.clone(),
                },
                None => remote(ErrorCode::NotFound),
            },
            None => remote(ErrorCode::NotFound),
        },
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => {
            // tonic's message for a failed connection is only "transport error": the cause (a
            // refused certificate, a reset connection) is in the source chain.
            let chain = std::error::Error::source(s)
                .map(crate::server::error_chain)
                .unwrap_or_default();
            let chain = chain
                .strip_prefix(msg.as_str())
                .map(|r| r.trim_start_matches(": "))
                .unwrap_or(&chain);
            let mut text = format!("daemon at {endpoint}: {msg}");
            if !chain.is_empty() {
                text = format!("{text}: {chain}");
            }
            // The TLS alert names the problem, but not the fix.
            if chain.contains("CertificateRequired")
                || chain.contains("UnknownCA")
                || chain.contains("BadCertificate")
            {
                text.push_str(" (the daemon accepts only client certificates signed by its --client-ca: check --client-cert and --client-key)");
            } else if endpoint.starts_with("https:")
                && matches!(
                    s.code(),
                    Code::Unknown | Code::Unavailable | Code::Cancelled
                )
            {
                // With TLS 1.3 the client's handshake completes before the daemon checks its
                // certificate, so the refusal often shows up only as a closed connection.
                text.push_str(" (the daemon closed the connection: over TCP it refuses clients without a certificate signed by its --client-ca)");
            }
            Error::Remote {
                code: ErrorCode::Unavailable,
                message: format!("{text} ({:?})", s.code()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(e: Error) -> Error {
        from_status(&to_status(&e), "unix:///test.sock")
    }

    #[test]
    fn messages_and_codes_survive_the_round_trip() {
        let cases = vec![
            Error::InvalidArgument("bad global".into()),
            Error::FailedPrecondition("program 3 has links".into()),
            Error::Internal("store broke".into()),
            Error::not_found("program", 42),
            Error::not_found("link", 7),
            Error::NotFound {
                kind: "map",
                id: "3:counts".into(),
                hint: "; program 3 has maps: a, b".into(),
            },
            Error::Kernel(KernelError::NotFound {
                what: "map 9".into(),
            }),
            Error::Kernel(KernelError::UnknownInterface {
                name: "nope0".into(),
                netns: None,
            }),
        ];
        for e in cases {
            let (text, code) = (e.to_string(), e.code());
            let back = through(e);
            assert_eq!(back.to_string(), text);
            assert_eq!(back.code(), code, "{text}");
        }
    }

    #[test]
    fn every_class_keeps_its_kind_and_message() {
        let e = Error::Kernel(KernelError::NotSupported {
            feature: "fentry".into(),
            reason: "no trampolines".into(),
        });
        let s = to_status(&e);
        assert_eq!(s.code(), Code::Unimplemented);
        let back = from_status(&s, "x");
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(back.code(), ErrorCode::Unimplemented);
        let v = Error::Kernel(KernelError::verifier("p", "R0 !read_ok", 40));
        assert_eq!(to_status(&v).code(), Code::InvalidArgument);
        assert_eq!(through(v).code(), ErrorCode::Rejected);
        for code in apiary::ERROR_CODES {
            let e = Error::Remote {
                code: *code,
                message: format!("{code:?}"),
            };
            let back = through(e);
            assert_eq!(back.code(), *code);
            // An unavailable daemon is reported with its endpoint.
            if *code != ErrorCode::Unavailable {
                assert_eq!(back.to_string(), format!("{code:?}"));
            }
            assert_eq!(ErrorCode::from_name(code.name()), Some(*code));
        }
        // A status from a server that sends no details is classed by its code.
        let plain = from_status(&Status::permission_denied("no"), "x");
        assert_eq!(plain.code(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn a_verifier_rejection_keeps_its_structure() {
        let log = "0: R1=ctx() R10=fp0\n; __u64 *v = bpf_map_lookup_elem(&m, &k); @ p.bpf.c:9\n6: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=m,ks=4,vs=8)\n; return *v; @ p.bpf.c:10\n7: (79) r0 = *(u64 *)(r0 +0)\nR0 invalid mem access 'map_value_or_null'\nprocessed 7 insns (limit 1000000)\n";
        let e = Error::Kernel(KernelError::verifier("count", log, 40));
        let back = through(Error::Kernel(KernelError::verifier("count", log, 40)));
        assert_eq!(back.to_string(), e.to_string());
        assert_eq!(back.code(), ErrorCode::Rejected);
        let Error::Kernel(KernelError::Verifier {
            program, diagnosis, ..
        }) = back
        else {
            panic!("not a verifier error: {back:?}");
        };
        assert_eq!(program, "count");
        let Error::Kernel(KernelError::Verifier {
            diagnosis: want, ..
        }) = e
        else {
            unreachable!()
        };
        assert_eq!(diagnosis, want);
        assert_eq!(diagnosis.insn, Some(7));
        assert_eq!(
            diagnosis.source.map(|s| (s.line, s.text)),
            Some((10, "return *v;".to_string()))
        );
    }

    #[test]
    fn transport_errors_name_the_endpoint() {
        let e = from_status(
            &Status::unavailable("connection refused"),
            "unix:///run/apiary/apiary.sock",
        );
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(
            e.to_string().contains("unix:///run/apiary/apiary.sock"),
            "{e}"
        );
    }
}
