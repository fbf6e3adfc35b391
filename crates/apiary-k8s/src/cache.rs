//! The watches every long-running part keeps (agent, trace agent, operator): an in-memory
//! cache (kube's reflector) of one kind, waking a loop on every change.

use futures_util::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use std::sync::Arc;
use tokio::sync::Notify;

/// Keep a cache of `api`'s objects up to date, waking `wake` on every change. `what` names the
/// watch in the log. The watcher retries with backoff; the cache keeps its content meanwhile.
pub(crate) fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: &Arc<Notify>,
    what: &'static str,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let wake = wake.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(watch = what, error = %e, "watch interrupted; retrying"),
            }
        }
    });
    reader
}
