//! The wire: the generated protocol types, the frame codec and the typed
//! edges between roles. Pure: no sockets, no threads, nothing that blocks.
//!
//! Every link speaks one protocol of `../shared/protocol.md`, whose envelope
//! is a `Message` with a `code`, a `correlation_id` and a payload `oneof`.

mod envelope;
mod frame;
#[macro_use]
mod typed;
mod internal;
pub mod link;
mod public;

pub use envelope::{
    DecodeError, Envelope, Protocol, decode_envelope, encode_frame, encode_frame_with, error_reply,
};
pub use frame::{DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, FrameDecoder, FrameError};
pub use internal::{DaemonSpawner, LogKeeper, ManagerCluster, ManagerSpawner};
pub use public::{BadRequest, Request};
pub use typed::BadMessage;

/// The generated protobuf types, one module per protocol package.
pub mod proto {
    /// `sf.core.protocol.public_api`: what clients send and receive.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod public_api {
        include!(concat!(env!("OUT_DIR"), "/sf.core.protocol.public_api.rs"));
    }
    /// `sf.core.protocol.daemon_manager`: shutdown and reload orders.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod daemon_manager {
        include!(concat!(
            env!("OUT_DIR"),
            "/sf.core.protocol.daemon_manager.rs"
        ));
    }
    /// `sf.core.protocol.daemon_spawner`: shutdown orders.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod daemon_spawner {
        include!(concat!(
            env!("OUT_DIR"),
            "/sf.core.protocol.daemon_spawner.rs"
        ));
    }
    /// `sf.core.protocol.manager_cluster`: cluster assignments, instance
    /// states and cluster requests.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod manager_cluster {
        include!(concat!(
            env!("OUT_DIR"),
            "/sf.core.protocol.manager_cluster.rs"
        ));
    }
    /// `sf.core.protocol.manager_spawner`: process work and its reports.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod manager_spawner {
        include!(concat!(
            env!("OUT_DIR"),
            "/sf.core.protocol.manager_spawner.rs"
        ));
    }
    /// `sf.core.protocol.log_keeper`: streams handed to the log keeper.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod log_keeper {
        include!(concat!(env!("OUT_DIR"), "/sf.core.protocol.log_keeper.rs"));
    }
}

/// The longest correlation id a request may carry, in bytes (SnowFox's
/// are 36-byte UUIDs); a longer one is refused where it enters.
pub const MAX_CORRELATION_ID: usize = 128;

/// The public API's protocol version, told to clients in `ClientIntroduce`;
/// bumped when codes are added.
pub const PROTOCOL_VERSION: u32 = 1;
