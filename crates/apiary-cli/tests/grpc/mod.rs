//! The generated gRPC client for the suites that talk to a daemon directly (serve, hostile).
//! Kept out of `common` so the other suites' binaries do not link the client.

use crate::common::daemon::Daemon;

/// A runtime for the generated gRPC client.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The generated gRPC client, connected to `d`.
pub async fn client(
    d: &Daemon,
) -> apiary_api::pb::apiary_client::ApiaryClient<tonic::transport::Channel> {
    apiary_api::pb::apiary_client::ApiaryClient::connect(d.endpoint())
        .await
        .expect("connect to the daemon")
}
