//! Closing a connection without resetting it.
//!
//! Closing a TCP socket that still holds unread data makes the kernel answer with RST instead
//! of FIN, and a client that is still sending (a body the server refused before reading it all)
//! then loses the answer it was sent. So before a connection is closed, its write side is shut
//! down, which lets the client read the answer to its end, and whatever the client still sends is
//! read and discarded until it closes too, until it has sent nothing for [`LINGER_IDLE`], or for
//! at most [`LINGER`]: the lingering close of HTTP/1.1 servers (RFC 9112, section 9.6). An idle
//! client that does not close at once costs a shutdown no more than [`LINGER_IDLE`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

/// The longest a closing connection keeps reading what its client still sends.
pub const LINGER: Duration = Duration::from_secs(10);
/// A closing connection whose client sends nothing for this long is closed.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// A TCP listener whose connections close with a lingering close.
pub struct LingeringListener(pub TcpListener);

impl Listener for LingeringListener {
    type Io = LingeringStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LingeringStream, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        (
            LingeringStream {
                inner: stream,
                lingering: None,
                idle: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that, when shut down, lingers: see the module's documentation.
pub struct LingeringStream {
    inner: TcpStream,
    /// Set once the write side is shut down: when lingering gives up.
    lingering: Option<Pin<Box<Sleep>>>,
    /// When lingering gives up if nothing more arrives; pushed back by every read.
    idle: Option<Pin<Box<Sleep>>>,
}

impl LingeringStream {
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Sends FIN, then reads and discards until the client's FIN, an error, [`LINGER_IDLE`]
    /// without data, or [`LINGER`].
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
            this.idle = Some(Box::pin(tokio::time::sleep(LINGER_IDLE)));
        }
        let mut scratch = [0u8; 4096];
        let mut received = false;
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => received = true,
                // The client reset or the socket broke: nothing is left to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        let (Some(total), Some(idle)) = (this.lingering.as_mut(), this.idle.as_mut()) else {
            return Poll::Ready(Ok(()));
        };
        if received {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + LINGER_IDLE);
        }
        if total.as_mut().poll(cx).is_ready() || idle.as_mut().poll(cx).is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
