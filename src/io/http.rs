//! The optional `metrics_listen` endpoint: HTTP/1.1 over TCP, in io's own
//! poll, answering `GET /metrics` with the manager's Prometheus text.
//!
//! A request is read until its head is complete (parsed with `httparse`;
//! at most [`MAX_HEAD`] bytes), then answered once and the connection
//! closed: `GET /metrics` goes to the manager as a `MetricsRequest`, like
//! any client's, and its reply is written back as the body; any other
//! path is 404, any other method 405, a head that does not parse or is
//! too long 400. Not configured, none of this exists: no socket, no
//! token, no work.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};

use crate::wire::proto::public_api::{self, message::Code, message::Payload};

/// The longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// Not all of it has arrived.
    Partial,
    /// `GET /metrics`.
    Metrics,
    /// Anything else: the whole response to send.
    Refused(Vec<u8>),
}

/// The listening socket.
#[derive(Debug)]
pub struct Endpoint {
    /// The listener, registered in io's poll.
    pub listener: TcpListener,
}

/// One HTTP connection.
#[derive(Debug)]
pub struct HttpConnection {
    /// The socket.
    pub stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    /// Its request went to the manager; the answer is awaited.
    pub waiting: bool,
}

/// What a connection wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// To be read again when readable.
    Read,
    /// Its metrics request is to go to the manager.
    AskManager,
    /// To be written when writable.
    Write,
    /// Done: close it.
    Close,
}

impl HttpConnection {
    /// A new connection.
    pub fn new(stream: TcpStream) -> HttpConnection {
        HttpConnection {
            stream,
            head: Vec::new(),
            out: Vec::new(),
            written: 0,
            waiting: false,
        }
    }

    /// Reads what has arrived; what to do next.
    pub fn read(&mut self, scratch: &mut [u8]) -> Next {
        if self.waiting || !self.out.is_empty() {
            return self.drain(scratch);
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Next::Close,
                Ok(count) => {
                    self.head.extend_from_slice(&scratch[..count]);
                    match parse(&self.head) {
                        Asked::Partial => continue,
                        Asked::Metrics => {
                            self.waiting = true;
                            return Next::AskManager;
                        }
                        Asked::Refused(response) => return self.respond(response),
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Next::Read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Input after the request is not read: only EOF matters.
    fn drain(&mut self, scratch: &mut [u8]) -> Next {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    return if self.waiting {
                        Next::Close
                    } else {
                        self.flush()
                    };
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return if self.waiting {
                        Next::Read
                    } else {
                        self.flush()
                    };
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// The manager's reply to its metrics request: written as the body.
    pub fn answer(&mut self, reply: &public_api::Message) -> Next {
        self.waiting = false;
        let response = match (&reply.payload, Code::try_from(reply.code)) {
            (Some(Payload::MetricsResponse(metrics)), Ok(Code::MetricsResponse)) => response(
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.text.as_bytes(),
            ),
            (Some(Payload::Error(error)), _) => response(
                "503 Service Unavailable",
                "text/plain",
                error.reason.as_bytes(),
            ),
            _ => response("500 Internal Server Error", "text/plain", b"no metrics\n"),
        };
        self.respond(response)
    }

    fn respond(&mut self, response: Vec<u8>) -> Next {
        self.out = response;
        self.written = 0;
        self.flush()
    }

    /// Writes what is pending.
    pub fn flush(&mut self) -> Next {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Next::Close,
                Ok(count) => self.written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Next::Write,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        Next::Close
    }
}

/// What the request head in `bytes` asks for.
pub fn parse(bytes: &[u8]) -> Asked {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => Asked::Partial,
        Ok(httparse::Status::Partial) => Asked::Refused(response(
            "431 Request Header Fields Too Large",
            "text/plain",
            b"request head too large\n",
        )),
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some("GET"), Some("/metrics")) => Asked::Metrics,
            (Some("GET"), _) => Asked::Refused(response(
                "404 Not Found",
                "text/plain",
                b"only /metrics is here\n",
            )),
            _ => {
                let mut refused = response(
                    "405 Method Not Allowed",
                    "text/plain",
                    b"only GET is allowed\n",
                );
                let at = refused.len() - b"\r\n".len() - "only GET is allowed\n".len();
                refused.splice(at..at, b"Allow: GET\r\n".iter().copied());
                Asked::Refused(refused)
            }
        },
        Err(_) => Asked::Refused(response(
            "400 Bad Request",
            "text/plain",
            b"not an HTTP/1.1 request\n",
        )),
    }
}

/// A whole response that closes the connection.
fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_line(asked: Asked) -> String {
        match asked {
            Asked::Refused(bytes) => String::from_utf8_lossy(&bytes)
                .lines()
                .next()
                .unwrap()
                .to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Asked::Metrics
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHo"), Asked::Partial);
        assert_eq!(
            status_line(parse(b"GET / HTTP/1.1\r\n\r\n")),
            "HTTP/1.1 404 Not Found"
        );
        let post = parse(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let Asked::Refused(bytes) = post else {
            panic!("{post:?}")
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nonly GET is allowed\n"), "{text}");
        assert_eq!(
            status_line(parse(b"\x00\x01garbage\r\n\r\n")),
            "HTTP/1.1 400 Bad Request"
        );
        let long = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_HEAD],
        ]
        .concat();
        assert_eq!(
            status_line(parse(&long)),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }
}
