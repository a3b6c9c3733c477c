//! A client built only from SnowFox's published proto2 schemas (payloads
//! as extensions, a closed `Code` enum of five codes, `SystemStatus.code`
//! required), compiled here at test time, talks to a real node unchanged.

mod common;

use std::io::{Read, Write};

use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

use common::Setup;

const PACKAGE: &str = "sf.core.protocol.public_api";

fn snowfox_schema() -> DescriptorPool {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snowfox");
    let files = protox::compile(["public_api.proto"], [dir]).unwrap();
    DescriptorPool::from_file_descriptor_set(files).unwrap()
}

fn exchange(stream: &mut std::os::unix::net::UnixStream, request: &DynamicMessage) -> Vec<u8> {
    let body = prost::Message::encode_to_vec(request);
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut reply).unwrap();
    reply
}

fn envelope(pool: &DescriptorPool, code: i32, id: &str) -> DynamicMessage {
    let mut message = DynamicMessage::new(
        pool.get_message_by_name(&format!("{PACKAGE}.Message"))
            .unwrap(),
    );
    message.set_field_by_name("code", Value::EnumNumber(code));
    message.set_field_by_name("correlation_id", Value::String(id.to_owned()));
    message
}

fn extension(pool: &DescriptorPool, message: &DynamicMessage, name: &str) -> DynamicMessage {
    let field = pool
        .get_extension_by_name(&format!("{PACKAGE}.{name}"))
        .unwrap();
    assert!(
        message.has_extension(&field),
        "reply lacks extension {name}: {message:?}"
    );
    match message.get_extension(&field).as_ref() {
        Value::Message(inner) => inner.clone(),
        other => panic!("{name} is not a message: {other:?}"),
    }
}

fn string(message: &DynamicMessage, path: &[&str]) -> String {
    let (last, parents) = path.split_last().unwrap();
    let mut current = message.clone();
    for name in parents {
        current = current
            .get_field_by_name(name)
            .unwrap()
            .as_message()
            .unwrap()
            .clone();
    }
    current
        .get_field_by_name(last)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn node_info_and_introduce_round_trip_through_snowfox_extensions() {
    let node = Setup::new("snowfox-ext")
        .service(
            "legacy",
            "command = [\"/bin/sleep\", \"300\"]\nautostart = false\n",
        )
        .start();
    let pool = snowfox_schema();
    let mut stream = node.raw();

    let mut request = envelope(&pool, 2, "legacy:1");
    let payload = pool
        .get_message_by_name(&format!("{PACKAGE}.NodeInfoRequest"))
        .unwrap();
    let mut details = DynamicMessage::new(payload);
    details.set_field_by_name("details", Value::Bool(true));
    request.set_extension(
        &pool
            .get_extension_by_name(&format!("{PACKAGE}.node_info_request"))
            .unwrap(),
        Value::Message(details),
    );
    let reply = exchange(&mut stream, &request);
    let reply = DynamicMessage::decode(request.descriptor(), &reply[..]).unwrap();
    assert_eq!(
        reply.get_field_by_name("code").unwrap().as_enum_number(),
        Some(3)
    );
    assert_eq!(string(&reply, &["correlation_id"]), "legacy:1");
    let info = extension(&pool, &reply, "node_info_response");
    assert_eq!(string(&info, &["node", "name"]), node.setup.name);
    assert_eq!(string(&info, &["node", "config", "symbolic"]), "test-1");
    let overall = info
        .get_field_by_name("overall")
        .unwrap()
        .as_message()
        .unwrap()
        .clone();
    assert_eq!(
        overall
            .get_field_by_name("colour")
            .unwrap()
            .as_enum_number(),
        Some(0),
        "Green"
    );
    assert!(
        overall.has_field_by_name("code"),
        "SystemStatus.code is required in this layout"
    );
    let details = info.get_field_by_name("details").unwrap();
    let names: Vec<String> = details
        .as_list()
        .unwrap()
        .iter()
        .map(|sub| string(sub.as_message().unwrap(), &["name"]))
        .collect();
    assert!(
        names.starts_with(&[
            "daemon".into(),
            "manager".into(),
            "spawner".into(),
            "io".into(),
            "config".into()
        ]),
        "{names:?}"
    );

    let reply = exchange(&mut stream, &envelope(&pool, 4, "legacy:2"));
    let reply = DynamicMessage::decode(request.descriptor(), &reply[..]).unwrap();
    assert_eq!(
        reply.get_field_by_name("code").unwrap().as_enum_number(),
        Some(4)
    );
    let intro = extension(&pool, &reply, "client_introduce");
    assert_eq!(string(&intro, &["node_name"]), node.setup.name);
    assert!(!string(&intro, &["client_id"]).is_empty());

    let mut start = envelope(&pool, 5, "legacy:3");
    let payload = pool
        .get_message_by_name(&format!("{PACKAGE}.ServiceStart"))
        .unwrap();
    let mut service = DynamicMessage::new(payload);
    service.set_field_by_name("service_id", Value::String("legacy".into()));
    service.set_field_by_name("version", Value::String(String::new()));
    start.set_extension(
        &pool
            .get_extension_by_name(&format!("{PACKAGE}.service_start"))
            .unwrap(),
        Value::Message(service),
    );
    let reply = exchange(&mut stream, &start);
    // Ack, whose status payload (field 57) this old schema does not know
    // and keeps as an unknown field.
    let reply = DynamicMessage::decode(request.descriptor(), &reply[..]).unwrap();
    assert_eq!(
        reply.get_field_by_name("code").unwrap().as_enum_number(),
        Some(1)
    );
    assert_eq!(string(&reply, &["correlation_id"]), "legacy:3");
    let running = node.client().status(Some("legacy")).unwrap();
    assert_eq!(running.services[0].instances[0].state, "running");
}
