//! Message-size limits reported as RESOURCE_EXHAUSTED. tonic answers a message over the limit
//! with OUT_OF_RANGE; gRPC's own status-code guide, and this API's contract, say
//! RESOURCE_EXHAUSTED. The service never produces OUT_OF_RANGE otherwise, so the wrapper
//! rewrites that one code in trailers-only answers (which is how tonic sends a refused request).

use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::codegen::http::{HeaderValue, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

const GRPC_STATUS: &str = "grpc-status";

#[derive(Debug, Clone)]
pub struct SizeLimitIsResourceExhausted<S>(pub S);

impl<S: NamedService> NamedService for SizeLimitIsResourceExhausted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for SizeLimitIsResourceExhausted<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fut = self.0.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let out_of_range = HeaderValue::from(tonic::Code::OutOfRange as i32);
            if resp.headers().get(GRPC_STATUS) == Some(&out_of_range) {
                resp.headers_mut().insert(
                    GRPC_STATUS,
                    HeaderValue::from(tonic::Code::ResourceExhausted as i32),
                );
            }
            Ok(resp)
        })
    }
}
