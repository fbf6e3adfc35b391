//! apiary's gRPC API (package `apiary.v1`, proto/apiary/v1/apiary.proto): the generated
//! messages, client and server traits; conversions between them and apiary's own types; the
//! one mapping between apiary's errors and gRPC statuses; the daemon (`server`) that serves a
//! `Manager`, and the blocking client (`client::RemoteApi`) that implements `apiary::Api`.

pub mod client;
pub mod codec;
pub mod convert;
pub mod server;
pub mod status;

/// Generated from proto/apiary/v1/apiary.proto.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("apiary.v1");
}

pub use client::{ClientError, ClientTls, RemoteApi};
