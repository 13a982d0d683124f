//! The deadline a connection is under, by what it is doing: a request head that is due must
//! arrive within `header_read_timeout` (the slowloris defence), a kept-alive connection waiting
//! for its next request may stay quiet for `idle_timeout`, and a request being served has no
//! deadline here (parked polls, `body_read_timeout` and `write_timeout` bound those).
//!
//! hyper's own header timer cannot tell the two apart: it starts as soon as the previous answer
//! is written, so an idle connection gets the short header deadline and races clients that send
//! a keepalive every 10 s.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A request head is due: the first one, or one whose first bytes have arrived.
const HEAD_DUE: u8 = 0;
/// A request is being served.
const SERVING: u8 = 1;
/// The previous answer is written and nothing of the next request has arrived.
const IDLE: u8 = 2;

/// What one connection is doing, told by the request handler and its answer's body.
#[derive(Debug)]
pub struct ConnectionPhase {
    phase: AtomicU8,
    /// A read left waiting while serving, woken when the answer is done so the idle deadline
    /// starts: hyper may let the body go after its last read attempt.
    reader: AtomicWaker,
}

impl ConnectionPhase {
    pub fn new() -> Arc<ConnectionPhase> {
        Arc::new(ConnectionPhase {
            phase: AtomicU8::new(HEAD_DUE),
            reader: AtomicWaker::new(),
        })
    }

    /// The request head is complete and handed to the routes.
    pub fn request_started(&self) {
        self.phase.store(SERVING, Ordering::Relaxed);
    }

    fn answered(&self) {
        self.phase.store(IDLE, Ordering::Relaxed);
        self.reader.wake();
    }

    fn head_begun(&self) {
        self.phase.store(HEAD_DUE, Ordering::Relaxed);
    }

    fn get(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }
}

/// A connection's socket that ends reads when the deadline of its phase has passed: an idle
/// connection reads as closed by the client, so hyper closes it cleanly (FIN, no answer, as its
/// graceful close does); a late request head is an error, and the connection is dropped.
pub struct PhasedStream<S> {
    inner: S,
    phase: Arc<ConnectionPhase>,
    /// The phase the deadline was last set for.
    timed: u8,
    /// None while serving, so a parked poll does not hold a timer.
    deadline: Option<Pin<Box<Sleep>>>,
    header_read: Duration,
    idle: Duration,
}

impl<S> PhasedStream<S> {
    pub fn new(
        inner: S,
        phase: Arc<ConnectionPhase>,
        header_read: Duration,
        idle: Duration,
    ) -> PhasedStream<S> {
        PhasedStream {
            inner,
            phase,
            timed: HEAD_DUE,
            deadline: Some(Box::pin(tokio::time::sleep(header_read))),
            header_read,
            idle,
        }
    }

    fn restart_deadline(&mut self, phase: u8, after: Duration) {
        self.timed = phase;
        let at = Instant::now() + after;
        match &mut self.deadline {
            Some(deadline) => deadline.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PhasedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.get();
        match phase {
            IDLE if this.timed != IDLE => this.restart_deadline(IDLE, this.idle),
            SERVING if this.timed != SERVING => {
                this.timed = SERVING;
                this.deadline = None;
            }
            _ => {}
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if phase == IDLE && buf.filled().len() > filled {
                    // The next request has begun: its head is due within header_read_timeout.
                    this.phase.head_begun();
                    this.restart_deadline(HEAD_DUE, this.header_read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if phase == SERVING {
                    this.phase.reader.register(cx.waker());
                    if this.phase.get() != SERVING {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
                let expired = match &mut this.deadline {
                    Some(deadline) => deadline.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !expired {
                    return Poll::Pending;
                }
                if phase == IDLE {
                    // Read as end of file: hyper answers nothing and closes the idle connection.
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request headers not received within header_read_timeout",
                    )))
                }
            }
            failed => failed,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PhasedStream<S> {
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

/// An answer's body that marks its connection idle once hyper has written it and let it go.
pub struct PhasedBody<B> {
    inner: B,
    phase: Arc<ConnectionPhase>,
}

impl<B> PhasedBody<B> {
    pub fn new(inner: B, phase: Arc<ConnectionPhase>) -> PhasedBody<B> {
        PhasedBody { inner, phase }
    }
}

impl<B> Drop for PhasedBody<B> {
    fn drop(&mut self) {
        self.phase.answered();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for PhasedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE_FOR: Duration = Duration::from_secs(75);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_sends_nothing_fails_at_the_header_deadline() {
        let (_client, server) = duplex(64);
        let mut stream = PhasedStream::new(server, ConnectionPhase::new(), HEADER, IDLE_FOR);
        let started = Instant::now();
        let err = stream.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_reads_as_closed_at_the_idle_deadline() {
        let (_client, server) = duplex(64);
        let phase = ConnectionPhase::new();
        let mut stream = PhasedStream::new(server, phase.clone(), HEADER, IDLE_FOR);
        phase.request_started();
        drop(PhasedBody::new((), phase.clone()));
        let started = Instant::now();
        assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 0, "end of file");
        assert_eq!(started.elapsed(), IDLE_FOR);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_deadline_starts_when_the_answer_goes_after_a_waiting_read() {
        let (_client, server) = duplex(64);
        let phase = ConnectionPhase::new();
        let mut stream = PhasedStream::new(server, phase.clone(), HEADER, IDLE_FOR);
        phase.request_started();
        let reader = tokio::spawn(async move { stream.read(&mut [0; 8]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let answered = Instant::now();
        drop(PhasedBody::new((), phase.clone()));
        assert_eq!(reader.await.unwrap().unwrap(), 0, "end of file");
        assert_eq!(answered.elapsed(), IDLE_FOR);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_next_request_brings_the_header_deadline_back() {
        let (mut client, server) = duplex(64);
        let phase = ConnectionPhase::new();
        let mut stream = PhasedStream::new(server, phase.clone(), HEADER, IDLE_FOR);
        phase.request_started();
        drop(PhasedBody::new((), phase.clone()));
        tokio::time::sleep(Duration::from_secs(60)).await;
        client.write_all(b"G").await.unwrap();
        assert_eq!(stream.read(&mut [0; 8]).await.unwrap(), 1);
        let started = Instant::now();
        let err = stream.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_served_has_no_deadline_here() {
        let (mut client, server) = duplex(64);
        let phase = ConnectionPhase::new();
        let mut stream = PhasedStream::new(server, phase.clone(), HEADER, IDLE_FOR);
        phase.request_started();
        let reader = tokio::spawn(async move {
            let mut byte = [0; 1];
            stream.read(&mut byte).await.map(|n| (n, Instant::now()))
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let sent = Instant::now();
        client.write_all(b"x").await.unwrap();
        let (n, read_at) = reader.await.unwrap().unwrap();
        assert_eq!(n, 1);
        assert!(read_at >= sent, "no deadline ended the read early");
    }
}
