//! The minimal HTTP/1.1 the daemon's plain-HTTP listeners share (`/metrics`, the web view): one
//! request per connection, a bounded request head read with a timeout, GET and HEAD only, and a
//! response with a length and `Connection: close`. Nothing more is needed to be scraped or polled.

use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept connections until shutdown, each handled on its own task by `handle`.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = std::io::Result<()>> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = super::until_stopped(&mut shutdown) => return,
        };
        let fut = handle(stream);
        tokio::spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(%peer, error = %e, "{what}: connection failed");
            }
        });
    }
}

/// A request as these listeners need it.
pub struct Request {
    pub method: String,
    /// The target without its query.
    pub path: String,
    /// What follows `?` in the target (empty when nothing does).
    pub query: String,
    /// The whole head, for the headers a listener checks.
    pub head: String,
}

impl Request {
    pub fn head_only(&self) -> bool {
        self.method == "HEAD"
    }

    pub fn is_read(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
    }
}

/// The request on `stream`, or None when its head is too large, incomplete or too slow.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<Request>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let complete = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(true);
            }
            if head.len() > MAX_REQUEST_HEAD {
                return Ok(false);
            }
        }
    })
    .await
    .unwrap_or(Ok(false))?;
    if !complete {
        return Ok(None);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        head,
    }))
}

/// Write a response (`extra`: further header lines, each ending in CRLF) and close.
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    if !head_only {
        s.write_all(body).await?;
    }
    s.shutdown().await
}
