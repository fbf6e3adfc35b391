//! Requests in flight, so that a shutdown waits for them and not for idle connections: a
//! client that keeps its connection open between calls (a blocking `RemoteApi` does not poll
//! it then) would otherwise hold the daemon for the whole grace period.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Notify;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Counter>);

#[derive(Debug, Default)]
struct Counter {
    n: AtomicUsize,
    idle: Notify,
}

/// One request (or one running trace) in flight until dropped.
pub struct Guard(InFlight);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0 .0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    pub fn enter(&self) -> Guard {
        self.0.n.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.n.load(Ordering::SeqCst)
    }

    /// Resolves when no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a request ending in between is not missed.
            notified.as_mut().enable();
            if self.0.n.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts each request from its arrival until its answer is ready (for `Watch`, until the
/// stream is set up; streams end by themselves at shutdown).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    pub inner: S,
    pub inflight: InFlight,
}

impl<S: NamedService> NamedService for Tracked<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = self.inflight.enter();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            drop(guard);
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_request() {
        let f = InFlight::default();
        f.idle().await;
        let g = f.enter();
        let h = f.enter();
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.idle().await }
        });
        drop(g);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(h);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
