//! Property test of the public request path (issue 6): thousands of random
//! and mutated byte streams go through the node's own framing, decoding and
//! dispatch ([`Loopback`]), split at random points. Nothing may panic, the
//! replies must be well-formed frames, every request that arrived whole
//! before the first damaged byte gets exactly one final reply, and a stream
//! that ends the connection ends it with `FRAME_TOO_LARGE` or `MALFORMED`.
//! The fuzz targets in `fuzz/` drive the same entry point.

mod common;

use std::collections::HashMap;
use std::fs;

use snow_fox::daemon::Loopback;
use snow_fox::wire::proto::public_api::{
    Message, NodeInfoRequest, ServiceStart, ServiceStatusRequest, ServiceStop, TraceRequest,
    error::Kind, message::Code, message::Payload,
};
use snow_fox::wire::{FrameDecoder, decode_envelope};

use common::TempDir;

const MAX_FRAME: u32 = 4096;
const STREAMS: usize = 3000;

/// xorshift64*: small, seedable and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn conf_dir(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    fs::create_dir_all(dir.0.join("services")).unwrap();
    fs::write(
        dir.0.join("node.toml"),
        format!(
            "name = \"prop\"\nmax_frame = {MAX_FRAME}\nstate_dir = \"{}\"\nlog_dir = \"{}\"\n",
            dir.0.join("state").display(),
            dir.0.join("log").display()
        ),
    )
    .unwrap();
    dir
}

/// A valid request the manager answers at once (there are no services).
fn request(rng: &mut Rng, id: &str) -> Message {
    let (code, payload) = match rng.below(10) {
        0 => (Code::Introduce, None),
        1 => (
            Code::NodeInfoRequest,
            Some(Payload::NodeInfoRequest(NodeInfoRequest {
                details: Some(rng.below(2) == 0),
            })),
        ),
        2 => (Code::ServiceStatusRequest, None),
        3 => (
            Code::ServiceStatusRequest,
            Some(Payload::ServiceStatusRequest(ServiceStatusRequest {
                service_id: Some("nope".into()),
                metrics: Some(true),
            })),
        ),
        4 => (
            Code::TraceRequest,
            Some(Payload::TraceRequest(TraceRequest {
                correlation_id: "t:0".into(),
            })),
        ),
        5 => (Code::Subscribe, None),
        6 => (
            Code::ServiceStart,
            Some(Payload::ServiceStart(ServiceStart {
                service_id: "nope".into(),
                version: String::new(),
            })),
        ),
        7 => (
            Code::ServiceStop,
            Some(Payload::ServiceStop(ServiceStop {
                service_id: "nope".into(),
            })),
        ),
        8 => (Code::Ack, None),
        _ => (Code::ServiceStart, None),
    };
    Message {
        code: code as i32,
        correlation_id: Some(id.to_owned()),
        payload,
    }
}

/// A valid stream of requests and the offset where each frame ends.
/// Ids are random, so a flipped bit cannot turn one into another.
fn valid_stream(rng: &mut Rng) -> (Vec<u8>, Vec<(String, usize)>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let id = format!("p:{:016x}", rng.next());
        snow_fox::wire::encode_frame(&request(rng, &id), &mut bytes);
        ends.push((id, bytes.len()));
    }
    (bytes, ends)
}

/// Damages `bytes`; returns the offset of the first damaged byte.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) -> usize {
    if bytes.is_empty() {
        return 0;
    }
    match rng.below(5) {
        0 => {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
            at
        }
        1 => {
            let at = rng.below(bytes.len());
            bytes.truncate(at);
            at
        }
        2 => {
            // A length prefix: anywhere, so it often lands mid-frame.
            let at = rng.below(bytes.len().saturating_sub(4).max(1));
            let len = [0, 1, 3, MAX_FRAME, MAX_FRAME + 1, u32::MAX][rng.below(6)];
            let end = (at + 4).min(bytes.len());
            bytes[at..end].copy_from_slice(&len.to_be_bytes()[..end - at]);
            at
        }
        3 => {
            let at = rng.below(bytes.len());
            let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, junk);
            at
        }
        _ => {
            let at = rng.below(bytes.len());
            let end = (at + 1 + rng.below(8)).min(bytes.len());
            bytes.drain(at..end);
            at
        }
    }
}

/// What the client saw.
struct Outcome {
    finals: HashMap<String, usize>,
    last: Option<Message>,
    refused: bool,
}

/// Feeds `bytes` in random pieces and decodes every reply.
fn run(rng: &mut Rng, loopback: &mut Loopback, bytes: &[u8]) -> Outcome {
    let mut refused = false;
    let mut at = 0;
    while at < bytes.len() && !refused {
        let piece = 1 + rng.below(bytes.len() - at).min(rng.below(64) + 1);
        refused = loopback.feed(&bytes[at..at + piece]).is_err();
        at += piece;
    }
    let output = loopback.take_output();
    let mut decoder = FrameDecoder::new(u32::MAX);
    decoder.extend(&output);
    let mut finals = HashMap::new();
    let mut last = None;
    while let Some(body) = decoder.next_frame().unwrap() {
        let reply: Message = decode_envelope(body).expect("the node's replies decode");
        if reply.code != Code::Event as i32
            && let Some(id) = reply.correlation_id.clone()
        {
            *finals.entry(id).or_default() += 1;
        }
        last = Some(reply);
    }
    assert_eq!(decoder.buffered(), 0, "a reply frame was cut short");
    Outcome {
        finals,
        last,
        refused,
    }
}

fn assert_answered_once(outcome: &Outcome, ids: &[&String], context: &str) {
    for id in ids {
        assert_eq!(outcome.finals.get(*id), Some(&1), "{id} ({context})");
    }
}

#[test]
fn valid_streams_split_anywhere_get_one_reply_per_request() {
    let dir = conf_dir("prop-valid");
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..STREAMS / 3 {
        let mut loopback = Loopback::new(&dir.0).unwrap();
        let (bytes, ends) = valid_stream(&mut rng);
        let outcome = run(&mut rng, &mut loopback, &bytes);
        assert!(!outcome.refused);
        let ids: Vec<&String> = ends.iter().map(|(id, _)| id).collect();
        assert_answered_once(&outcome, &ids, "valid stream");
        assert_eq!(outcome.finals.len(), ids.len());
        assert_eq!(loopback.in_flight(), 0);
    }
}

#[test]
fn mutated_streams_answer_every_request_before_the_damage() {
    let dir = conf_dir("prop-mutated");
    let mut rng = Rng(0x5eed_0002);
    let mut refusals = 0;
    for stream in 0..STREAMS {
        let mut loopback = Loopback::new(&dir.0).unwrap();
        let (mut bytes, ends) = valid_stream(&mut rng);
        let mut damaged = usize::MAX;
        for _ in 0..1 + rng.below(3) {
            damaged = damaged.min(mutate(&mut rng, &mut bytes));
        }
        let outcome = run(&mut rng, &mut loopback, &bytes);
        let intact: Vec<&String> = ends
            .iter()
            .filter(|(_, end)| *end <= damaged)
            .map(|(id, _)| id)
            .collect();
        let context = format!("stream {stream}, damaged at {damaged}");
        assert_answered_once(&outcome, &intact, &context);
        assert!(
            outcome.finals.values().all(|&count| count == 1),
            "{context}"
        );
        if outcome.refused {
            refusals += 1;
            let last = outcome.last.expect("a refused stream is told why");
            let Some(Payload::Error(error)) = last.payload else {
                panic!("{context}: last reply is not an Error: {last:?}");
            };
            assert!(
                error.kind == Kind::Malformed as i32 || error.kind == Kind::FrameTooLarge as i32,
                "{context}: {error:?}"
            );
        }
    }
    assert!(refusals > STREAMS / 10, "only {refusals} refusals");
}

#[test]
fn random_bytes_never_panic_and_replies_stay_well_formed() {
    let dir = conf_dir("prop-random");
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..STREAMS / 3 {
        let mut loopback = Loopback::new(&dir.0).unwrap();
        let len = rng.below(512);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Small length prefixes now and then, so bodies get decoded too.
        if len > 4 && rng.below(2) == 0 {
            let body = rng.below(len - 4) as u32;
            bytes[..4].copy_from_slice(&body.to_be_bytes());
        }
        run(&mut rng, &mut loopback, &bytes);
    }
}
