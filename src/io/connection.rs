//! One client connection: its frame decoder, its outbound buffer and the
//! counters that decide when to stop reading it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::UnixStream;

use crate::wire::link::ConnectionId;
use crate::wire::proto::public_api;
use crate::wire::{FrameDecoder, encode_frame};

/// What a read pass ended with.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadEnd {
    /// Nothing more to read now, or reading is paused.
    Idle,
    /// The peer closed its end, or the socket failed.
    Gone,
}

#[derive(Debug)]
pub(super) struct Connection {
    pub(super) id: ConnectionId,
    pub(super) stream: UnixStream,
    pub(super) decoder: FrameDecoder,
    outbound: Vec<u8>,
    /// Requests decoded and not yet finally answered.
    pub(super) in_flight: usize,
    /// Set after a protocol error: input is discarded until this instant,
    /// so the peer reads the `Error` rather than a reset.
    pub(super) closing_until: Option<Instant>,
    write_shut: bool,
    /// Reading stopped for back-pressure; resumed when replies drain.
    pub(super) read_paused: bool,
    pub(super) watching_writable: bool,
}

impl Connection {
    pub(super) fn new(id: ConnectionId, stream: UnixStream, max_frame: u32) -> Self {
        Connection {
            id,
            stream,
            decoder: FrameDecoder::new(max_frame),
            outbound: Vec::new(),
            in_flight: 0,
            closing_until: None,
            write_shut: false,
            read_paused: false,
            watching_writable: false,
        }
    }

    /// Bytes of replies not yet written.
    pub(super) fn unsent(&self) -> usize {
        self.outbound.len()
    }

    /// Appends one message to the outbound buffer (nothing after closing
    /// has flushed: the write side is shut).
    pub(super) fn queue(&mut self, message: &public_api::Message) {
        if !self.write_shut {
            encode_frame(message, &mut self.outbound);
        }
    }

    /// Reads into the decoder until the socket would block, the peer is
    /// gone, or `take` says to stop. `take` is called before each read to
    /// consume what is buffered, so a resumed connection first works off the
    /// frames it already holds. A closing connection's input is dropped.
    pub(super) fn read(
        &mut self,
        scratch: &mut [u8],
        mut take: impl FnMut(&mut Connection) -> bool,
    ) -> ReadEnd {
        loop {
            if self.closing_until.is_none() && !take(self) {
                return ReadEnd::Idle;
            }
            match self.stream.read(scratch) {
                Ok(0) => return ReadEnd::Gone,
                Ok(n) if self.closing_until.is_none() => self.decoder.extend(&scratch[..n]),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return ReadEnd::Idle,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("connection {}: read failed: {error}", self.id.0);
                    return ReadEnd::Gone;
                }
            }
        }
    }

    /// Writes what the socket takes. `Ok(true)` when everything is out.
    pub(super) fn flush(&mut self) -> io::Result<bool> {
        let mut written = 0;
        while written < self.outbound.len() {
            match self.stream.write(&self.outbound[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.outbound.drain(..written);
        let done = self.outbound.is_empty();
        if done && self.closing_until.is_some() && !self.write_shut {
            self.write_shut = true;
            // The peer may already be gone; it then reads nothing anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(done)
    }
}
