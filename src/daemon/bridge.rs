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
//! When it ends: a writer whose write fails drops its channel, so the
//! sending role sees a closed link. A reader ends at EOF (cleanly between
//! frames), on input that does not decode, or when its channel's
//! receiver is gone; dropping its sender shows the receiving role a
//! closed link.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::trace::{Role, Tracer};
use crate::wire::{
    DEFAULT_MAX_FRAME, DecodeError, Envelope, FrameDecoder, FrameError, decode_envelope,
    encode_frame,
};

/// Bytes read from a link socket at a time.
const READ_CHUNK: usize = 64 * 1024;

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

/// Starts a thread named `name` that writes `messages` to `socket`.
pub(super) fn spawn_writer<M: Envelope + Send + 'static>(
    name: &str,
    messages: Receiver<M>,
    socket: UnixStream,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || write_frames(&messages, socket))
}

/// Starts a thread named `name` that reads `socket` into `messages`; a
/// failure is logged.
pub(super) fn spawn_reader<M: Envelope + Send + 'static>(
    name: &str,
    socket: UnixStream,
    messages: Sender<M>,
    recorder: Option<Recorder>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new().name(name.to_owned()).spawn(move || {
        if let Err(error) = read_frames(socket, &messages, recorder.as_ref()) {
            log::error!("{error}");
        }
    })
}

fn write_frames<M: Envelope>(messages: &Receiver<M>, mut socket: UnixStream) {
    let link = M::PROTOCOL.as_str();
    let mut out = Vec::new();
    while let Ok(first) = messages.recv() {
        out.clear();
        encode_frame(&first, &mut out);
        for message in messages.try_iter() {
            encode_frame(&message, &mut out);
        }
        if let Err(error) = socket.write_all(&out) {
            log::warn!("writing the {link} link: {error}; it is closed");
            return;
        }
    }
    // The peer may be gone already; then there is nobody to tell.
    let _ = socket.shutdown(Shutdown::Write);
}

/// Reads frames from `socket` into `messages` until EOF (`Ok`), until
/// the receiver is gone (`Ok`), or until the input fails to read or
/// decode.
pub(super) fn read_frames<M: Envelope>(
    mut socket: UnixStream,
    messages: &Sender<M>,
    recorder: Option<&Recorder>,
) -> Result<(), LinkError> {
    let link = M::PROTOCOL.as_str();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let read = match socket.read(&mut chunk) {
            Ok(0) if decoder.buffered() == 0 => return Ok(()),
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
            if messages.send(message).is_err() {
                return Ok(());
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
        let writer = spawn_writer("test-writer", from_near, near).unwrap();
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
        writer.join().unwrap();
        reader.join().unwrap().unwrap();
        let table = tracer.lock();
        let (_, hops) = table.get("a:2").unwrap();
        assert_eq!((hops[0].from, hops[0].to), (Role::Spawner, Role::Manager));
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

    fn send<M: Envelope>(socket: &mut UnixStream, message: &M) {
        let mut out = Vec::new();
        encode_frame(message, &mut out);
        socket.write_all(&out).unwrap();
    }

    /// A spawner behind its bridges, as in the spawner process, fed raw
    /// frames as a compromised node could send them.
    #[test]
    fn forged_requests_over_the_link_are_refused_by_the_spawner() {
        use crate::spawner::{Spawner, SpawnerLinks, TableSource, tests::PROCESS_TESTS};
        use crate::wire::proto::daemon_spawner as ds;
        use std::sync::PoisonError;
        use std::time::Duration;

        let _serial = PROCESS_TESTS.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut node_ms, spawner_ms) = UnixStream::pair().unwrap();
        let (mut node_ds, spawner_ds) = UnixStream::pair().unwrap();
        for socket in [&node_ms, &node_ds] {
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
        }
        let (from_manager_tx, from_manager) = bounded(4);
        let (to_manager, to_manager_rx) = bounded(4);
        let (from_daemon_tx, from_daemon) = bounded(4);
        let (to_daemon, to_daemon_rx) = bounded(4);
        let (_notices, child_exited) = bounded(1);
        spawn_reader(
            "t-ms-in",
            spawner_ms.try_clone().unwrap(),
            from_manager_tx,
            None,
        )
        .unwrap();
        spawn_reader(
            "t-ds-in",
            spawner_ds.try_clone().unwrap(),
            from_daemon_tx,
            None,
        )
        .unwrap();
        spawn_writer("t-ms-out", to_manager_rx, spawner_ms).unwrap();
        spawn_writer("t-ds-out", to_daemon_rx, spawner_ds).unwrap();
        let spawner = Spawner::new(
            SpawnerLinks {
                from_manager,
                to_manager,
                from_daemon,
                to_daemon,
                child_exited,
            },
            Tracer::new(1),
            TableSource::FromLinks,
        );
        let run = thread::spawn(move || spawner.run());

        let table = ds::ServiceTable {
            services: vec![ds::service_table::Service {
                id: "allowed".into(),
                command: vec!["/bin/true".into()],
                ..Default::default()
            }],
            log_dir: None,
            ..Default::default()
        };
        send(
            &mut node_ds,
            &ds::Message {
                code: ds::message::Code::ServiceTable as i32,
                correlation_id: None,
                payload: Some(ds::message::Payload::ServiceTable(table)),
            },
        );
        let forged_start = ms::StartProcess {
            command: vec!["/bin/sh".into(), "-c".into(), "id".into()],
            service_id: Some("allowed".into()),
            ..Default::default()
        };
        let signal_init = ms::SignalProcess {
            pid: 1,
            signal: 9,
            group: Some(false),
        };
        let requests = [
            (
                "f:1",
                ms::message::Code::StartProcess,
                ms::message::Payload::StartProcess(forged_start),
            ),
            (
                "f:2",
                ms::message::Code::SignalProcess,
                ms::message::Payload::SignalProcess(signal_init),
            ),
        ];
        for (id, code, payload) in requests {
            send(
                &mut node_ms,
                &ms::Message {
                    code: code as i32,
                    correlation_id: Some(id.into()),
                    payload: Some(payload),
                },
            );
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let first: ms::Message = next_message(&mut node_ms, &mut decoder);
        assert_eq!(first.code, ms::message::Code::CgroupStatus as i32);
        for (id, reason) in [
            (
                "f:1",
                "its command is not the one the service table gives `allowed`",
            ),
            ("f:2", "pid 1 is not a live child of the spawner"),
        ] {
            let reply: ms::Message = next_message(&mut node_ms, &mut decoder);
            assert_eq!(reply.correlation_id.as_deref(), Some(id));
            match reply.payload {
                Some(ms::message::Payload::Error(error)) => assert_eq!(error.reason, reason),
                other => panic!("{id} was not refused: {other:?}"),
            }
        }

        send(
            &mut node_ds,
            &ds::Message {
                code: ds::message::Code::Shutdown as i32,
                correlation_id: Some("f:3".into()),
                payload: None,
            },
        );
        let ack: ds::Message =
            next_message(&mut node_ds, &mut FrameDecoder::new(DEFAULT_MAX_FRAME));
        assert_eq!(ack.code, ds::message::Code::Ack as i32);
        run.join().unwrap().unwrap();
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
