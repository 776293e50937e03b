//! Reading proto frames from an async stream, cancel-safely (the only await point is one `read`,
//! and partial frames live in the decoder between calls).
//!
//! A read goes into a buffer on the stack of the polling thread, for that read only: a connection
//! holds no read buffer between reads, only the bytes of a frame not yet complete.

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
}

/// Frames from one stream.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(max_frame),
        }
    }

    /// The next payload, or `Ok(None)` on a clean end of stream.
    pub async fn next_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(Some(payload));
            }
            let read = self.read_some().await?;
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
        let Self { inner, decoder } = self;
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
