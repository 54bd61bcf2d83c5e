//! [`DataStream`]: one Tor stream as a tokio byte stream.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::engine::{Phase, Shutdown, StreamShared, STREAM_READ_BUFFER, STREAM_WRITE_BUFFER};
use crate::error::Error;
use crate::Handle;

/// One Tor stream (to a host through an exit, to an onion service, or from a client of a
/// hosted service), with tokio's [`AsyncRead`] and [`AsyncWrite`].
///
/// - Reading takes from a buffer of at most [`STREAM_READ_BUFFER`] bytes that the driver
///   fills from the client; a reader that does not keep up stops only this stream (its
///   window at the exit closes), never the circuit's other streams.
/// - Writing puts bytes in a buffer of at most [`STREAM_WRITE_BUFFER`] bytes that the
///   driver hands to the client as the stream's and circuit's windows allow; when it is
///   full, `poll_write` is `Pending` until the client takes more. `poll_flush` waits until
///   the client took everything.
/// - `poll_shutdown` is the half-close: once everything written was taken, no more may be
///   written ([`onion_client::Client::shutdown_write`]). Tor's relay protocol has no
///   half-close on the wire, so the other side is not told; reading goes on until it ends
///   the stream.
/// - The end of the stream reads as end of file when the other side ended it cleanly, else
///   as an error whose inner error is an [`Error`] (with its [`Error::kind`]).
/// - Dropping the stream closes it (RELAY_END): flush first to be sure written bytes left.
#[derive(Debug)]
pub struct DataStream {
    shared: Arc<StreamShared>,
    /// Keeps the driver task running while the stream lives.
    _client: Handle,
}

impl DataStream {
    pub(crate) fn new(shared: Arc<StreamShared>, client: Handle) -> DataStream {
        DataStream {
            shared,
            _client: client,
        }
    }

    /// The stream's number in the client (for logs).
    pub fn id(&self) -> u64 {
        self.shared.handle.get()
    }

    /// Wait until the stream is open (CONNECTED), or why it did not open.
    pub(crate) async fn wait_open(&self) -> Result<(), Error> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            match &st.open {
                Phase::Open => Poll::Ready(Ok(())),
                Phase::Failed(e) => Poll::Ready(Err(e.clone())),
                Phase::Opening => {
                    st.open_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for DataStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.dropped = true;
        self.shared.mark(&mut st);
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if !st.rx.is_empty() {
            let n = buf.remaining().min(st.rx.len());
            let (a, b) = st.rx.as_slices();
            let from_a = n.min(a.len());
            buf.put_slice(&a[..from_a]);
            buf.put_slice(&b[..n - from_a]);
            st.rx.drain(..n);
            if st.want_more && st.rx.len() <= STREAM_READ_BUFFER / 2 {
                st.want_more = false;
                self.shared.mark(&mut st);
            }
            return Poll::Ready(Ok(()));
        }
        match &st.end {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(e.clone().into_io())),
            None => {
                st.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.write_err {
            return Poll::Ready(Err(e.clone().into_io()));
        }
        if st.shutdown != Shutdown::No {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = STREAM_WRITE_BUFFER.saturating_sub(st.tx.len());
        if room == 0 {
            st.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        st.tx.extend_from_slice(&data[..n]);
        self.shared.mark(&mut st);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.write_err {
            return Poll::Ready(Err(e.clone().into_io()));
        }
        if st.tx.is_empty() {
            return Poll::Ready(Ok(()));
        }
        st.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        match st.shutdown {
            Shutdown::Done => return Poll::Ready(Ok(())),
            _ if st.write_err.is_some() => return Poll::Ready(Ok(())),
            Shutdown::No => {
                st.shutdown = Shutdown::Requested;
                self.shared.mark(&mut st);
            }
            Shutdown::Requested => {}
        }
        st.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
impl DataStream {
    pub(crate) fn shared_handle(&self) -> onion_client::StreamHandle {
        self.shared.handle
    }
}
