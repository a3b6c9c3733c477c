//! The spawner's end of the `log_keeper` link: finds the node's log
//! keeper by its name (starting one when there is none) and hands it
//! pipes, one request at a time.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use prost::Message as _;

use super::{MAX_PACKET, name_for, serve};
use crate::sys;
use crate::wire::LogKeeper;
use crate::wire::proto::log_keeper as lk;

/// The longest the spawner waits for the keeper's answer to one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How a spawner starts a log keeper when none is running.
#[derive(Debug, Clone)]
pub enum KeeperLaunch {
    /// Runs this program (the node binary) as `PROGRAM --log-keeper NAME`,
    /// in its own session, so that it outlives the node.
    Exec(PathBuf),
    /// Serves on a thread of this process, which it then does not outlive:
    /// for tests of the spawner role alone.
    Thread,
}

/// The connection to the log keeper, made when first needed and again
/// after the keeper went away.
#[derive(Debug)]
pub(in crate::spawner) struct KeeperLink {
    launch: KeeperLaunch,
    name: String,
    socket: Option<OwnedFd>,
    requests: u64,
}

impl KeeperLink {
    /// A link that will start keepers with `launch`.
    pub(in crate::spawner) fn new(launch: KeeperLaunch) -> KeeperLink {
        KeeperLink {
            launch,
            name: name_for(sys::effective_uid(), Path::new("")),
            socket: None,
            requests: 0,
        }
    }

    /// Uses the keeper of `log_dir` from now on.
    pub(in crate::spawner) fn set_log_dir(&mut self, log_dir: &Path) {
        let name = name_for(sys::effective_uid(), log_dir);
        if name != self.name {
            self.name = name;
            self.socket = None;
        }
    }

    /// Hands `pipe` (a read end) to the keeper as the stream `add`
    /// describes; the keeper's reason when it refuses, or why it could not
    /// be reached.
    pub(in crate::spawner) fn add_stream(
        &mut self,
        add: lk::AddStream,
        pipe: BorrowedFd<'_>,
    ) -> Result<(), String> {
        self.requests += 1;
        let request = lk::Message {
            code: lk::message::Code::AddStream as i32,
            correlation_id: Some(self.requests.to_string()),
            payload: Some(lk::message::Payload::AddStream(add)),
        }
        .encode_to_vec();
        // A keeper that ended since the last request (its last stream
        // closed while no spawner was connected) is started again once.
        let mut retried = false;
        loop {
            let socket = self.connect()?;
            match exchange(socket, &request, pipe) {
                Ok(answer) => return answer,
                Err(error) if !retried => {
                    log::debug!("spawner: the log keeper went away ({error}); reconnecting");
                    self.socket = None;
                    retried = true;
                }
                Err(error) => {
                    self.socket = None;
                    return Err(format!(
                        "the log keeper {} did not answer: {error}",
                        self.name
                    ));
                }
            }
        }
    }

    /// The connection, made (and the keeper started) if there is none.
    fn connect(&mut self) -> Result<&OwnedFd, String> {
        if self.socket.is_none() {
            let socket = match sys::seqpacket_connect(self.name.as_bytes()) {
                Ok(socket) => socket,
                Err(error) if error.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    self.start()?;
                    sys::seqpacket_connect(self.name.as_bytes()).map_err(|error| {
                        format!(
                            "connecting to the log keeper {} it started: {error}",
                            self.name
                        )
                    })?
                }
                Err(error) => {
                    return Err(format!(
                        "connecting to the log keeper {}: {error}",
                        self.name
                    ));
                }
            };
            let peer = sys::peer_credentials(&socket)
                .map_err(|error| format!("asking who holds {}: {error}", self.name))?;
            if peer.uid != sys::effective_uid() {
                return Err(format!(
                    "the log keeper's name {} is held by uid {} (pid {}), not by uid {}: \
                     refusing to hand it output",
                    self.name,
                    peer.uid,
                    peer.pid,
                    sys::effective_uid()
                ));
            }
            sys::set_receive_timeout(&socket, ANSWER_TIMEOUT)
                .map_err(|error| format!("setting the log keeper's answer timeout: {error}"))?;
            self.socket = Some(socket);
        }
        self.socket
            .as_ref()
            .ok_or_else(|| "no log keeper connection".to_owned())
    }

    /// Starts a keeper and waits until it holds its name.
    fn start(&self) -> Result<(), String> {
        match &self.launch {
            KeeperLaunch::Thread => {
                let listener = sys::seqpacket_listen(self.name.as_bytes())
                    .map_err(|error| format!("binding the log keeper {}: {error}", self.name))?;
                std::thread::Builder::new()
                    .name("sf-log-keeper".into())
                    .spawn(move || {
                        if let Err(error) = serve(listener) {
                            log::error!("{error}");
                        }
                    })
                    .map_err(|error| format!("starting the log keeper thread: {error}"))?;
                Ok(())
            }
            KeeperLaunch::Exec(program) => {
                let (ready, ready_writer) = sys::pipe().map_err(|error| {
                    format!("creating the log keeper's readiness pipe: {error}")
                })?;
                let mut command = Command::new(program);
                command
                    .arg("--log-keeper")
                    .arg(&self.name)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
                sys::start_in_new_session(&mut command);
                sys::pass_fd(&mut command, ready_writer.as_fd(), 3);
                let child = command.spawn().map_err(|error| {
                    format!("starting the log keeper {}: {error}", program.display())
                })?;
                drop(ready_writer);
                log::info!(
                    "spawner: started log keeper {} (pid {})",
                    self.name,
                    child.id()
                );
                // A newline once bound; EOF if it could not bind (another
                // keeper may have won the name, which connecting finds out).
                let mut byte = [0u8; 1];
                let _ = File::from(ready).read(&mut byte);
                Ok(())
            }
        }
    }
}

/// Sends one request with `pipe` and reads its answer: the keeper's
/// verdict, or the link's failure.
fn exchange(
    socket: &OwnedFd,
    request: &[u8],
    pipe: BorrowedFd<'_>,
) -> io::Result<Result<(), String>> {
    sys::send_packet(socket, request, Some(pipe))?;
    let mut packet = vec![0u8; MAX_PACKET];
    let (len, _) = sys::recv_packet(socket, &mut packet)?;
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "it closed the connection",
        ));
    }
    let answer = lk::Message::decode(&packet[..len])
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    Ok(match LogKeeper::from_message(answer.code, answer.payload) {
        Ok(LogKeeper::Ack) => Ok(()),
        Ok(LogKeeper::Error(error)) => Err(error.reason),
        Ok(LogKeeper::AddStream(_)) => Err("it answered with an AddStream".to_owned()),
        Err(bad) => Err(format!("a malformed answer: {bad}")),
    })
}
