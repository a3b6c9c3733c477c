//! The node's public request path without sockets or threads: one client
//! connection's [`Exchange`] (the io role's framing, decoding and
//! correlation bookkeeping) feeding a real [`Manager`] through
//! [`Manager::handle_io`], its replies handed back through the same io
//! channel. Fuzzers and property tests push arbitrary bytes through it.
//!
//! There is no spawner behind it: process work the manager asks for is
//! taken off its channel and dropped, so requests answered only once a
//! process starts or stops stay in flight. Shutdown orders to the daemon
//! are dropped likewise.

use std::path::Path;

use crossbeam_channel::{Receiver, bounded};
use mio::{Poll, Token, Waker};

use super::{DaemonError, identity};
use crate::conf::Config;
use crate::io::{Exchange, IoError, IoSettings, ProtocolError, begin_requests, record_replies};
use crate::manager::{Manager, ManagerLinks};
use crate::spawner::SpawnerInbox;
use crate::trace::Tracer;
use crate::wire::link::{
    ConnectionId, IoCommand, IoEvent, IoReceiver, NodeInfoBoard, WakingReceiver, io_channel,
};
use crate::wire::proto::{daemon_manager as dm, manager_spawner as ms};

/// A manager and one client connection's protocol state, joined without
/// sockets.
#[derive(Debug)]
pub struct Loopback {
    manager: Manager,
    exchange: Exchange,
    settings: IoSettings,
    tracer: Tracer,
    /// Reply bytes written to the client and not yet taken.
    output: Vec<u8>,
    /// The protocol error that ended the connection, if one did.
    refused: Option<ProtocolError>,
    replies: IoReceiver,
    to_daemon: Receiver<dm::Message>,
    to_spawner: WakingReceiver<ms::Message>,
    /// Keeps the replies channel's waker valid; nothing polls it.
    _poll: Poll,
}

impl Loopback {
    /// A manager for the configuration in `conf_dir` and a fresh connection.
    pub fn new(conf_dir: &Path) -> Result<Loopback, DaemonError> {
        let config = Config::load(conf_dir).map_err(DaemonError::Config)?;
        let settings = IoSettings::from_node(&config.node, crate::sys::effective_uid())
            .map_err(DaemonError::Io)?;
        let poll_error = |doing| move |source| DaemonError::Io(IoError::Poll { doing, source });
        let poll = Poll::new().map_err(poll_error("create its poll"))?;
        let waker =
            Waker::new(poll.registry(), Token(0)).map_err(poll_error("create its waker"))?;
        let (to_io, replies) = io_channel(waker, 1024);
        let (_, from_io) = bounded(1);
        let (_, from_daemon) = bounded(1);
        let (daemon_sender, to_daemon) = bounded(16);
        let (_, from_spawner) = bounded(1);
        let inbox = SpawnerInbox::new().map_err(poll_error("create the spawner's poll"))?;
        let (spawner_sender, to_spawner) = inbox.channel(1024);
        let tracer = Tracer::bounded(config.node.trace_capacity, config.node.trace_memory);
        let identity = identity(&config, None);
        let exchange = Exchange::new(ConnectionId(1), settings.max_frame);
        let links = ManagerLinks {
            from_io,
            to_io,
            from_daemon,
            to_daemon: daemon_sender,
            from_spawner,
            to_spawner: spawner_sender,
            cluster: None,
            node_info: NodeInfoBoard::default(),
        };
        Ok(Loopback {
            manager: Manager::new(links, tracer.clone(), config, identity),
            exchange,
            settings,
            tracer,
            output: Vec::new(),
            refused: None,
            replies,
            to_daemon,
            to_spawner,
            _poll: poll,
        })
    }

    /// Feeds bytes from the client, as one read from its socket. Every
    /// whole request is handled and its replies queued, as far as the
    /// connection's limits let requests in; a protocol error is returned
    /// (its `Error` is queued as the node's is; the connection is then
    /// over and later bytes are ignored, as the node discards them).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if let Some(error) = &self.refused {
            return Err(error.clone());
        }
        self.exchange.receive(bytes);
        let mut commands = Vec::new();
        loop {
            let mut batch = Vec::new();
            // Node info goes to the manager: no io here answers it.
            let taken =
                self.exchange
                    .take_requests(&self.settings, None, &mut batch, &mut Vec::new());
            let idle = batch.is_empty();
            let exchange = &mut self.exchange;
            begin_requests(&mut self.tracer.lock(), &mut batch, |request| {
                exchange.refuse_duplicate(request.message, true)
            });
            if !batch.is_empty() {
                self.manager.handle_io(IoEvent::Requests(batch));
            }
            self.replies.drain(&mut commands);
            for command in commands.drain(..) {
                if let IoCommand::Replies(replies) = command {
                    record_replies(&mut self.tracer.lock(), &replies);
                    for reply in &replies {
                        self.exchange.deliver(reply, &self.settings, || 0);
                    }
                }
            }
            self.to_daemon.try_iter().for_each(drop);
            self.to_spawner.drain(&mut Vec::new());
            if let Err(error) = taken {
                self.exchange.refuse(error.clone());
                self.refused = Some(error.clone());
                self.write_out();
                return Err(error);
            }
            self.write_out();
            if idle {
                return Ok(());
            }
        }
    }

    /// Moves everything queued to the output at once, as to a client that
    /// reads, so that only requests in flight can hold reading back.
    fn write_out(&mut self) {
        self.output.extend_from_slice(self.exchange.unsent());
        self.exchange.sent(self.output.len());
    }

    /// Takes the reply bytes queued since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.output.split_off(0)
    }

    /// Requests handed to the manager and not yet finally answered.
    pub fn in_flight(&self) -> usize {
        self.exchange.in_flight()
    }
}
