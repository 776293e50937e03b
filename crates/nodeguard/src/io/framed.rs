//! Reading proto frames from an async stream, cancel-safely (the only await point is one `read`,
//! and partial frames live in the decoder between calls).
//!
//! A read goes into a buffer on the stack of the polling thread, for that read only: a connection
//! holds no read buffer between reads, only the bytes of a frame not yet complete. Those bytes can
//! be charged to a [`ByteBudget`] shared by many connections, which bounds the memory that
//! partly sent frames hold in total.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use nodeguard_proto::{decode_payload, encode_frame, FrameDecoder, ProtoError};

/// Size of one read from the socket.
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("too many bytes of unfinished requests held at once; closed this connection")]
    OverBudget,
}

/// Bytes of partly received frames that a set of connections may hold in all. Each connection
/// holds its first `free_per_connection` bytes without asking (a bound on connections bounds
/// those); beyond that it takes them from the shared budget, or is refused.
pub struct ByteBudget {
    shared: std::sync::Arc<tokio::sync::Semaphore>,
    free_per_connection: usize,
}

impl ByteBudget {
    pub fn new(shared_bytes: usize, free_per_connection: usize) -> Self {
        Self {
            shared: std::sync::Arc::new(tokio::sync::Semaphore::new(shared_bytes)),
            free_per_connection,
        }
    }

    /// Bytes of the shared budget not held by any connection.
    pub fn available(&self) -> usize {
        self.shared.available_permits()
    }
}

/// What one reader holds of a [`ByteBudget`].
struct Charge {
    budget: std::sync::Arc<ByteBudget>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Charge {
    fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |permit| permit.num_permits())
    }

    /// Makes what is held cover `buffered` bytes; false if the budget cannot.
    fn cover(&mut self, buffered: usize) -> bool {
        let wanted = buffered.saturating_sub(self.budget.free_per_connection);
        let Some(more) = wanted.checked_sub(self.held()).filter(|more| *more > 0) else {
            if wanted == 0 {
                self.held = None;
            }
            return true;
        };
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match self.budget.shared.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.held {
                    Some(held) => held.merge(permit),
                    None => self.held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// Frames from one stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    charge: Option<Charge>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max_frame),
            charge: None,
        }
    }

    /// Like [`new`](Self::new), with the bytes of unfinished frames charged to `budget`: a read
    /// that would take them past it ends the stream with [`FrameError::OverBudget`].
    pub fn with_budget(inner: R, max_frame: usize, budget: std::sync::Arc<ByteBudget>) -> Self {
        let mut reader = Self::new(inner, max_frame);
        reader.charge = Some(Charge { budget, held: None });
        reader
    }

    /// Bytes read past the frames returned so far.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// The stream back, for a caller done reading frames (bytes read past the last frame are
    /// dropped).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next payload, or `Ok(None)` on a clean end of stream.
    pub async fn next_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                if let Some(charge) = &mut self.charge {
                    // The payload is the caller's now; what stays buffered is charged afresh.
                    charge.held = None;
                    charge.cover(self.decoder.buffered());
                }
                return Ok(Some(payload));
            }
            let read = self.read_some().await?;
            if let Some(charge) = &mut self.charge {
                if !charge.cover(self.decoder.buffered()) {
                    // The stream is unusable now: give back what it held at once.
                    charge.held = None;
                    return Err(FrameError::OverBudget);
                }
            }
            if read == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Reads what the stream has (waiting for at least one byte) into the decoder; 0 at its end.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        let Self { inner, decoder, .. } = self;
        std::future::poll_fn(|cx| {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut *inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    decoder.push(buf.filled());
                    Poll::Ready(Ok(buf.filled().len()))
                }
                Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// The next message, or `Ok(None)` on a clean end of stream.
    pub async fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.next_payload().await? {
            Some(payload) => Ok(Some(decode_payload(&payload)?)),
            None => Ok(None),
        }
    }
}

/// The next connection on `listener`, or `None` once `cancel` fires. Accept errors (out of file
/// descriptors and the like) are logged and retried after a short pause instead of spinning.
pub async fn next_connection(
    listener: &tokio::net::UnixListener,
    cancel: &tokio_util::sync::CancellationToken,
    socket: &str,
) -> Option<tokio::net::UnixStream> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => return Some(stream),
                Err(error) => {
                    tracing::warn!(%error, "{socket}: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
}

/// Pause after a failed accept.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes one message as a frame.
pub async fn write_message<T: serde::Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &T,
    max_frame: usize,
) -> Result<(), FrameError> {
    let frame = encode_frame(message, max_frame)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;

    /// A stream whose client has sent a 1 MiB frame's header and `body` bytes of it; the client
    /// end (returned second) keeps it open.
    async fn half_sent(body: usize) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (ours, mut theirs) = tokio::io::duplex(2 * 1024 * 1024);
        let mut bytes = (1024u32 * 1024).to_be_bytes().to_vec();
        bytes.resize(4 + body, b'a');
        theirs.write_all(&bytes).await.expect("write");
        (ours, theirs)
    }

    /// The next payload, or `None` while the reader still waits for more bytes.
    async fn next(
        reader: &mut FrameReader<tokio::io::DuplexStream>,
    ) -> Option<Result<Option<Vec<u8>>, FrameError>> {
        tokio::time::timeout(std::time::Duration::from_millis(200), reader.next_payload())
            .await
            .ok()
    }

    #[tokio::test]
    async fn partly_sent_frames_share_one_budget_and_give_it_back() {
        let budget = Arc::new(ByteBudget::new(100_000, 10_000));
        // 60 kB buffered: 10 kB free, 50 kB from the budget.
        let (stream, _first_client) = half_sent(60_000).await;
        let mut first = FrameReader::with_budget(stream, 1 << 20, budget.clone());
        assert!(next(&mut first).await.is_none(), "waits for the rest");
        assert_eq!(budget.available(), 50_000 - 4);
        // Another 60 kB would need 50 kB more than the 50 kB left: refused.
        let (stream, _second_client) = half_sent(60_000).await;
        let mut second = FrameReader::with_budget(stream, 1 << 20, budget.clone());
        assert!(matches!(
            next(&mut second).await,
            Some(Err(FrameError::OverBudget))
        ));
        // Small requests need nothing from the budget.
        let (stream, _small_client) = half_sent(5_000).await;
        let mut small = FrameReader::with_budget(stream, 1 << 20, budget.clone());
        assert!(next(&mut small).await.is_none(), "waits for the rest");
        assert_eq!(budget.available(), 50_000 - 4);
        drop(first);
        assert_eq!(budget.available(), 100_000);
    }
}
