//! One client connection: its socket, its [`Exchange`] (frames, requests
//! in flight, unsent replies) and the flags that decide when to read,
//! write or close it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::net::UnixStream;

use super::exchange::Exchange;
use crate::wire::link::ConnectionId;

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
    pub(super) stream: UnixStream,
    pub(super) exchange: Exchange,
    /// Set after a protocol error: input is discarded until this instant,
    /// so the peer reads the `Error` rather than a reset.
    pub(super) closing_until: Option<Instant>,
    write_shut: bool,
    /// Reading stopped for back-pressure; resumed when replies drain.
    pub(super) read_paused: bool,
    pub(super) watching_writable: bool,
    /// When the last request arrived (or the connection was accepted).
    pub(super) last_request: Instant,
    /// The peer's uid, which complaints about it are counted under.
    pub(super) uid: u32,
}

impl Connection {
    pub(super) fn new(id: ConnectionId, stream: UnixStream, max_frame: u32, uid: u32) -> Self {
        Connection {
            stream,
            exchange: Exchange::new(id, max_frame),
            closing_until: None,
            write_shut: false,
            read_paused: false,
            watching_writable: false,
            last_request: Instant::now(),
            uid,
        }
    }

    /// Reads into the exchange until the socket would block, the peer is
    /// gone, or `take` says to stop. `take` is called before each read to
    /// consume what is buffered, so a resumed connection first works off the
    /// frames it already holds. A closing connection's input is dropped.
    pub(super) fn read(
        &mut self,
        scratch: &mut [u8],
        mut take: impl FnMut(&mut Exchange) -> bool,
    ) -> ReadEnd {
        loop {
            if self.closing_until.is_none() && !take(&mut self.exchange) {
                return ReadEnd::Idle;
            }
            match self.stream.read(scratch) {
                Ok(0) => return ReadEnd::Gone,
                Ok(n) if self.closing_until.is_none() => self.exchange.receive(&scratch[..n]),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return ReadEnd::Idle,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("connection {}: read failed: {error}", self.exchange.id().0);
                    return ReadEnd::Gone;
                }
            }
        }
    }

    /// Writes what the socket takes. `Ok(true)` when everything is out.
    pub(super) fn flush(&mut self) -> io::Result<bool> {
        let mut written = 0;
        let unsent = self.exchange.unsent();
        while written < unsent.len() {
            match self.stream.write(&unsent[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.exchange.sent(written);
        let done = self.exchange.unsent().is_empty();
        if done && self.closing_until.is_some() && !self.write_shut {
            self.write_shut = true;
            // The peer may already be gone; it then reads nothing anyway.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(done)
    }
}
