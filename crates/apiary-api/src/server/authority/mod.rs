//! Stock gRPC clients on the unix socket. gRPC's C core (Python, C++, Ruby, C#, PHP clients)
//! sends the percent-encoded socket path as the HTTP/2 `:authority` of a `unix:` target, and
//! grpc-java the raw path; h2, under tonic, refuses both as malformed and resets the stream, and
//! has no option to relax that. A unix socket has no authority to check, so on the unix listener
//! each connection's incoming bytes pass through [`AuthorityRewrite`], which sets every request's
//! `:authority` to `localhost` before h2 reads it. The TCP listener is not wrapped: there the
//! authority is a real host name and h2 judges it as sent.
//!
//! The rewrite is defensive: the bytes are a client's, so anything that does not parse as
//! expected is passed on unchanged for the rest of the connection, and h2 reports it as before.

mod frames;
mod hpack;
mod huffman;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// How much is read from the socket at once when frames must be looked at.
const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection whose client-to-server bytes have `:authority` rewritten (see the
/// module docs); writes pass straight through.
pub struct AuthorityRewrite<S> {
    inner: S,
    rewriter: frames::Rewriter,
    /// Rewritten bytes not yet read by h2, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<S> AuthorityRewrite<S> {
    pub fn new(inner: S) -> Self {
        AuthorityRewrite {
            inner,
            rewriter: frames::Rewriter::default(),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.rewriter.passthrough_budget() {
                // DATA and other frames' payloads: read straight into h2's buffer; whatever was
                // read past the payload is taken back and goes through the rewriter.
                Some(budget) => {
                    let start = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let end = buf.filled().len();
                    let n = end - start;
                    if n == 0 {
                        this.eof = true;
                        this.rewriter.finish(&mut this.out);
                        continue;
                    }
                    if n > budget {
                        this.rewriter.passed(budget);
                        this.rewriter
                            .feed(&buf.filled()[start + budget..end], &mut this.out);
                        buf.set_filled(start + budget);
                    } else {
                        this.rewriter.passed(n);
                    }
                    return Poll::Ready(Ok(()));
                }
                None => {
                    let mut rb = ReadBuf::new(&mut this.scratch);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    if rb.filled().is_empty() {
                        this.eof = true;
                        this.rewriter.finish(&mut this.out);
                    } else {
                        this.rewriter.feed(rb.filled(), &mut this.out);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The peer's credentials stay those of the socket (the service logs the caller's uid and pid).
impl<S: Connected> Connected for AuthorityRewrite<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
