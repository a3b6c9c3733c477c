//! Encoding and decoding of the public envelope with each payload, in
//! ns/op and bytes/op, against a baseline measured in the same run: a
//! copy (memcpy) of the same frame bytes into a reused buffer, the least
//! any codec must do to move a frame.
//!
//! `cargo bench --bench wire`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use snow_fox::wire::decode_envelope;
use snow_fox::wire::encode_frame;
use snow_fox::wire::proto::public_api::node_info_response::{
    ConfigVersion, NodeInfo, NodeVersion, SubSystem, SystemStatus,
};
use snow_fox::wire::proto::public_api::service_status_response::{Instance, Service};
use snow_fox::wire::proto::public_api::trace_response::Hop;
use snow_fox::wire::proto::public_api::{
    ClientIntroduce, Error, Event, Message, NodeInfoRequest, NodeInfoResponse, ServiceRestart,
    ServiceStart, ServiceStatusRequest, ServiceStatusResponse, ServiceStop, StatusColour,
    TraceRequest, TraceResponse, error::Kind, message::Code, message::Payload,
};

use common::{Table, ratio};

/// How long each figure is measured.
const MEASURE: Duration = Duration::from_millis(60);

fn main() {
    let mut table = Table::new(&[
        "message",
        "bytes/op",
        "encode ns/op",
        "decode ns/op",
        "memcpy ns/op",
        "encode/memcpy",
        "decode/memcpy",
    ]);
    for (name, message) in messages() {
        let mut frame = Vec::new();
        encode_frame(&message, &mut frame);
        let mut out = Vec::with_capacity(frame.len());
        let encode = ns_per_op(|| {
            out.clear();
            encode_frame(black_box(&message), &mut out);
            black_box(&out);
        });
        let decode = ns_per_op(|| {
            let decoded: Message = decode_envelope(black_box(&frame[4..])).unwrap();
            black_box(decoded);
        });
        let copy = ns_per_op(|| {
            out.clear();
            out.extend_from_slice(black_box(&frame));
            black_box(&out);
        });
        table.row(vec![
            name,
            frame.len().to_string(),
            format!("{encode:.1}"),
            format!("{decode:.1}"),
            format!("{copy:.1}"),
            ratio(encode, copy),
            ratio(decode, copy),
        ]);
    }
    println!(
        "wire: frames of the public API (4-byte length + protobuf body); baseline = memcpy of the same frame into a reused Vec"
    );
    table.print();
}

/// Mean time of one call of `op`, over about [`MEASURE`].
fn ns_per_op(mut op: impl FnMut()) -> f64 {
    let mut iterations = 1u64;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            op();
        }
        let took = started.elapsed();
        if took >= MEASURE {
            return took.as_nanos() as f64 / iterations as f64;
        }
        iterations *= if took < MEASURE / 16 { 8 } else { 2 };
    }
}

fn message(code: Code, payload: Option<Payload>) -> Message {
    Message {
        code: code as i32,
        correlation_id: Some("b12345.7:123456".to_owned()),
        payload,
    }
}

fn status(colour: StatusColour, reason: &str) -> SystemStatus {
    SystemStatus {
        colour: colour as i32,
        code: Some(0),
        reason: reason.to_owned(),
    }
}

fn services(count: usize) -> ServiceStatusResponse {
    ServiceStatusResponse {
        services: (0..count)
            .map(|index| Service {
                id: format!("s{index:04}"),
                origin: None,
                status: status(StatusColour::Green, "running"),
                instances: vec![Instance {
                    index: 0,
                    state: "running".to_owned(),
                    pid: Some(40_000 + index as u32),
                    since_unix_ms: Some(1_764_000_000_000),
                    restarts: Some(0),
                    last_exit_code: None,
                    last_exit_signal: None,
                    adopted: None,
                    reason: Some(format!("started as pid {}", 40_000 + index)),
                    ..Default::default()
                }],
                description: None,
                enabled: Some(true),
                desired: Some("auto".to_owned()),
            })
            .collect(),
        ..Default::default()
    }
}

/// One representative message per payload kind (and the payload-less
/// codes), named as the table shows them.
fn messages() -> Vec<(String, Message)> {
    let node_info = NodeInfoResponse {
        node: Some(NodeInfo {
            name: "bench".to_owned(),
            version: NodeVersion {
                commit: "edea38b0c4f1".to_owned(),
                taint: Some("clean".to_owned()),
                version: Some("0.1.0".to_owned()),
            },
            config: Some(ConfigVersion {
                effective: "9f86d081884c7d65".to_owned(),
                symbolic: "prod-1".to_owned(),
            }),
        }),
        overall: Some(status(StatusColour::Green, "all services running")),
        details: Vec::new(),
    };
    let mut detailed = node_info.clone();
    detailed.details = ["daemon", "manager", "spawner", "io", "config", "web"]
        .iter()
        .map(|name| SubSystem {
            name: (*name).to_owned(),
            status: status(StatusColour::Green, "ok"),
        })
        .collect();
    let trace = TraceResponse {
        state: "done".to_owned(),
        hops: [
            ("client", "io", "public", "ServiceStart"),
            ("io", "manager", "public", "ServiceStart"),
            ("manager", "spawner", "manager_spawner", "StartProcess"),
            ("spawner", "manager", "manager_spawner", "ProcessStarted"),
            ("manager", "io", "public", "Ack"),
            ("io", "client", "public", "Ack"),
        ]
        .iter()
        .map(|(from, to, protocol, code)| Hop {
            at_unix_us: 1_764_000_000_000_000,
            from_role: (*from).to_owned(),
            to_role: (*to).to_owned(),
            protocol: (*protocol).to_owned(),
            code: (*code).to_owned(),
        })
        .collect(),
    };
    vec![
        ("Ack (no payload)".to_owned(), message(Code::Ack, None)),
        (
            "NodeInfoRequest (50)".to_owned(),
            message(
                Code::NodeInfoRequest,
                Some(Payload::NodeInfoRequest(NodeInfoRequest {
                    details: Some(false),
                })),
            ),
        ),
        (
            "NodeInfoResponse (51)".to_owned(),
            message(
                Code::NodeInfoResponse,
                Some(Payload::NodeInfoResponse(node_info)),
            ),
        ),
        (
            "NodeInfoResponse, 6 details (51)".to_owned(),
            message(
                Code::NodeInfoResponse,
                Some(Payload::NodeInfoResponse(detailed)),
            ),
        ),
        (
            "ClientIntroduce (52)".to_owned(),
            message(
                Code::Introduce,
                Some(Payload::ClientIntroduce(ClientIntroduce {
                    client_id: "c17".to_owned(),
                    node_name: "bench".to_owned(),
                    protocol_version: Some(1),
                    max_frame: Some(1 << 20),
                })),
            ),
        ),
        (
            "ServiceStart (53)".to_owned(),
            message(
                Code::ServiceStart,
                Some(Payload::ServiceStart(ServiceStart {
                    service_id: "web".to_owned(),
                    version: String::new(),
                })),
            ),
        ),
        (
            "ServiceStop (54)".to_owned(),
            message(
                Code::ServiceStop,
                Some(Payload::ServiceStop(ServiceStop {
                    service_id: "web".to_owned(),
                })),
            ),
        ),
        (
            "ServiceRestart (55)".to_owned(),
            message(
                Code::ServiceRestart,
                Some(Payload::ServiceRestart(ServiceRestart {
                    service_id: "web".to_owned(),
                })),
            ),
        ),
        (
            "ServiceStatusRequest (56)".to_owned(),
            message(
                Code::ServiceStatusRequest,
                Some(Payload::ServiceStatusRequest(ServiceStatusRequest {
                    service_id: None,
                    ..Default::default()
                })),
            ),
        ),
        (
            "ServiceStatusResponse, 1 service (57)".to_owned(),
            message(
                Code::ServiceStatusResponse,
                Some(Payload::ServiceStatusResponse(services(1))),
            ),
        ),
        (
            "ServiceStatusResponse, 100 services (57)".to_owned(),
            message(
                Code::ServiceStatusResponse,
                Some(Payload::ServiceStatusResponse(services(100))),
            ),
        ),
        (
            "TraceRequest (58)".to_owned(),
            message(
                Code::TraceRequest,
                Some(Payload::TraceRequest(TraceRequest {
                    correlation_id: "c17:4".to_owned(),
                })),
            ),
        ),
        (
            "TraceResponse, 6 hops (59)".to_owned(),
            message(Code::TraceResponse, Some(Payload::TraceResponse(trace))),
        ),
        (
            "Error (60)".to_owned(),
            message(
                Code::Error,
                Some(Payload::Error(Error {
                    kind: Kind::UnknownService as i32,
                    reason: "no service `ghost` in the loaded configuration".to_owned(),
                })),
            ),
        ),
        (
            "Event (61)".to_owned(),
            message(
                Code::Event,
                Some(Payload::Event(Event {
                    service_id: "web".to_owned(),
                    index: 0,
                    state: "running".to_owned(),
                    pid: Some(4242),
                    at_unix_ms: 1_764_000_000_000,
                    exit_code: None,
                    exit_signal: None,
                    reason: None,
                    ..Default::default()
                })),
            ),
        ),
    ]
}
