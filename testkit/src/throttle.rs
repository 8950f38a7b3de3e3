//! A server that reads its connections slowly, or not at all: with a small receive buffer
//! (`BackendConfig::recv_buffer`), the client's bytes then wait in its own send buffer, as
//! they do behind a slow uplink.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};

/// Bytes per second every connection of a backend reads; [`UNLIMITED`] reads at once, 0 reads
/// nothing.
#[derive(Clone)]
pub struct ReadRate(Arc<AtomicU64>);

/// No limit.
pub const UNLIMITED: u64 = u64::MAX;

/// How often a throttled reader takes its share, and a stopped one looks at the rate again.
const SLICE: Duration = Duration::from_millis(20);

impl Default for ReadRate {
    fn default() -> Self {
        ReadRate(Arc::new(AtomicU64::new(UNLIMITED)))
    }
}

impl ReadRate {
    /// Sets the rate (`None`: unlimited) for reads from now on.
    pub fn set(&self, bytes_per_second: Option<u64>) {
        self.0
            .store(bytes_per_second.unwrap_or(UNLIMITED), Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A stream whose reads keep to a [`ReadRate`]; writes pass through.
pub struct Throttled<S> {
    inner: S,
    rate: ReadRate,
    pause: Option<Pin<Box<Sleep>>>,
}

impl<S> Throttled<S> {
    /// `inner`, read at `rate`.
    pub fn new(inner: S, rate: ReadRate) -> Self {
        Throttled {
            inner,
            rate,
            pause: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(p) = this.pause.as_mut() {
                if p.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.pause = None;
            }
            let rate = this.rate.get();
            if rate == UNLIMITED {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if rate == 0 {
                this.pause = Some(Box::pin(sleep(SLICE)));
                continue;
            }
            let share = (rate as u128 * SLICE.as_millis() / 1000).max(1) as usize;
            let mut part = buf.take(share.min(buf.remaining()));
            match Pin::new(&mut this.inner).poll_read(cx, &mut part) {
                Poll::Ready(Ok(())) => {
                    let n = part.filled().len();
                    // SAFETY: `part` wrote these bytes into `buf`'s unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    let secs = n as f64 / rate as f64;
                    this.pause = Some(Box::pin(sleep(Duration::from_secs_f64(secs))));
                    return Poll::Ready(Ok(()));
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
