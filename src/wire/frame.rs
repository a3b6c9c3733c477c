//! Framing: a 4-byte big-endian length, then that many bytes of body.

use std::fmt;

/// Bytes in a frame's length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The default largest body a receiver accepts: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Why a byte stream cannot be cut into frames. Ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the receiver's limit.
    TooLarge {
        /// The announced body length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts a byte stream into frame bodies. Push bytes in with [`extend`],
/// take whole bodies out with [`next_frame`]; a frame may arrive in any
/// number of pieces and one push may hold many frames.
///
/// It holds at most one partial frame plus what was pushed since the last
/// [`next_frame`], and it never reserves room for a body whose length it
/// has not checked against the limit.
///
/// [`extend`]: FrameDecoder::extend
/// [`next_frame`]: FrameDecoder::next_frame
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: u32,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet taken out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole frame body, `None` until one has fully arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let total = FRAME_HEADER_LEN + len as usize;
        if pending.len() < total {
            self.buf.reserve(total - pending.len());
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some(&self.buf[body]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_split_byte_by_byte_are_reassembled() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let stream = [frame(b"hello"), frame(b""), frame(b"world")].concat();
        let mut bodies = Vec::new();
        for byte in stream {
            decoder.extend(&[byte]);
            while let Some(body) = decoder.next_frame().unwrap() {
                bodies.push(body.to_vec());
            }
        }
        assert_eq!(
            bodies,
            vec![b"hello".to_vec(), Vec::new(), b"world".to_vec()]
        );
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn many_frames_in_one_push_come_out_in_order() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let stream: Vec<u8> = (0..100u8).flat_map(|i| frame(&[i; 3])).collect();
        decoder.extend(&stream);
        for i in 0..100u8 {
            assert_eq!(decoder.next_frame().unwrap(), Some(&[i; 3][..]));
        }
        assert_eq!(decoder.next_frame().unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_before_any_allocation() {
        let mut decoder = FrameDecoder::new(16);
        decoder.extend(&u32::MAX.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 16
            })
        );
        assert!(decoder.buf.capacity() < 64);
    }
}
