//! The envelope every protocol shares: `code`, `correlation_id`, payload.

use std::fmt;

use prost::Message as _;

use super::FRAME_HEADER_LEN;
use super::proto::{daemon_manager, daemon_spawner, manager_cluster, manager_spawner, public_api};

/// The protocols of `protocol.md`, named as traces name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Clients and the node.
    Public,
    /// The daemon and the manager.
    DaemonManager,
    /// The daemon and the spawner.
    DaemonSpawner,
    /// The manager and the spawner.
    ManagerSpawner,
    /// The manager and the cluster role.
    ManagerCluster,
}

impl Protocol {
    /// The name used in `TraceResponse.Hop.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Public => "public",
            Protocol::DaemonManager => "daemon_manager",
            Protocol::DaemonSpawner => "daemon_spawner",
            Protocol::ManagerSpawner => "manager_spawner",
            Protocol::ManagerCluster => "manager_cluster",
        }
    }
}

impl Protocol {
    /// The name of `code` as the protocol's `.proto` spells it, `"?"` for
    /// a number it does not know.
    pub fn code_name(self, code: i32) -> &'static str {
        let name = match self {
            Protocol::Public => public_api::message::Code::try_from(code).map(|c| c.as_str_name()),
            Protocol::DaemonManager => {
                daemon_manager::message::Code::try_from(code).map(|c| c.as_str_name())
            }
            Protocol::DaemonSpawner => {
                daemon_spawner::message::Code::try_from(code).map(|c| c.as_str_name())
            }
            Protocol::ManagerSpawner => {
                manager_spawner::message::Code::try_from(code).map(|c| c.as_str_name())
            }
            Protocol::ManagerCluster => {
                manager_cluster::message::Code::try_from(code).map(|c| c.as_str_name())
            }
        };
        name.unwrap_or("?")
    }
}

/// What every protocol's `Message` offers, so that codecs and the
/// correlation table treat them alike.
pub trait Envelope: prost::Message + Default {
    /// The protocol this message belongs to.
    const PROTOCOL: Protocol;
    /// The code's number.
    fn code_number(&self) -> i32;
    /// The code's name as the `.proto` spells it, `"?"` for an unknown one.
    fn code_name(&self) -> &'static str {
        Self::PROTOCOL.code_name(self.code_number())
    }
    /// The correlation id, if the message carries a non-empty one.
    fn correlation(&self) -> Option<&str>;
}

macro_rules! envelope {
    ($module:ident, $protocol:expr) => {
        impl Envelope for $module::Message {
            const PROTOCOL: Protocol = $protocol;
            fn code_number(&self) -> i32 {
                self.code
            }
            fn correlation(&self) -> Option<&str> {
                self.correlation_id.as_deref().filter(|id| !id.is_empty())
            }
        }
    };
}

envelope!(public_api, Protocol::Public);
envelope!(daemon_manager, Protocol::DaemonManager);
envelope!(daemon_spawner, Protocol::DaemonSpawner);
envelope!(manager_spawner, Protocol::ManagerSpawner);
envelope!(manager_cluster, Protocol::ManagerCluster);

/// A frame body that is not a message of the link's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The body's correlation id, where the envelope could still be read.
    pub correlation_id: Option<String>,
    /// What was wrong, for the `Error` reply and the log.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Just the envelope's first two fields, to tell a missing `code` from a
/// present one (prost fills a missing required field with its default) and
/// to rescue the correlation id of a body whose payload is broken.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeHead {
    #[prost(int32, optional, tag = "1")]
    code: Option<i32>,
    #[prost(string, optional, tag = "2")]
    correlation_id: Option<String>,
}

/// Decodes one frame body as a message of protocol `M`. A body that does
/// not decode, or lacks field 1 `code` (an empty body is one), is an error.
pub fn decode_envelope<M: Envelope>(body: &[u8]) -> Result<M, DecodeError> {
    // Encoders write fields in order, so a body that starts with field 1's
    // varint key has its code; anything else is checked field by field.
    const CODE_KEY: u8 = 1 << 3;
    let head_checked = body.first() == Some(&CODE_KEY);
    match M::decode(body) {
        Ok(message) if head_checked => Ok(message),
        Ok(message) => match EnvelopeHead::decode(body) {
            Ok(EnvelopeHead { code: Some(_), .. }) => Ok(message),
            Ok(head) => Err(DecodeError {
                correlation_id: head.correlation_id,
                reason: if body.is_empty() {
                    "empty message body (field 1 `code` is required)".to_owned()
                } else {
                    "message lacks field 1 `code`".to_owned()
                },
            }),
            Err(error) => Err(DecodeError {
                correlation_id: None,
                reason: format!("undecodable message: {error}"),
            }),
        },
        Err(error) => Err(DecodeError {
            correlation_id: EnvelopeHead::decode(body)
                .ok()
                .and_then(|head| head.correlation_id),
            reason: format!("undecodable message: {error}"),
        }),
    }
}

/// A public `Error` reply of `kind`, its reason one sentence naming what
/// was wrong.
pub fn error_reply(
    correlation_id: Option<String>,
    kind: public_api::error::Kind,
    reason: String,
) -> public_api::Message {
    public_api::Message {
        code: public_api::message::Code::Error as i32,
        correlation_id,
        payload: Some(public_api::message::Payload::Error(public_api::Error {
            kind: kind as i32,
            reason,
        })),
    }
}

impl manager_cluster::Message {
    /// A message of `code` under `correlation_id`, with `payload` (a
    /// payload or `None`).
    pub fn new(
        code: manager_cluster::message::Code,
        correlation_id: Option<String>,
        payload: impl Into<Option<manager_cluster::message::Payload>>,
    ) -> Self {
        manager_cluster::Message {
            code: code as i32,
            correlation_id,
            payload: payload.into(),
        }
    }
}

impl manager_spawner::Message {
    /// A message of `code` under `correlation_id`, with `payload` (a
    /// payload or `None`).
    pub fn new(
        code: manager_spawner::message::Code,
        correlation_id: Option<String>,
        payload: impl Into<Option<manager_spawner::message::Payload>>,
    ) -> Self {
        manager_spawner::Message {
            code: code as i32,
            correlation_id,
            payload: payload.into(),
        }
    }

    /// An `Error` answer whose reason says what was refused or failed.
    pub fn error(correlation_id: Option<String>, reason: String) -> Self {
        Self::new(
            manager_spawner::message::Code::Error,
            correlation_id,
            manager_spawner::message::Payload::Error(manager_spawner::Error { reason }),
        )
    }
}

/// Appends `message` to `out` as one frame.
pub fn encode_frame<M: prost::Message>(message: &M, out: &mut Vec<u8>) {
    encode_frame_with(message, &[], out);
}

/// Appends one frame to `out`: `message` followed by `tail`, fields
/// already encoded whose numbers follow all of `message`'s (prost writes
/// fields in number order, so the body is what encoding them together
/// would give).
pub fn encode_frame_with<M: prost::Message>(message: &M, tail: &[u8], out: &mut Vec<u8>) {
    let len = message.encoded_len() + tail.len();
    out.reserve(FRAME_HEADER_LEN + len);
    // A body over 4 GiB cannot be built from the node's bounded state.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    message
        .encode(out)
        .expect("a Vec<u8> grows to hold any message");
    out.extend_from_slice(tail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api::{Message, message::Code};

    #[test]
    fn empty_body_is_malformed() {
        let error = decode_envelope::<Message>(&[]).unwrap_err();
        assert!(error.reason.contains("empty"), "{error}");
    }

    #[test]
    fn missing_code_is_malformed_but_keeps_the_correlation_id() {
        let mut body = Vec::new();
        EnvelopeHead {
            code: None,
            correlation_id: Some("c:1".into()),
        }
        .encode(&mut body)
        .unwrap();
        let error = decode_envelope::<Message>(&body).unwrap_err();
        assert_eq!(error.correlation_id.as_deref(), Some("c:1"));
    }

    #[test]
    fn a_round_trip_keeps_code_and_id() {
        let message = Message {
            code: Code::Introduce as i32,
            correlation_id: Some("x:7".into()),
            payload: None,
        };
        let mut out = Vec::new();
        encode_frame(&message, &mut out);
        assert_eq!(&out[..4], &((out.len() - 4) as u32).to_be_bytes());
        let back: Message = decode_envelope(&out[4..]).unwrap();
        assert_eq!(back, message);
        assert_eq!(back.code_name(), "Introduce");
    }
}
