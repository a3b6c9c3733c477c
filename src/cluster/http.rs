//! The cluster role's HTTP/1.1 client: just what etcd's v3 JSON gateway
//! needs, a POST of a JSON body to `http://HOST:PORT` + path over a
//! `TcpStream`. One connection per request (`Connection: close`); the
//! response head is parsed by `httparse`, the body read by its
//! `Content-Length`, chunk by chunk (`Transfer-Encoding: chunked`, as the
//! watch stream comes) or to the connection's end. No TLS: the
//! configuration refuses `https://` endpoints. No threads: the caller's
//! thread waits, each read and write bounded by the request's deadline.

use std::fmt;
use std::io::{self, BufRead, BufReader, Chain, Cursor, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The longest response head read (status line and headers).
const MAX_HEAD: usize = 64 << 10;
/// The most headers a response may have.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_LINE: u64 = 4 << 10;

/// Why a request failed.
#[derive(Debug)]
pub struct HttpError {
    /// What was being done, e.g. "connecting to http://127.0.0.1:2379".
    doing: String,
    /// What failed.
    error: io::Error,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.error)
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A response: its status, and its body to read.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status, e.g. 200.
    pub status: u16,
    /// The body, as the head framed it.
    pub body: Body,
}

/// How the head said the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// Chunked: this many bytes left of the current chunk; `started` once
    /// a chunk was read (its data ends with CRLF), `done` after the last.
    Chunked {
        left: u64,
        started: bool,
        done: bool,
    },
    /// When the server closes the connection.
    Close,
}

/// A response body, read through its framing.
#[derive(Debug)]
pub struct Body {
    reader: BufReader<Chain<Cursor<Vec<u8>>, Deadlined>>,
    framing: Framing,
}

/// The connection, each read and write bounded by what is left until the
/// request's deadline (none: wait as long as it takes).
#[derive(Debug)]
struct Deadlined {
    stream: TcpStream,
    deadline: Option<Instant>,
}

impl Deadlined {
    /// What is left of the deadline, for the socket's timeout.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(io::Error::new(ErrorKind::TimedOut, "the request timed out")),
            },
        }
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(self.left()?)?;
        self.stream.read(buf).map_err(timed_out)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(self.left()?)?;
        self.stream.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A socket timeout reads as `WouldBlock`; say what it was.
fn timed_out(error: io::Error) -> io::Error {
    if error.kind() == ErrorKind::WouldBlock {
        io::Error::new(ErrorKind::TimedOut, "the request timed out")
    } else {
        error
    }
}

/// Posts the JSON `body` to `endpoint` (`http://HOST:PORT`) + `path`, with
/// `authorization` as that header if given, and reads the response head.
/// `timeout` bounds the whole request including its body (`None` for a
/// stream that never ends); `connect_timeout` each connection attempt.
pub fn post_json(
    endpoint: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
    timeout: Option<Duration>,
    connect_timeout: Duration,
) -> Result<Response, HttpError> {
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let fail = |doing: &str| {
        let doing = format!("{doing} {endpoint}{path}");
        move |error| HttpError { doing, error }
    };
    let host = endpoint.strip_prefix("http://").ok_or_else(|| {
        fail("posting to")(io::Error::new(
            ErrorKind::InvalidInput,
            "not an http:// URL",
        ))
    })?;
    if authorization.is_some_and(|value| value.bytes().any(|byte| byte.is_ascii_control())) {
        return Err(fail("posting to")(io::Error::new(
            ErrorKind::InvalidInput,
            "the authorization token holds a control character",
        )));
    }
    let stream = connect(host, deadline, connect_timeout).map_err(fail("connecting to"))?;
    let mut connection = Deadlined { stream, deadline };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        request.push_str("Authorization: ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    connection
        .write_all(request.as_bytes())
        .map_err(fail("sending to"))?;
    read_response(connection).map_err(fail("reading the answer of"))
}

/// Connects to `host` (`HOST:PORT`), trying each of its addresses in turn.
fn connect(
    host: &str,
    deadline: Option<Instant>,
    connect_timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::NotFound, "the host has no address");
    for address in host.to_socket_addrs()? {
        let left = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => connect_timeout,
        };
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "the request timed out"));
        }
        match TcpStream::connect_timeout(&address, left.min(connect_timeout)) {
            Ok(stream) => {
                // Requests are one write each; waiting for more would only delay them.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Reads the response head from `connection` and frames its body.
fn read_response(mut connection: Deadlined) -> io::Result<Response> {
    let mut head = Vec::new();
    let mut block = [0; 4096];
    loop {
        let read = connection.read(&mut block)?;
        if read == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the connection closed before a whole response head",
            ));
        }
        head.extend_from_slice(&block[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&head).map_err(|error| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("not an HTTP/1.1 response head: {error}"),
            )
        })?;
        if let httparse::Status::Complete(length) = parsed {
            let status = response.code.unwrap_or_default();
            let framing = framing(response.headers)?;
            let rest = head.split_off(length);
            return Ok(Response {
                status,
                body: Body {
                    reader: BufReader::new(Cursor::new(rest).chain(connection)),
                    framing,
                },
            });
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("the response head exceeds {MAX_HEAD} bytes"),
            ));
        }
    }
}

/// How `headers` say the body ends.
fn framing(headers: &[httparse::Header<'_>]) -> io::Result<Framing> {
    let invalid = |what: &str| io::Error::new(ErrorKind::InvalidData, what.to_owned());
    let mut framing = Framing::Close;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.eq_ignore_ascii_case(b"chunked") {
                return Err(invalid("a transfer encoding other than chunked"));
            }
            framing = Framing::Chunked {
                left: 0,
                started: false,
                done: false,
            };
        } else if header.name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked { .. })
        {
            let length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| invalid("a Content-Length that is not a number"))?;
            framing = Framing::Length(length);
        }
    }
    Ok(framing)
}

impl Body {
    /// Reads one line of at most [`MAX_LINE`] bytes, without its CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "a chunked body's line is cut short or too long",
            ));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// Starts the next chunk: how long it is, 0 after the last one (whose
    /// trailer is then read).
    fn next_chunk(&mut self, started: bool) -> io::Result<u64> {
        let invalid = |what: &str| io::Error::new(ErrorKind::InvalidData, what.to_owned());
        if started && !self.line()?.is_empty() {
            return Err(invalid("a chunk longer than its size"));
        }
        let mut line = self.line()?;
        line.extend_from_slice(b"\r\n");
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(invalid("not a chunk size")),
        };
        if size == 0 {
            while !self.line()?.is_empty() {}
        }
        Ok(size)
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let cut_short = || {
            io::Error::new(
                ErrorKind::UnexpectedEof,
                "the connection closed inside the body",
            )
        };
        match self.framing {
            Framing::Close => self.reader.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let read = self.reader.read(&mut buf[..want])?;
                if read == 0 {
                    return Err(cut_short());
                }
                self.framing = Framing::Length(left - read as u64);
                Ok(read)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { left, started, .. } => {
                let left = if left == 0 {
                    self.next_chunk(started)?
                } else {
                    left
                };
                if left == 0 {
                    self.framing = Framing::Chunked {
                        left,
                        started,
                        done: true,
                    };
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let read = self.reader.read(&mut buf[..want])?;
                if read == 0 {
                    return Err(cut_short());
                }
                self.framing = Framing::Chunked {
                    left: left - read as u64,
                    started: true,
                    done: false,
                };
                Ok(read)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// Serves one connection on a loopback port: reads the request head and
    /// body, answers `reply`; the request's text comes back from the join.
    fn serve_once(reply: &'static [u8]) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut block = [0; 1024];
            while !String::from_utf8_lossy(&request).contains("}") {
                let read = stream.read(&mut block).unwrap();
                if read == 0 {
                    break;
                }
                request.extend_from_slice(&block[..read]);
            }
            stream.write_all(reply).unwrap();
            String::from_utf8(request).unwrap()
        });
        (endpoint, server)
    }

    fn post(endpoint: &str, token: Option<&str>) -> Result<(u16, String), HttpError> {
        let mut response = post_json(
            endpoint,
            "/v3/kv/range",
            token,
            "{\"key\":\"YQ==\"}",
            Some(Duration::from_secs(10)),
            Duration::from_secs(10),
        )?;
        let mut text = String::new();
        response.body.read_to_string(&mut text).unwrap();
        Ok((response.status, text))
    }

    #[test]
    fn a_post_carries_its_json_body_and_token_and_reads_a_sized_answer() {
        let (endpoint, server) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}trailing junk");
        assert_eq!(
            post(&endpoint, Some("tok.1")).unwrap(),
            (200, "{\"a\":1}".to_owned())
        );
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /v3/kv/range HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nContent-Type: application/json\r\n"));
        assert!(request.contains("\r\nContent-Length: 14\r\n"));
        assert!(request.contains("\r\nAuthorization: tok.1\r\n"));
        assert!(request.ends_with("\r\n\r\n{\"key\":\"YQ==\"}"), "{request}");
    }

    #[test]
    fn chunked_and_close_delimited_bodies_are_read_whole() {
        let (endpoint, server) = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\nafter",
        );
        assert_eq!(
            post(&endpoint, None).unwrap(),
            (503, "{\"a\":1}".to_owned())
        );
        server.join().unwrap();
        let (endpoint, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\n{\"b\":2}");
        assert_eq!(
            post(&endpoint, None).unwrap(),
            (200, "{\"b\":2}".to_owned())
        );
        server.join().unwrap();
    }

    #[test]
    fn broken_answers_are_errors_that_say_what_was_being_done() {
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\":1}"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}}\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"SMTP ready\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            let (endpoint, server) = serve_once(reply);
            let result = post_json(
                &endpoint,
                "/v3/kv/range",
                None,
                "{}",
                Some(Duration::from_secs(10)),
                Duration::from_secs(10),
            );
            let failed = match result {
                Err(error) => {
                    assert!(error.to_string().contains("/v3/kv/range"), "{error}");
                    true
                }
                Ok(mut response) => response.body.read_to_end(&mut Vec::new()).is_err(),
            };
            assert!(failed, "{}", String::from_utf8_lossy(reply));
            server.join().unwrap();
        }
    }

    #[test]
    fn a_refused_connection_or_a_silent_server_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let post_within = |timeout: Duration| {
            post_json(
                &endpoint,
                "/v3/kv/range",
                None,
                "{}",
                Some(timeout),
                Duration::from_secs(10),
            )
            .unwrap_err()
        };
        // Accepted by the kernel, never answered: the deadline ends it.
        let error = post_within(Duration::from_millis(200));
        assert_eq!(error.error.kind(), ErrorKind::TimedOut, "{error}");
        assert!(
            error.to_string().starts_with("reading the answer of"),
            "{error}"
        );
        drop(listener);
        let error = post_within(Duration::from_secs(10));
        assert!(error.to_string().starts_with("connecting to"), "{error}");
        let error = post(&endpoint, Some("a\r\nX-Evil: 1")).unwrap_err();
        assert!(error.to_string().contains("control character"), "{error}");
    }
}
