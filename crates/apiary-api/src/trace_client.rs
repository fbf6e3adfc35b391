//! The blocking client side of the Tracer service: run a trace on a daemon (or a node's agent)
//! and hand each message to the caller as it arrives. When `stop()` turns true the run is
//! stopped with `StopTrace` and the stream is read to its end, so bpftrace's maps still come.

use crate::client::{RemoteApi, MAX_MESSAGE_BYTES};
use crate::pb;
use crate::pb::tracer_client::TracerClient;
use crate::status::from_status;
use std::time::Duration;

/// How often `stop()` is checked while waiting for output.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Run `req` on the daemon behind `api`; every message but the first (the run's id) and the
/// last (its exit) goes to `on`. Returns the exit.
pub fn trace(
    api: &RemoteApi,
    req: pb::TraceRequest,
    on: &mut dyn FnMut(&pb::TraceOutput),
    stop: &dyn Fn() -> bool,
) -> apiary::Result<pb::TraceExit> {
    let endpoint = api.endpoint().to_string();
    let status = |s: tonic::Status| from_status(&s, &endpoint);
    api.block_on(async {
        let mut client = TracerClient::new(api.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX);
        let mut stream = client.trace(req).await.map_err(status)?.into_inner();
        let mut id = None;
        let mut asked = false;
        let mut tick = tokio::time::interval(STOP_POLL);
        loop {
            tokio::select! {
                m = stream.message() => {
                    let Some(msg) = m.map_err(status)? else {
                        return Err(apiary::Error::Internal(format!(
                            "{endpoint}: the trace stream ended without an exit status"
                        )));
                    };
                    match &msg.kind {
                        Some(pb::trace_output::Kind::Started(s)) => id = Some(s.id),
                        Some(pb::trace_output::Kind::Exit(e)) => return Ok(e.clone()),
                        _ => on(&msg),
                    }
                }
                _ = tick.tick(), if !asked => {
                    if stop() {
                        if let Some(id) = id {
                            // A run that has just ended is no longer found: its exit follows.
                            let _ = client.stop_trace(pb::StopTraceRequest { id }).await;
                            asked = true;
                        }
                    }
                }
            }
        }
    })
}

/// A node agent's kept output of trace job `job` (then, with `follow`, the rest of the run),
/// each piece handed to `on` as it arrives (`true` for the agent's own remarks, meant for
/// stderr). Returns when the stream ends.
pub fn job_output(
    api: &RemoteApi,
    job: &str,
    node: &str,
    follow: bool,
    on: &mut dyn FnMut(&str, bool),
) -> apiary::Result<()> {
    let endpoint = api.endpoint().to_string();
    let status = |s: tonic::Status| from_status(&s, &endpoint);
    api.block_on(async {
        let mut client =
            TracerClient::new(api.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let req = pb::TraceStreamRequest {
            job: job.to_string(),
            node: node.to_string(),
            follow,
        };
        let mut stream = client.trace_stream(req).await.map_err(status)?.into_inner();
        while let Some(msg) = stream.message().await.map_err(status)? {
            match &msg.kind {
                Some(pb::trace_output::Kind::Stdout(t)) => on(t, false),
                Some(pb::trace_output::Kind::Stderr(t)) => on(t, true),
                _ => {}
            }
        }
        Ok(())
    })
}
