//! Link bridges: where a link between two roles crosses the process
//! boundary of privilege separation, a bridge moves its messages between
//! the role's crossbeam channel and a socketpair, as frames of
//! `protocol.md` §1 (`wire::encode_frame`, `FrameDecoder`,
//! `decode_envelope`). Each link is one socketpair carrying one protocol,
//! and each direction one bridge thread, so neither role knows whether
//! its peer is a thread or a process.
//!
//! A writer sends every message of its channel, several per write when
//! they queue up; when the channel closes it shuts the socket down for
//! writing, so the peer's reader sees EOF after the last frame. A reader
//! decodes frames into its channel, waiting while the channel is full
//! (the same back-pressure as between threads), and records each hop in
//! the node's correlation table when it has a [`Recorder`]: the hops the
//! spawner process records are in its own, lost table.
//!
//! Frames on a link may be up to [`LINK_MAX_FRAME`]: the largest message
//! a valid request can cause is a `StartProcess` (or a `ServiceTable`),
//! made from the configuration plus a correlation id and a service id
//! that io has bounded (`wire::MAX_CORRELATION_ID`, `conf::MAX_ID_LEN`),
//! so no client request comes near it. A writer never sends a larger
//! frame: it drops that one message, logged, rather than end the link.
//!
//! When it ends: a writer whose write fails drops its channel, so the
//! sending role sees a closed link. A reader ends at EOF (cleanly between
//! frames), on input that does not decode, or when its channel's receiver
//! is gone; dropping its sender shows the receiving role a closed link,
//! and after a failure it shuts its socket down too. A reader may be given a second socket
//! to shut when it ends: the node's `manager_spawner` reader shuts the
//! `daemon_spawner` link, whose end is the spawner role's end for the
//! daemon, so a broken manager link leads to the ordered shutdown rather
//! than a node that can no longer start or stop anything.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::trace::{Role, Tracer};
use crate::wire::link::{WakingSendError, WakingSender};
use crate::wire::{DecodeError, Envelope, FrameDecoder, FrameError, decode_envelope, encode_frame};

/// Bytes read from a link socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The largest frame body a link carries: 64 MiB, the largest `max_frame`
/// a node may be configured with.
pub(super) const LINK_MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Records the hops a reader delivers, as the sending role would have.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    /// The node's correlation table.
    pub(super) tracer: Tracer,
    /// The role on the far side of the socket.
    pub(super) from: Role,
    /// The role the reader delivers to.
    pub(super) to: Role,
}

/// Why a link reader ended other than at a clean EOF.
#[derive(Debug)]
pub(super) enum LinkError {
    /// Reading the socket failed.
    Read {
        /// The link's protocol.
        link: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The peer closed the link in the middle of a frame.
    Truncated {
        /// The link's protocol.
        link: &'static str,
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
    /// A frame announced more than the link's limit.
    Frame {
        /// The link's protocol.
        link: &'static str,
        /// The codec's error.
        source: FrameError,
    },
    /// A frame's body is not a message of the link's protocol.
    Decode {
        /// The link's protocol.
        link: &'static str,
        /// What was wrong.
        source: DecodeError,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Read { link, source } => write!(f, "reading the {link} link: {source}"),
            LinkError::Truncated { link, buffered } => write!(
                f,
                "the {link} link closed in the middle of a frame ({buffered} bytes buffered)"
            ),
            LinkError::Frame { link, source } => {
                write!(f, "the {link} link sent a bad frame, ending it: {source}")
            }
            LinkError::Decode { link, source } => {
                write!(
                    f,
                    "the {link} link sent an undecodable message, ending it: {source}"
                )
            }
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Read { source, .. } => Some(source),
            LinkError::Truncated { .. } => None,
            LinkError::Frame { source, .. } => Some(source),
            LinkError::Decode { source, .. } => Some(source),
        }
    }
}

/// How a link reader ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadEnd {
    /// The peer closed the link between frames.
    Eof,
    /// The receiving role is gone.
    Unwanted,
}

/// A link's outgoing side: the channel a role sends on, and the socket.
pub(super) type Outgoing<M> = (Receiver<M>, UnixStream);

/// Starts one thread named `name` that writes the messages of both links,
/// each to its own socket, as they come (a thread per link would only
/// forward the same way). It ends once both channels have closed or
/// failed to write.
pub(super) fn spawn_writer<A, B>(
    name: &str,
    first: Outgoing<A>,
    second: Outgoing<B>,
) -> io::Result<JoinHandle<()>>
where
    A: Envelope + Send + 'static,
    B: Envelope + Send + 'static,
{
    thread::Builder::new().name(name.to_owned()).spawn(move || {
        let (mut first, mut second) = (Some(first), Some(second));
        let mut out = Vec::new();
        while first.is_some() || second.is_some() {
            let (never_a, never_b) = (crossbeam_channel::never(), crossbeam_channel::never());
            let a = first.as_ref().map_or(&never_a, |(messages, _)| messages);
            let b = second.as_ref().map_or(&never_b, |(messages, _)| messages);
            let next = crossbeam_channel::select! {
                recv(a) -> message => Ok(message.ok()),
                recv(b) -> message => Err(message.ok()),
            };
            match next {
                Ok(message) => write_next(&mut first, message, &mut out),
                Err(message) => write_next(&mut second, message, &mut out),
            }
        }
    })
}

/// Writes `first` and what else is queued on `link`; at the channel's end
/// (`first` is None) or a failed write, shuts the socket for writing and
/// drops the link, so the peer sees EOF after the last frame and the
/// sending role a closed channel.
fn write_next<M: Envelope>(link: &mut Option<Outgoing<M>>, first: Option<M>, out: &mut Vec<u8>) {
    let Some((messages, socket)) = link.as_mut() else {
        return;
    };
    let written = first.is_some_and(|first| write_frames(first, messages, socket, out));
    if !written && let Some((_, socket)) = link.take() {
        // The peer may be gone already; then there is nobody to tell.
        let _ = socket.shutdown(Shutdown::Write);
    }
}

/// Another link a reader shuts down when it ends, unless `unless` is set
/// by then (the daemon sets it when its ordered shutdown begins, after
/// which links end because their roles do).
#[derive(Debug)]
pub(super) struct Sibling {
    /// The other link's socket.
    pub(super) socket: UnixStream,
    /// Set once links may end in order.
    pub(super) unless: Arc<AtomicBool>,
}

/// Where a link reader delivers: a role's plain channel, or one into the
/// spawner's poll.
pub(super) trait Inbox<M>: Send {
    /// Hands `message` on, waiting while the channel is full; false once
    /// the receiving role is gone.
    fn deliver(&self, message: M) -> bool;
}

impl<M: Send> Inbox<M> for Sender<M> {
    fn deliver(&self, message: M) -> bool {
        self.send(message).is_ok()
    }
}

impl<M: Send> Inbox<M> for WakingSender<M> {
    fn deliver(&self, message: M) -> bool {
        match self.send(message) {
            Ok(()) => true,
            Err(WakingSendError::Disconnected) => false,
            Err(error) => {
                log::error!("handing a link's message on: {error}");
                false
            }
        }
    }
}

/// Starts a thread named `name` that reads `socket` into `messages`; a
/// failure is logged. When it ends, `then_shut` (another link) is shut
/// down too, if given.
pub(super) fn spawn_reader<M: Envelope + Send + 'static>(
    name: &str,
    socket: UnixStream,
    messages: impl Inbox<M> + 'static,
    recorder: Option<Recorder>,
    then_shut: Option<Sibling>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_owned()).spawn(move || {
        let wanted = match read_frames(socket, &messages, recorder.as_ref()) {
            Ok(ended) => ended == ReadEnd::Eof,
            Err(error) => {
                log::error!("{error}");
                true
            }
        };
        // A receiver that is gone is a role that ended, which the daemon
        // sees anyway; only a link that broke under a live role is news.
        if let Some(other) =
            then_shut.filter(|other| wanted && !other.unless.load(Ordering::Acquire))
        {
            log::error!(
                "the {} link ended under a live node: ending the spawner's links",
                M::PROTOCOL.as_str()
            );
            // Already shut or closed by the peer: the end is seen anyway.
            let _ = other.socket.shutdown(Shutdown::Both);
        }
    })
}

/// Writes `first` and every message queued behind it in one write; false
/// when the write fails.
fn write_frames<M: Envelope>(
    first: M,
    messages: &Receiver<M>,
    mut socket: &UnixStream,
    out: &mut Vec<u8>,
) -> bool {
    let link = M::PROTOCOL.as_str();
    out.clear();
    for message in std::iter::once(first).chain(messages.try_iter()) {
        let len = message.encoded_len();
        if len > LINK_MAX_FRAME as usize {
            log::error!(
                "[{}] not sending {} on the {link} link: {len} bytes exceed its limit of \
                     {LINK_MAX_FRAME} bytes",
                message.correlation().unwrap_or("-"),
                message.code_name()
            );
            continue;
        }
        encode_frame(&message, out);
    }
    match socket.write_all(out) {
        Ok(()) => true,
        Err(error) => {
            log::warn!("writing the {link} link: {error}; it is closed");
            false
        }
    }
}

/// Reads frames from `socket` into `messages` until EOF (`Ok`), until
/// the receiver is gone (`Ok`), or until the input fails to read or
/// decode; the socket is then shut down both ways, so the far side sees
/// the link end rather than write into a socket nobody reads.
pub(super) fn read_frames<M: Envelope>(
    socket: UnixStream,
    messages: &impl Inbox<M>,
    recorder: Option<&Recorder>,
) -> Result<ReadEnd, LinkError> {
    let result = read_into(&socket, messages, recorder);
    if result.is_err() {
        // The peer may have closed it already.
        let _ = socket.shutdown(Shutdown::Both);
    }
    result
}

fn read_into<M: Envelope>(
    mut socket: &UnixStream,
    messages: &impl Inbox<M>,
    recorder: Option<&Recorder>,
) -> Result<ReadEnd, LinkError> {
    let link = M::PROTOCOL.as_str();
    let mut decoder = FrameDecoder::new(LINK_MAX_FRAME);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let read = match socket.read(&mut chunk) {
            Ok(0) if decoder.buffered() == 0 => return Ok(ReadEnd::Eof),
            Ok(0) => {
                return Err(LinkError::Truncated {
                    link,
                    buffered: decoder.buffered(),
                });
            }
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(LinkError::Read { link, source }),
        };
        decoder.extend(&chunk[..read]);
        while let Some(body) = decoder
            .next_frame()
            .map_err(|source| LinkError::Frame { link, source })?
        {
            let message: M =
                decode_envelope(body).map_err(|source| LinkError::Decode { link, source })?;
            if let Some(recorder) = recorder {
                recorder.tracer.record(recorder.from, recorder.to, &message);
            }
            if !messages.deliver(message) {
                return Ok(ReadEnd::Unwanted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::manager_spawner as ms;
    use crossbeam_channel::bounded;

    fn ack(id: &str) -> ms::Message {
        ms::Message {
            code: ms::message::Code::Ack as i32,
            correlation_id: Some(id.to_owned()),
            payload: None,
        }
    }

    #[test]
    fn messages_cross_a_socketpair_and_are_recorded_on_arrival() {
        let (near, far) = UnixStream::pair().unwrap();
        let (to_far, from_near) = bounded(4);
        let (into_far, arrived) = bounded::<ms::Message>(4);
        // The writer's other link carries its own messages meanwhile.
        let (other_near, mut other_far) = UnixStream::pair().unwrap();
        let (to_other, from_other) = bounded(4);
        let writer =
            spawn_writer("test-writer", (from_near, near), (from_other, other_near)).unwrap();
        to_other.send(ack("b:1")).unwrap();
        let mut decoder = FrameDecoder::new(LINK_MAX_FRAME);
        let other: ms::Message = next_message(&mut other_far, &mut decoder);
        assert_eq!(other.correlation_id.as_deref(), Some("b:1"));
        let tracer = Tracer::new(8);
        let recorder = Recorder {
            tracer: tracer.clone(),
            from: Role::Spawner,
            to: Role::Manager,
        };
        let reader = thread::spawn(move || read_frames(far, &into_far, Some(&recorder)));
        for id in ["a:1", "a:2", "a:3"] {
            to_far.send(ack(id)).unwrap();
        }
        drop(to_far);
        let ids: Vec<_> = arrived.iter().map(|m| m.correlation_id.unwrap()).collect();
        assert_eq!(ids, ["a:1", "a:2", "a:3"]);
        // The first link's end leaves the other one served.
        to_other.send(ack("b:2")).unwrap();
        let other: ms::Message = next_message(&mut other_far, &mut decoder);
        assert_eq!(other.correlation_id.as_deref(), Some("b:2"));
        drop(to_other);
        writer.join().unwrap();
        let mut rest = Vec::new();
        assert_eq!(other_far.read_to_end(&mut rest).unwrap(), 0, "EOF on both");
        reader.join().unwrap().unwrap();
        let table = tracer.lock();
        let (_, hops) = table.get("a:2").unwrap();
        assert_eq!((hops[0].from, hops[0].to), (Role::Spawner, Role::Manager));
    }

    #[test]
    fn input_that_does_not_decode_ends_the_link() {
        let (mut near, far) = UnixStream::pair().unwrap();
        let (into_far, arrived) = bounded::<ms::Message>(4);
        near.write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
        let error = read_frames(far, &into_far, None).unwrap_err();
        assert!(matches!(error, LinkError::Decode { .. }), "{error}");
        assert!(arrived.try_recv().is_err());
    }

    #[test]
    fn a_failed_reader_shuts_its_link_and_its_sibling() {
        let (mut near, far) = UnixStream::pair().unwrap();
        let (sibling_near, mut sibling_far) = UnixStream::pair().unwrap();
        let (into_far, _arrived) = bounded::<ms::Message>(4);
        let sibling = Sibling {
            socket: sibling_near,
            unless: Arc::new(AtomicBool::new(false)),
        };
        let reader = spawn_reader("t-in", far, into_far, None, Some(sibling)).unwrap();
        near.write_all(&(LINK_MAX_FRAME + 1).to_be_bytes()).unwrap();
        reader.join().unwrap();
        let mut rest = Vec::new();
        assert_eq!(near.read_to_end(&mut rest).unwrap(), 0, "the link is shut");
        assert_eq!(
            sibling_far.read_to_end(&mut rest).unwrap(),
            0,
            "so is its sibling"
        );
    }

    /// Reads the next message of protocol `M` from `socket`.
    fn next_message<M: Envelope>(socket: &mut UnixStream, decoder: &mut FrameDecoder) -> M {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(body) = decoder.next_frame().unwrap() {
                return decode_envelope(body).unwrap();
            }
            let read = socket.read(&mut chunk).unwrap();
            assert!(read > 0, "the link closed");
            decoder.extend(&chunk[..read]);
        }
    }

    #[test]
    fn a_message_over_the_link_limit_is_dropped_and_the_link_goes_on() {
        let (near, mut far) = UnixStream::pair().unwrap();
        let (to_far, from_near) = bounded(4);
        let (other_near, _other_far) = UnixStream::pair().unwrap();
        let writer = spawn_writer(
            "t-out",
            (from_near, near),
            (bounded::<ms::Message>(1).1, other_near),
        )
        .unwrap();
        let mut huge = ack("big");
        huge.correlation_id = Some("x".repeat(LINK_MAX_FRAME as usize));
        to_far.send(huge).unwrap();
        to_far.send(ack("after")).unwrap();
        drop(to_far);
        writer.join().unwrap();
        let mut decoder = FrameDecoder::new(LINK_MAX_FRAME);
        let next: ms::Message = next_message(&mut far, &mut decoder);
        assert_eq!(next.correlation_id.as_deref(), Some("after"));
    }

    #[test]
    fn a_frame_cut_by_the_close_is_an_error() {
        let (mut near, far) = UnixStream::pair().unwrap();
        let (into_far, _arrived) = bounded::<ms::Message>(4);
        near.write_all(&[0, 0, 0, 9, 8]).unwrap();
        drop(near);
        let error = read_frames(far, &into_far, None).unwrap_err();
        assert!(
            matches!(error, LinkError::Truncated { buffered: 5, .. }),
            "{error}"
        );
    }
}
