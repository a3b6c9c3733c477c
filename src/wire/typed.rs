//! Messages as types: for each protocol an enum with one variant per code,
//! each carrying its payload, built from a decoded `Message` (moving the
//! payload, never copying it) and turned back into one.
//!
//! [`typed_messages!`] builds each enum from a table: every code of the
//! protocol's `.proto` is in its table, and the generated matches have no
//! catch-all arm, so a code added to a `.proto` and not to its table does
//! not compile, nor does a variant that a role's match leaves out.

use std::fmt;

/// A message that is none of its protocol's typed messages: its code is
/// unknown, its payload is missing or another code's, or its code is one
/// its receiver never takes (a reply sent as a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage<C> {
    /// Its code, when the `.proto` knows it.
    pub code: Option<C>,
    /// One sentence: what was wrong.
    pub reason: String,
}

impl<C> fmt::Display for BadMessage<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl<C: fmt::Debug> std::error::Error for BadMessage<C> {}

/// Declares a typed message enum for the protocol `$module` of
/// `wire::proto`: `required` codes carry their payload (`Variant(Payload:
/// Type)`, the payload's `oneof` name and type), `optional` ones may leave
/// it out (it is then the type's default), `bare` ones carry none, and
/// `refused` codes are never this enum's (the reason says why, `{}` the
/// code's name).
macro_rules! typed_messages {
    (
        $(#[$meta:meta])*
        pub enum $name:ident of $module:ident {
            required { $($required:ident($required_payload:ident: $required_type:ty),)* }
            optional { $($optional:ident($optional_payload:ident: $optional_type:ty),)* }
            bare { $($bare:ident,)* }
            refused($refusal:literal) { $($refused:ident,)* }
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[doc = concat!("`", stringify!($required), "`, with its payload.")]
                $required($required_type),
            )*
            $(
                #[doc = concat!("`", stringify!($optional), "`; its payload is the default when left out.")]
                $optional($optional_type),
            )*
            $(
                #[doc = concat!("`", stringify!($bare), "`, which carries no payload.")]
                $bare,
            )*
        }

        impl $name {
            /// The message of `code` with `payload`; a code the `.proto`
            /// does not know or this enum refuses, a missing required
            /// payload or a payload of another code is a [`BadMessage`].
            // A protocol with one payload has no payload of another code.
            #[allow(unreachable_patterns)]
            pub fn from_message(
                code: i32,
                payload: Option<$crate::wire::proto::$module::message::Payload>,
            ) -> Result<$name, $crate::wire::BadMessage<$crate::wire::proto::$module::message::Code>> {
                use $crate::wire::proto::$module::message::{Code, Payload};
                let bad = |code: Code, reason: String| $crate::wire::BadMessage {
                    code: Some(code),
                    reason,
                };
                let known = Code::try_from(code).map_err(|_| $crate::wire::BadMessage {
                    code: None,
                    reason: format!("unknown code {code}"),
                })?;
                let name = known.as_str_name();
                let requires = || bad(known, format!("{name} requires its payload"));
                let wrong = || bad(known, format!("{name} does not take the payload it was sent"));
                match known {
                    $(Code::$required => match payload {
                        Some(Payload::$required_payload(payload)) => Ok($name::$required(payload)),
                        None => Err(requires()),
                        Some(_) => Err(wrong()),
                    },)*
                    $(Code::$optional => match payload {
                        Some(Payload::$optional_payload(payload)) => Ok($name::$optional(payload)),
                        None => Ok($name::$optional(Default::default())),
                        Some(_) => Err(wrong()),
                    },)*
                    $(Code::$bare => match payload {
                        None => Ok($name::$bare),
                        Some(_) => Err(wrong()),
                    },)*
                    $(Code::$refused => Err(bad(known, format!($refusal, name))),)*
                }
            }

            /// Its code.
            pub fn code(&self) -> $crate::wire::proto::$module::message::Code {
                use $crate::wire::proto::$module::message::Code;
                match self {
                    $($name::$required(_) => Code::$required,)*
                    $($name::$optional(_) => Code::$optional,)*
                    $($name::$bare => Code::$bare,)*
                }
            }

            /// It as a `Message` under `correlation_id`.
            pub fn into_message(
                self,
                correlation_id: Option<String>,
            ) -> $crate::wire::proto::$module::Message {
                let (code, payload) = self.into_parts();
                $crate::wire::proto::$module::Message {
                    code: code as i32,
                    correlation_id,
                    payload,
                }
            }

            /// Its code and payload, as the `Message` holds them.
            pub fn into_parts(
                self,
            ) -> (
                $crate::wire::proto::$module::message::Code,
                Option<$crate::wire::proto::$module::message::Payload>,
            ) {
                use $crate::wire::proto::$module::message::{Code, Payload};
                match self {
                    $($name::$required(payload) => (Code::$required, Some(Payload::$required_payload(payload))),)*
                    $($name::$optional(payload) => (Code::$optional, Some(Payload::$optional_payload(payload))),)*
                    $($name::$bare => (Code::$bare, None),)*
                }
            }
        }
    };
}
