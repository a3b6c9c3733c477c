//! A small blocking client of etcd's v3 JSON gateway (`/v3/...`, etcd 3.4
//! and later): ranges, puts, deletes, transactions and leases over plain
//! HTTP/1.1 (`http.rs`). Keys and values travel base64-encoded, 64-bit
//! numbers as JSON strings; this module hides both. No threads: the
//! caller's thread waits for each answer, bounded by [`REQUEST_TIMEOUT`].
//! The watch stream is `watch.rs`'s.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::http::{self, HttpError};

/// The longest a request may take before its endpoint counts as away.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest reply read: a range of every key of a big cluster fits.
const MAX_REPLY: u64 = 64 << 20;

/// Why a request to etcd failed.
#[derive(Debug)]
pub enum EtcdError {
    /// No endpoint answered.
    Unreachable {
        /// What was asked, e.g. "/v3/kv/range".
        path: &'static str,
        /// The last endpoint's error.
        reason: String,
    },
    /// etcd answered with an error.
    Refused {
        /// What was asked.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// The answer was not what the gateway sends.
    Malformed {
        /// What was asked.
        path: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unreachable { path, reason } => {
                write!(
                    f,
                    "etcd is unreachable ({path}): {reason}; is etcd running?"
                )
            }
            EtcdError::Refused {
                path,
                status,
                message,
            } => write!(f, "etcd refused {path} (HTTP {status}): {message}"),
            EtcdError::Malformed { path, reason } => {
                write!(f, "etcd's answer to {path} is not understood: {reason}")
            }
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key and its value as a range returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value, as text (everything snow-fox writes is text).
    pub value: String,
    /// The revision of the key's last change.
    pub mod_revision: i64,
    /// The lease it is attached to, 0 for none.
    pub lease: i64,
}

/// One operation of a transaction's success branch.
#[derive(Debug, Clone)]
pub enum Op {
    /// Put `key` = `value`, on `lease` if not 0.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease, 0 for none.
        lease: i64,
    },
    /// Delete `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// A transaction's guard.
#[derive(Debug, Clone)]
pub enum Guard {
    /// `key` does not exist.
    Absent(String),
    /// `key` holds `value`.
    Holds(String, String),
}

/// The credentials etcd's authentication asks for.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user.
    pub name: String,
    /// The password.
    pub password: String,
}

/// The gateway's client: the endpoints, tried in turn from the last one
/// that answered, and the auth token once there is one.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    current: usize,
    credentials: Option<Credentials>,
    token: Option<String>,
}

impl Etcd {
    /// A client of `endpoints` (`http://host:port`), none contacted yet.
    pub fn new(endpoints: Vec<String>, credentials: Option<Credentials>) -> Etcd {
        Etcd {
            endpoints,
            current: 0,
            credentials,
            token: None,
        }
    }

    /// Every key under `prefix`, in key order, and the store's revision.
    pub fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let path = "/v3/kv/range";
        let body = json!({"key": encode(prefix), "range_end": encode(&prefix_end(prefix))});
        let reply = self.call(path, &body)?;
        let revision = header_revision(&reply);
        let kvs = key_values(path, reply.get("kvs"))?;
        Ok((kvs, revision))
    }

    /// The value of one key.
    pub fn get(&mut self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let path = "/v3/kv/range";
        let reply = self.call(path, &json!({"key": encode(key)}))?;
        Ok(key_values(path, reply.get("kvs"))?.into_iter().next())
    }

    /// Puts `key` = `value`, on `lease` if not 0.
    pub fn put(&mut self, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/kv/put", &put_body(key, value, lease))
            .map(drop)
    }

    /// Deletes `key`, or every key under it when `prefix`.
    pub fn delete(&mut self, key: &str, prefix: bool) -> Result<(), EtcdError> {
        let mut body = json!({"key": encode(key)});
        if prefix {
            body["range_end"] = Value::String(encode(&prefix_end(key)));
        }
        self.call("/v3/kv/deleterange", &body).map(drop)
    }

    /// Runs `ops` if every guard holds; whether they did.
    pub fn txn(&mut self, guards: &[Guard], ops: &[Op]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = guards
            .iter()
            .map(|guard| match guard {
                Guard::Absent(key) => json!({
                    "target": "CREATE", "result": "EQUAL",
                    "key": encode(key), "create_revision": "0"
                }),
                Guard::Holds(key, value) => json!({
                    "target": "VALUE", "result": "EQUAL",
                    "key": encode(key), "value": encode(value)
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    json!({"request_put": put_body(key, value, *lease)})
                }
                Op::Delete { key } => json!({"request_delete_range": {"key": encode(key)}}),
            })
            .collect();
        let reply = self.call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success}),
        )?;
        Ok(reply.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// A new lease of `ttl`: its id.
    pub fn grant(&mut self, ttl: Duration) -> Result<i64, EtcdError> {
        let path = "/v3/lease/grant";
        let reply = self.call(path, &json!({"TTL": ttl.as_secs().to_string()}))?;
        number(reply.get("ID")).ok_or_else(|| EtcdError::Malformed {
            path,
            reason: "no lease ID".to_owned(),
        })
    }

    /// Renews `lease`: whether it was still alive.
    pub fn keep_alive(&mut self, lease: i64) -> Result<bool, EtcdError> {
        let reply = self.call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))?;
        let ttl = reply
            .get("result")
            .and_then(|result| number(result.get("TTL")));
        Ok(ttl.is_some_and(|ttl| ttl > 0))
    }

    /// Ends `lease` and deletes its keys.
    pub fn revoke(&mut self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map(drop)
    }

    /// The endpoint to use now, for the watch thread.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current % self.endpoints.len().max(1)]
    }

    /// The auth token, once authenticated.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Posts `body` to `path`, trying each endpoint once from the current
    /// one; authenticates first, and again once if the token was refused.
    fn call(&mut self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let mut last = None;
        for _ in 0..self.endpoints.len().max(1) {
            match self.call_endpoint(path, body) {
                Err(EtcdError::Unreachable { reason, .. }) => {
                    last = Some(reason);
                    self.current = (self.current + 1) % self.endpoints.len().max(1);
                    self.token = None;
                }
                other => return other,
            }
        }
        Err(EtcdError::Unreachable {
            path,
            reason: last.unwrap_or_else(|| "no endpoint configured".to_owned()),
        })
    }

    fn call_endpoint(&mut self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        if self.credentials.is_some() && self.token.is_none() {
            self.authenticate()?;
        }
        match self.post(path, body) {
            Err(EtcdError::Refused { message, .. })
                if self.credentials.is_some() && message.contains("token") =>
            {
                self.authenticate()?;
                self.post(path, body)
            }
            other => other,
        }
    }

    fn authenticate(&mut self) -> Result<(), EtcdError> {
        let Some(credentials) = self.credentials.clone() else {
            return Ok(());
        };
        let path = "/v3/auth/authenticate";
        self.token = None;
        let body = json!({"name": credentials.name, "password": credentials.password});
        let reply = self.post(path, &body)?;
        match reply.get("token").and_then(Value::as_str) {
            Some(token) => {
                self.token = Some(token.to_owned());
                Ok(())
            }
            None => Err(EtcdError::Malformed {
                path,
                reason: "no token".to_owned(),
            }),
        }
    }

    fn post(&mut self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let unreachable = |error: HttpError| EtcdError::Unreachable {
            path,
            reason: error.to_string(),
        };
        let mut response = http::post_json(
            self.endpoint(),
            path,
            self.token.as_deref(),
            &body.to_string(),
            Some(REQUEST_TIMEOUT),
            REQUEST_TIMEOUT,
        )
        .map_err(unreachable)?;
        let mut text = String::new();
        (&mut response.body)
            .take(MAX_REPLY + 1)
            .read_to_string(&mut text)
            .map_err(|error| EtcdError::Unreachable {
                path,
                reason: format!("reading the answer of {}{path}: {error}", self.endpoint()),
            })?;
        if text.len() as u64 > MAX_REPLY {
            return Err(EtcdError::Malformed {
                path,
                reason: format!("the answer exceeds {MAX_REPLY} bytes"),
            });
        }
        let status = response.status;
        let reply: Value = serde_json::from_str(&text).map_err(|error| EtcdError::Malformed {
            path,
            reason: error.to_string(),
        })?;
        if status != 200 || reply.get("error").is_some() {
            let message = reply
                .get("message")
                .or_else(|| reply.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned();
            return Err(EtcdError::Refused {
                path,
                status,
                message,
            });
        }
        Ok(reply)
    }
}

/// Opens the watch stream of every key under `prefix` from `revision` on
/// `etcd`'s current endpoint: the chunked body, one JSON object a line.
pub fn open_watch(
    endpoint: &str,
    token: Option<&str>,
    prefix: &str,
    revision: i64,
) -> Result<impl Read + use<>, EtcdError> {
    let path = "/v3/watch";
    let body = json!({"create_request": {
        "key": encode(prefix),
        "range_end": encode(&prefix_end(prefix)),
        "start_revision": revision.to_string(),
    }});
    let response = http::post_json(
        endpoint,
        path,
        token,
        &body.to_string(),
        None,
        REQUEST_TIMEOUT,
    )
    .map_err(|error| EtcdError::Unreachable {
        path,
        reason: error.to_string(),
    })?;
    if response.status != 200 {
        return Err(EtcdError::Refused {
            path,
            status: response.status,
            message: "the watch was not opened".to_owned(),
        });
    }
    Ok(response.body)
}

/// One line of the watch stream: the revision of its events (0 when it
/// has none) and whether the watch was cancelled or failed.
pub fn parse_watch_line(line: &str) -> Result<(i64, bool), String> {
    let value: Value = serde_json::from_str(line).map_err(|error| error.to_string())?;
    if let Some(error) = value.get("error") {
        return Err(error.to_string());
    }
    let result = value.get("result").ok_or("no result")?;
    let cancelled = result.get("canceled").and_then(Value::as_bool) == Some(true);
    let revision = match result.get("events") {
        Some(Value::Array(events)) if !events.is_empty() => header_revision(result),
        _ => 0,
    };
    Ok((revision, cancelled))
}

fn put_body(key: &str, value: &str, lease: i64) -> Value {
    let mut body = json!({"key": encode(key), "value": encode(value)});
    if lease != 0 {
        body["lease"] = Value::String(lease.to_string());
    }
    body
}

fn header_revision(reply: &Value) -> i64 {
    reply
        .get("header")
        .and_then(|header| number(header.get("revision")))
        .unwrap_or(0)
}

fn key_values(path: &'static str, kvs: Option<&Value>) -> Result<Vec<KeyValue>, EtcdError> {
    let malformed = |reason: &str| EtcdError::Malformed {
        path,
        reason: reason.to_owned(),
    };
    let Some(kvs) = kvs else {
        return Ok(Vec::new());
    };
    let kvs = kvs
        .as_array()
        .ok_or_else(|| malformed("kvs is not an array"))?;
    kvs.iter()
        .map(|kv| {
            let text = |field: &str| {
                kv.get(field)
                    .and_then(Value::as_str)
                    .map_or(Ok(String::new()), decode)
                    .map_err(|_| malformed("a key or value is not base64 UTF-8"))
            };
            Ok(KeyValue {
                key: text("key")?,
                value: text("value")?,
                mod_revision: number(kv.get("mod_revision")).unwrap_or(0),
                lease: number(kv.get("lease")).unwrap_or(0),
            })
        })
        .collect()
}

/// An int64 as the gateway writes it: a string of digits (or a number).
fn number(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

fn encode(text: &str) -> String {
    BASE64.encode(text)
}

fn decode(text: &str) -> Result<String, ()> {
    let bytes = BASE64.decode(text).map_err(drop)?;
    String::from_utf8(bytes).map_err(drop)
}

/// The end of the range of keys starting with `prefix`: the prefix with
/// its last byte incremented (keys here are ASCII, never 0xff).
fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end("/sf/nodes/"), "/sf/nodes0");
        assert_eq!(decode(&encode("/sf/a")), Ok("/sf/a".to_owned()));
    }

    #[test]
    fn int64_fields_are_read_from_strings_or_numbers() {
        assert_eq!(number(Some(&json!("7587"))), Some(7587));
        assert_eq!(number(Some(&json!(12))), Some(12));
        assert_eq!(number(Some(&json!("x"))), None);
    }

    #[test]
    fn watch_lines_give_the_events_revision() {
        let created = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
        assert_eq!(parse_watch_line(created), Ok((0, false)));
        let event = r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"YQ=="}}]}}"#;
        assert_eq!(parse_watch_line(event), Ok((9, false)));
        let cancelled = r#"{"result":{"header":{"revision":"9"},"canceled":true}}"#;
        assert_eq!(parse_watch_line(cancelled), Ok((0, true)));
        assert!(parse_watch_line("{\"error\":{\"grpc_code\":14}}").is_err());
        assert!(parse_watch_line("not json").is_err());
    }
}
