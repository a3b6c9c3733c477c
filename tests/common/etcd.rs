//! A real etcd server for cluster tests and the failover bench: Debian's
//! `/usr/bin/etcd` on 127.0.0.1 with free ports and a temporary data dir,
//! killed on drop; and a TCP proxy in front of it that a test can cut, so
//! that one node loses the store while the others keep it. The benches
//! include this file by path.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::scratch::{TempDir, poll_until};

/// Where Debian's etcd-server package puts etcd (`.ci/run` installs it).
pub const ETCD: &str = "/usr/bin/etcd";

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running etcd; killed on drop.
pub struct Etcd {
    pub dir: TempDir,
    pub client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until its gateway answers.
    pub fn start() -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: apt-get install -y etcd-server (.ci/run does)"
        );
        let mut etcd = Etcd {
            dir: TempDir::new("etcd"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.run();
        etcd
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn run(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("etcd.log"))
            .unwrap();
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("{}/v3/kv/range", self.url());
        poll_until(
            "etcd to answer",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(1)))
                    .build()
                    .new_agent();
                agent.post(&url).send("{\"key\":\"YQ==\"}").ok().map(drop)
            },
        );
    }

    /// Kills etcd (SIGKILL); its data stays for [`Etcd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The number of gRPC calls etcd has served, by method, from its
    /// metrics (the JSON gateway's requests are served as gRPC calls).
    pub fn calls(&self) -> u64 {
        let url = format!("{}/metrics", self.url());
        let text = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|line| line.starts_with("grpc_server_started_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy on a free loopback port to `target`; [`Proxy::cut`] closes
/// every connection and refuses new ones, as a network partition would.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let flag = open.clone();
        thread::spawn(move || {
            let mut streams: Vec<TcpStream> = Vec::new();
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    for stream in streams.drain(..) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                streams.push(client.try_clone().unwrap());
                streams.push(server.try_clone().unwrap());
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    flag.clone(),
                );
                pipe(server, client, flag.clone());
            }
        });
        Proxy { port, open }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection, now and later.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        // Wakes the accept loop so that it closes what is open.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either ends or the proxy is cut.
fn pipe(mut from: TcpStream, mut to: TcpStream, open: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if !open.load(Ordering::SeqCst) || to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
