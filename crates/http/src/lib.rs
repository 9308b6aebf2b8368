//! `rlhf-http`: the accept loop both servers (`rlhf serve`, `rlhf label serve`) run on, with the
//! limits a server on a network needs and `axum::serve` does not set:
//! - a header read timeout (hyper's own timer): a client that opens a connection and trickles
//!   its request line and headers (slowloris), or holds an idle keep-alive connection, is cut;
//! - a body deadline: a client that sends headers and then trickles the body gets an error
//!   (the handler's 400) once the whole body has not arrived in time; tower-http's body timeout
//!   resets on every frame, so one byte every few seconds would pass it;
//! - a cap on open connections: at the cap the loop stops accepting (new connections wait in
//!   the kernel's backlog) instead of running out of file descriptors;
//! - HTTP/1.1 only (see `serve`);
//! - graceful shutdown: when the signal comes, no new connections, open requests finish, up to a
//!   drain timeout.
//!
//! Not here: routes, authentication, request validation (each server's own crate).

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The server's limits; the defaults are the servers' defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for a request's line and headers, counted from when the connection is
    /// ready for the next request (so an idle keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    /// Time allowed to receive a request's whole body.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// After the shutdown signal, how long open requests may take before the server quits.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            // Below the common 1024 open-files limit, with room for the process's own files.
            max_connections: 512,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// (up to `limits.drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // At the cap, wait for a connection to close before accepting another.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little and go on, as a server must (the error is the system's, not ours).
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true); // streamed tokens go out as they come
        let body_timeout = limits.body_timeout;
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            req.map(|body| Body::new(Deadline::new(body, body_timeout)))
        });
        // HTTP/1.1 only: hyper-util's auto builder (HTTP/1 or /2) waits for a new connection's
        // first bytes with no timeout, so a connection that never speaks would be held forever.
        // OpenAI clients speak HTTP/1.1.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("a connection ended with an error: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "open requests did not finish within {:?} of the shutdown signal",
            limits.drain_timeout
        );
    }
    Ok(())
}

/// A request body that fails once `limit` has passed since the request's headers arrived.
struct Deadline<B> {
    body: B,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadline<B> {
    fn new(body: B, limit: Duration) -> Self {
        Self {
            body,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

/// The error a late body ends with; handlers report it as a bad request.
#[derive(Debug)]
pub struct BodyTooSlow(Duration);

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} s of its headers",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTooSlow {}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow(this.limit))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    async fn start(limits: Limits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new().route("/echo", post(|body: String| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    /// Reads until the server closes the connection (or 30 s); returns what came and when.
    async fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
        let t0 = Instant::now();
        let mut out = vec![];
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
        (String::from_utf8_lossy(&out).into_owned(), t0.elapsed())
    }

    fn quick() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
            max_connections: 4,
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// A slowloris client (one header byte at a time, never finishing) is cut after the header
    /// timeout, and so is a connection that never sends anything.
    #[tokio::test]
    async fn slow_headers_are_cut_after_the_header_timeout() {
        let (addr, _stop) = start(quick()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let trickle = tokio::spawn(async move {
            let t0 = Instant::now();
            for b in b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if slow.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (_, _) = read_to_close(&mut slow).await;
            t0.elapsed()
        });
        let (_, idle_for) = read_to_close(&mut idle).await;
        assert!(
            idle_for < Duration::from_secs(3),
            "idle connection held {idle_for:?}"
        );
        let slow_for = trickle.await.unwrap();
        assert!(
            slow_for < Duration::from_secs(5),
            "slowloris held {slow_for:?}"
        );
    }

    /// Headers sent, body trickled a byte at a time (each within the timeout): refused once
    /// the whole body is late; a prompt client is answered.
    #[tokio::test]
    async fn a_trickled_body_is_refused_at_the_deadline_and_a_normal_request_works() {
        let (addr, _stop) = start(quick()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let mut reply = vec![0u8; 4096];
        let n = loop {
            let _ = s.write_all(b"a").await;
            tokio::select! {
                n = s.read(&mut reply) => break n.unwrap(),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the body was waited for too long"
            );
        };
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(reply.contains("did not arrive within 0.5 s"), "{reply}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
        let (reply, _) = read_to_close(&mut s).await;
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with("hi"),
            "{reply}"
        );
    }

    /// At the connection cap a new connection is not served until one closes.
    #[tokio::test]
    async fn connections_beyond_the_cap_wait() {
        let mut limits = quick();
        limits.header_timeout = Duration::from_secs(20);
        limits.max_connections = 2;
        let (addr, _stop) = start(limits).await;
        let a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ask = || async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
                .await
                .unwrap();
            read_to_close(&mut s).await
        };
        let third = tokio::spawn(ask());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            !third.is_finished(),
            "a third connection was served beyond the cap of 2"
        );
        drop(a);
        let (reply, _) = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("served once a slot freed")
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}
