//! The node's public request path — io's per-connection framing and
//! bookkeeping feeding the manager's dispatch, through `Loopback` — fed
//! arbitrary byte streams in arbitrary pieces. Checks that nothing panics
//! and that every reply is a whole, decodable frame.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use snow_fox::daemon::Loopback;
use snow_fox::wire::proto::public_api::Message;
use snow_fox::wire::{FrameDecoder, decode_envelope};

/// A configuration with one service, so start, stop and status requests
/// reach real service state; nothing is ever spawned.
fn conf_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sf-fuzz-{}", std::process::id()));
        fs::create_dir_all(dir.join("services")).unwrap();
        fs::write(
            dir.join("node.toml"),
            format!(
                "name = \"fuzz\"\ntrace_capacity = 64\nmax_frame = 4096\nmax_inflight_per_connection = 16\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\n",
                dir.display()
            ),
        )
        .unwrap();
        fs::write(dir.join("services/web.toml"), "command = [\"/bin/true\"]\n").unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let [piece, stream @ ..] = data else {
        return;
    };
    let mut loopback = Loopback::new(conf_dir()).unwrap();
    for chunk in stream.chunks(usize::from(*piece).max(1)) {
        if loopback.feed(chunk).is_err() {
            break;
        }
    }
    let mut decoder = FrameDecoder::new(u32::MAX);
    decoder.extend(&loopback.take_output());
    while let Some(body) = decoder.next_frame().unwrap() {
        decode_envelope::<Message>(body).unwrap();
    }
    assert_eq!(decoder.buffered(), 0);
});
