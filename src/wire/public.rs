//! Public requests as types: [`Request`] has one variant per request code
//! of `public_api.proto`, each carrying its payload, built from a decoded
//! `Message` by [`Request::from_message`] (moving the payload, never
//! copying it) and turned back by [`Request::into_message`].
//!
//! The table in [`requests!`] is the one place a request's code and payload
//! are paired; every code of the `.proto` is in it, as a request or as a
//! reply, and its matches have no catch-all arm, so a code added to the
//! `.proto` and not to the table does not compile, nor does a request in
//! the table that the manager (or io's bounds check) does not handle.

use std::fmt;

use super::proto::public_api::{
    ClusterApply, ClusterService, LogsRequest, Message, NodeInfoRequest, ServiceDefinitionRequest,
    ServiceEnable, ServiceRestart, ServiceSignal, ServiceStart, ServiceStatusRequest, ServiceStop,
    TraceRequest, message::Code, message::Payload,
};

/// Why a message is no request the node takes: answered with
/// `Error{BAD_REQUEST}` and this reason, the connection kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// Its code, when it is one the `.proto` knows.
    pub code: Option<Code>,
    /// One sentence: what was wrong.
    pub reason: String,
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for BadRequest {}

impl BadRequest {
    fn new(code: Code, reason: String) -> BadRequest {
        BadRequest {
            code: Some(code),
            reason,
        }
    }

    fn requires_payload(code: Code) -> BadRequest {
        BadRequest::new(code, format!("{} requires its payload", code.as_str_name()))
    }

    fn wrong_payload(code: Code) -> BadRequest {
        BadRequest::new(
            code,
            format!(
                "{} does not take the payload it was sent",
                code.as_str_name()
            ),
        )
    }
}

/// Declares [`Request`] from a table of the public codes:
/// `required` requests carry their payload, `optional` ones may leave it
/// out (it is then its default), `bare` ones carry none, and `replies`
/// are the codes only the node sends.
macro_rules! requests {
    (
        required { $($required:ident($required_payload:ident),)* }
        optional { $($optional:ident($optional_payload:ident),)* }
        bare { $($bare:ident,)* }
        replies { $($reply:ident,)* }
    ) => {
        /// A client's request: one variant per request code, named as the
        /// code, carrying the payload the code takes.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request {
            $(
                #[doc = concat!("`", stringify!($required), "` with its `", stringify!($required_payload), "`.")]
                $required($required_payload),
            )*
            $(
                #[doc = concat!("`", stringify!($optional), "`; its `", stringify!($optional_payload), "` is the default when left out.")]
                $optional($optional_payload),
            )*
            $(
                #[doc = concat!("`", stringify!($bare), "`, which carries no payload.")]
                $bare,
            )*
        }

        impl Request {
            /// The request a message of `code` with `payload` is: a code
            /// the `.proto` does not know, a reply's code, a missing
            /// required payload or a payload of another code are refused.
            pub fn from_message(code: i32, payload: Option<Payload>) -> Result<Request, BadRequest> {
                let code = Code::try_from(code).map_err(|_| BadRequest {
                    code: None,
                    reason: format!("unknown code {code}"),
                })?;
                match code {
                    $(Code::$required => match payload {
                        Some(Payload::$required_payload(payload)) => Ok(Request::$required(payload)),
                        None => Err(BadRequest::requires_payload(code)),
                        Some(_) => Err(BadRequest::wrong_payload(code)),
                    },)*
                    $(Code::$optional => match payload {
                        Some(Payload::$optional_payload(payload)) => Ok(Request::$optional(payload)),
                        None => Ok(Request::$optional($optional_payload::default())),
                        Some(_) => Err(BadRequest::wrong_payload(code)),
                    },)*
                    $(Code::$bare => match payload {
                        None => Ok(Request::$bare),
                        Some(_) => Err(BadRequest::wrong_payload(code)),
                    },)*
                    $(Code::$reply)|* => Err(BadRequest::new(
                        code,
                        format!("{} is a reply, not a request", code.as_str_name()),
                    )),
                }
            }

            /// The request's code.
            pub fn code(&self) -> Code {
                match self {
                    $(Request::$required(_) => Code::$required,)*
                    $(Request::$optional(_) => Code::$optional,)*
                    $(Request::$bare => Code::$bare,)*
                }
            }

            /// The request as a message under `correlation_id`.
            pub fn into_message(self, correlation_id: Option<String>) -> Message {
                let (code, payload) = match self {
                    $(Request::$required(payload) => (Code::$required, Some(Payload::$required_payload(payload))),)*
                    $(Request::$optional(payload) => (Code::$optional, Some(Payload::$optional_payload(payload))),)*
                    $(Request::$bare => (Code::$bare, None),)*
                };
                Message {
                    code: code as i32,
                    correlation_id,
                    payload,
                }
            }
        }
    };
}

requests! {
    required {
        ServiceStart(ServiceStart),
        ServiceStop(ServiceStop),
        ServiceRestart(ServiceRestart),
        TraceRequest(TraceRequest),
        ServiceSignal(ServiceSignal),
        ServiceEnable(ServiceEnable),
        ServiceDefinitionRequest(ServiceDefinitionRequest),
        ClusterApply(ClusterApply),
        ClusterRemove(ClusterService),
        ClusterStart(ClusterService),
        ClusterStop(ClusterService),
        LogsRequest(LogsRequest),
    }
    optional {
        NodeInfoRequest(NodeInfoRequest),
        ServiceStatusRequest(ServiceStatusRequest),
    }
    bare {
        Introduce,
        Shutdown,
        ConfigReload,
        Subscribe,
        ClusterStatusRequest,
        MetricsRequest,
    }
    replies {
        Ack,
        NodeInfoResponse,
        ServiceStatusResponse,
        TraceResponse,
        Error,
        Event,
        ServiceDefinitionResponse,
        ClusterStatusResponse,
        LogLines,
        MetricsResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::public_api;

    #[test]
    fn a_request_goes_to_its_variant_and_back_unchanged() {
        let message = Message {
            code: Code::ServiceStop as i32,
            correlation_id: Some("c:1".to_owned()),
            payload: Some(Payload::ServiceStop(ServiceStop {
                service_id: "web".to_owned(),
            })),
        };
        let request = Request::from_message(message.code, message.payload.clone()).unwrap();
        assert_eq!(
            request,
            Request::ServiceStop(ServiceStop {
                service_id: "web".to_owned()
            })
        );
        assert_eq!(request.code(), Code::ServiceStop);
        assert_eq!(request.into_message(Some("c:1".to_owned())), message);
    }

    #[test]
    fn an_optional_payload_left_out_is_its_default() {
        assert_eq!(
            Request::from_message(Code::NodeInfoRequest as i32, None),
            Ok(Request::NodeInfoRequest(NodeInfoRequest::default()))
        );
    }

    #[test]
    fn what_is_no_request_is_refused_with_a_reason() {
        let refused = |code: i32, payload: Option<Payload>| {
            Request::from_message(code, payload).unwrap_err().reason
        };
        assert_eq!(refused(999, None), "unknown code 999");
        assert_eq!(
            refused(Code::ServiceStart as i32, None),
            "ServiceStart requires its payload"
        );
        let stop = Payload::ServiceStop(ServiceStop::default());
        assert_eq!(
            refused(Code::ServiceStart as i32, Some(stop.clone())),
            "ServiceStart does not take the payload it was sent"
        );
        assert_eq!(
            refused(Code::Subscribe as i32, Some(stop)),
            "Subscribe does not take the payload it was sent"
        );
        assert_eq!(
            refused(Code::Ack as i32, None),
            "Ack is a reply, not a request"
        );
        let error = Payload::Error(public_api::Error::default());
        assert_eq!(
            refused(Code::Error as i32, Some(error)),
            "Error is a reply, not a request"
        );
    }
}
