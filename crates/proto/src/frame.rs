//! Length-prefixed JSON framing with a hard size limit, as a push-bytes / pull-frames decoder.

use serde::{de::DeserializeOwned, Serialize};

use crate::ProtoError;

/// Bytes in the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Serializes `message` into one frame (header + JSON), refusing payloads over `max_len`.
pub fn encode_frame<T: Serialize>(message: &T, max_len: usize) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    serde_json::to_writer(&mut out, message)?;
    let payload_len = out.len() - FRAME_HEADER_LEN;
    if payload_len > max_len {
        return Err(ProtoError::FrameTooLarge {
            len: payload_len,
            max: max_len,
        });
    }
    // payload_len <= max_len, and every limit in this crate fits in u32.
    let header = u32::try_from(payload_len).map_err(|_| ProtoError::FrameTooLarge {
        len: payload_len,
        max: max_len,
    })?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&header.to_be_bytes());
    Ok(out)
}

/// Decodes one frame's payload into a message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtoError> {
    Ok(serde_json::from_slice(payload)?)
}

/// Reads the `version` field of a payload without decoding the rest, so a peer of another version
/// can be refused with a message that names both versions instead of a parse error.
pub fn peek_version(payload: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u32,
    }
    serde_json::from_slice::<Versioned>(payload)
        .ok()
        .map(|v| v.version)
}

/// Accumulates bytes from a stream and yields complete frame payloads.
///
/// The length is checked as soon as the header arrives, so an oversize frame is refused before any
/// of its body is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_len: usize,
}

impl FrameDecoder {
    pub fn new(max_len: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_len,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Returns the next complete payload, `Ok(None)` if more bytes are needed, or an error if the
    /// announced length exceeds the limit (the stream is then unusable and should be dropped).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ProtoError> {
        if self.buffer.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buffer[..FRAME_HEADER_LEN]);
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_len {
            return Err(ProtoError::FrameTooLarge {
                len,
                max: self.max_len,
            });
        }
        if self.buffer.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.buffer[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buffer.drain(..FRAME_HEADER_LEN + len);
        Ok(Some(payload))
    }

    /// Like [`next_frame`](Self::next_frame), then decodes the payload as `T`.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        match self.next_frame()? {
            Some(payload) => decode_payload(&payload).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{SupervisorMessage, WorkerMessage};
    use crate::MAX_WORKER_FRAME;

    #[test]
    fn round_trip_byte_by_byte() {
        let message = SupervisorMessage::Ping { seq: 42 };
        let frame = encode_frame(&message, MAX_WORKER_FRAME).unwrap();
        let mut decoder = FrameDecoder::new(MAX_WORKER_FRAME);
        for (i, byte) in frame.iter().enumerate() {
            assert!(
                decoder.next_frame().unwrap().is_none(),
                "early frame at {i}"
            );
            decoder.push(std::slice::from_ref(byte));
        }
        let decoded: SupervisorMessage = decoder.next_message().unwrap().unwrap();
        assert_eq!(decoded, message);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn two_frames_in_one_push() {
        let mut bytes = encode_frame(&SupervisorMessage::Ping { seq: 1 }, 100).unwrap();
        bytes.extend(encode_frame(&SupervisorMessage::Ping { seq: 2 }, 100).unwrap());
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&bytes);
        let first: SupervisorMessage = decoder.next_message().unwrap().unwrap();
        let second: SupervisorMessage = decoder.next_message().unwrap().unwrap();
        assert_eq!(first, SupervisorMessage::Ping { seq: 1 });
        assert_eq!(second, SupervisorMessage::Ping { seq: 2 });
        assert!(decoder.next_frame().unwrap().is_none());
    }

    #[test]
    fn oversize_header_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(16);
        decoder.push(&17u32.to_be_bytes());
        assert!(matches!(
            decoder.next_frame(),
            Err(ProtoError::FrameTooLarge { len: 17, max: 16 })
        ));
    }

    #[test]
    fn oversize_message_is_refused_on_encode() {
        let hello = WorkerMessage::Hello {
            version: 1,
            token: "x".repeat(64),
            pid: 1,
            stack_capture: false,
        };
        assert!(matches!(
            encode_frame(&hello, 16),
            Err(ProtoError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_payload_is_malformed() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&3u32.to_be_bytes());
        decoder.push(b"{{{");
        assert!(matches!(
            decoder.next_message::<WorkerMessage>(),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn version_is_read_from_an_unknown_message() {
        assert_eq!(peek_version(br#"{"version":9,"type":"future"}"#), Some(9));
        assert_eq!(peek_version(b"not json"), None);
    }
}
