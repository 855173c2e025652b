//! The shared client scenarios (`clients/scenarios/*.json`) run against a live contextd, one
//! named test per file.
//!
//! Requests and responses are handled generically: the crate's file descriptor set turns a
//! request's proto3 JSON into a `DynamicMessage` for the method named by the step, which is
//! sent with a byte-level codec; responses are rendered back to proto3 JSON with default
//! fields emitted and matched as the scenario format describes. libtest has no dynamic tests,
//! so this file runs under `libtest-mimic` (`harness = false`): each scenario is its own test,
//! filterable by name, with libtest's usual summary line.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{TestServer, WAIT};
use http::uri::PathAndQuery;
use libtest_mimic::{Arguments, Failed, Trial};
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};

fn main() {
    let args = Arguments::from_args();
    let runtime = std::sync::Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut trials = Vec::new();
    if files.is_empty() {
        let dir = dir.display().to_string();
        trials.push(Trial::test("scenarios_present", move || {
            Err(format!("no scenario files in {dir}").into())
        }));
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read scenario");
        let scenario: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let name = file.display().to_string();
                trials.push(Trial::test(name.clone(), move || {
                    Err(format!("{name} is not JSON: {e}").into())
                }));
                continue;
            }
        };
        let name = scenario["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| file.display().to_string());
        let runtime = runtime.clone();
        trials.push(Trial::test(name.clone(), move || {
            runtime.block_on(async move {
                let server = TestServer::start().await;
                let channel = common::connect(server.addr).await;
                run_scenario(&name, &scenario, channel)
                    .await
                    .map_err(Failed::from)
            })
        }));
    }
    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------------------------
// A codec for messages known only by descriptor
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct DynamicCodec(MessageDescriptor);

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.0.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decode: {e}")))
    }
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(contextd::api::FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// JSON rendering with default-valued fields emitted, enums by name, 64-bit ints as strings.
fn render(message: &DynamicMessage) -> Value {
    let options = SerializeOptions::new().skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("render message")
}

/// The name (as in the .proto) of the oneof `event` field that is set.
fn event_name(message: &DynamicMessage) -> String {
    message
        .descriptor()
        .oneofs()
        .find(|o| o.name() == "event")
        .and_then(|o| o.fields().find(|f| message.has_field(f)))
        .map(|f| f.name().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Scenario execution
// ---------------------------------------------------------------------------------------------

type Vars = HashMap<String, String>;

async fn run_scenario(name: &str, scenario: &Value, channel: Channel) -> Result<(), String> {
    let pool = pool();
    let mut vars = Vars::new();
    vars.insert(
        "run".into(),
        uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
    );
    let steps = scenario["steps"]
        .as_array()
        .ok_or_else(|| format!("{name}: no steps array"))?;
    for (index, step) in steps.iter().enumerate() {
        let fail = |what: String| format!("scenario {name}, step {index}: {what}");
        let run = async {
            let rpc = step["rpc"].as_str().ok_or("step has no rpc")?.to_string();
            if step.get("frames").is_some() {
                converse_step(&pool, &channel, &rpc, step, &mut vars).await
            } else {
                let step = substitute(step, &vars)?;
                call_step(&pool, &channel, &rpc, &step, &mut vars).await
            }
        };
        match tokio::time::timeout(WAIT, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail(e)),
            Err(_) => return Err(fail(format!("timed out after {WAIT:?}"))),
        }
    }
    Ok(())
}

/// `${name}` replaced in every string value (not keys).
fn substitute(value: &Value, vars: &Vars) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let end = rest[start..]
                    .find('}')
                    .ok_or_else(|| format!("unterminated variable in {s:?}"))?;
                let var = &rest[start + 2..start + end];
                out.push_str(
                    vars.get(var)
                        .ok_or_else(|| format!("unknown variable ${{{var}}}"))?,
                );
                rest = &rest[start + end + 1..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute(v, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

struct Method {
    path: PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
}

fn method(pool: &DescriptorPool, rpc: &str) -> Result<Method, String> {
    let (service, name) = rpc
        .split_once('/')
        .ok_or_else(|| format!("rpc {rpc:?} is not package.Service/Method"))?;
    let service = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("unknown service {service}"))?;
    let m = service
        .methods()
        .find(|m| m.name() == name)
        .ok_or_else(|| format!("unknown method {rpc}"))?;
    Ok(Method {
        path: PathAndQuery::from_str(&format!("/{rpc}")).map_err(|e| e.to_string())?,
        input: m.input(),
        output: m.output(),
    })
}

fn parse(desc: &MessageDescriptor, json: &Value) -> Result<DynamicMessage, String> {
    let json = if json.is_null() {
        Value::Object(Default::default())
    } else {
        json.clone()
    };
    DynamicMessage::deserialize(desc.clone(), json)
        .map_err(|e| format!("request is not a valid {}: {e}", desc.full_name()))
}

fn code_of(name: &str) -> Result<Code, String> {
    (0..17)
        .map(Code::from_i32)
        .find(|c| contextd::client::code_name(*c) == name)
        .ok_or_else(|| format!("unknown status code name {name:?}"))
}

fn check_status(
    expect: &Value,
    code: Code,
    message: &str,
    code_key: &str,
    message_key: &str,
) -> Result<(), String> {
    let wanted = code_of(expect[code_key].as_str().unwrap_or("OK"))?;
    if code != wanted {
        return Err(format!(
            "expected status {}, got {} ({message})",
            contextd::client::code_name(wanted),
            contextd::client::code_name(code)
        ));
    }
    if let Some(part) = expect[message_key].as_str()
        && !message.contains(part)
    {
        return Err(format!(
            "status message {message:?} does not contain {part:?}"
        ));
    }
    Ok(())
}

async fn call_step(
    pool: &DescriptorPool,
    channel: &Channel,
    rpc: &str,
    step: &Value,
    vars: &mut Vars,
) -> Result<(), String> {
    let m = method(pool, rpc)?;
    let request = parse(&m.input, &step["request"])?;
    let expect = &step["expect"];
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| e.to_string())?;
    let codec = DynamicCodec(m.output.clone());
    let is_streaming = pool
        .get_service_by_name(rpc.split('/').next().unwrap_or_default())
        .and_then(|s| {
            s.methods()
                .find(|x| rpc.ends_with(&format!("/{}", x.name())))
        })
        .is_some_and(|x| x.is_server_streaming());
    if !is_streaming {
        let result = grpc.unary(Request::new(request), m.path, codec).await;
        let (code, message, response) = match result {
            Ok(r) => (Code::Ok, String::new(), Some(render(r.get_ref()))),
            Err(s) => (s.code(), s.message().to_string(), None),
        };
        check_status(expect, code, &message, "code", "messageContains")?;
        if let Some(response) = &response {
            if let Some(wanted) = expect.get("response") {
                subset(wanted, response, "response")?;
            }
            save(step, response, vars)?;
        }
        return Ok(());
    }
    let mut events = Vec::new();
    let mut status = None;
    match grpc
        .server_streaming(Request::new(request), m.path, codec)
        .await
    {
        Err(s) => status = Some(s),
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => break,
                    Err(s) => {
                        status = Some(s);
                        break;
                    }
                }
            }
        }
    }
    let (code, message) = status
        .map(|s| (s.code(), s.message().to_string()))
        .unwrap_or((Code::Ok, String::new()));
    check_status(expect, code, &message, "code", "messageContains")?;
    check_events(expect, &events)?;
    if let Some(last) = events.last() {
        save(step, &render(last), vars)?;
    }
    Ok(())
}

/// `events`, `text` and `last` of an expectation against the messages read.
fn check_events(expect: &Value, events: &[DynamicMessage]) -> Result<(), String> {
    if let Some(wanted) = expect.get("events") {
        let mut names: Vec<String> = Vec::new();
        for event in events {
            let name = event_name(event);
            if !(name == "delta" && names.last().is_some_and(|l| l == "delta")) {
                names.push(name);
            }
        }
        let actual = Value::from(names);
        if &actual != wanted {
            return Err(format!("events: expected {wanted}, got {actual}"));
        }
    }
    if let Some(wanted) = expect.get("text") {
        let text: String = events
            .iter()
            .filter(|e| event_name(e) == "delta")
            .filter_map(|e| render(e)["delta"]["text"].as_str().map(str::to_string))
            .collect();
        if wanted.as_str() != Some(text.as_str()) {
            return Err(format!("text: expected {wanted}, got {text:?}"));
        }
    }
    if let Some(wanted) = expect.get("last") {
        let last = events
            .last()
            .map(render)
            .ok_or_else(|| format!("last: expected {wanted}, but no event arrived"))?;
        subset(wanted, &last, "last")?;
    }
    Ok(())
}

async fn converse_step(
    pool: &DescriptorPool,
    channel: &Channel,
    rpc: &str,
    step: &Value,
    vars: &mut Vars,
) -> Result<(), String> {
    let m = method(pool, rpc)?;
    let frames = step["frames"].as_array().ok_or("frames is not an array")?;
    let (tx, rx) = mpsc::channel::<DynamicMessage>(64);
    let mut tx = Some(tx);
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| e.to_string())?;
    let codec = DynamicCodec(m.output.clone());
    let mut stream: Streaming<DynamicMessage> = grpc
        .streaming(Request::new(ReceiverStream::new(rx)), m.path, codec)
        .await
        .map_err(|s| format!("Converse failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    for (index, frame) in frames.iter().enumerate() {
        let frame = substitute(frame, vars).map_err(|e| format!("frame {index}: {e}"))?;
        let at = |e: String| format!("frame {index}: {e}");
        if let Some(send) = frame.get("send") {
            let message = parse(&m.input, send).map_err(at)?;
            tx.as_ref()
                .ok_or_else(|| at("send after close".into()))?
                .send(message)
                .await
                .map_err(|_| at("the request stream is closed".into()))?;
        } else if let Some(until) = frame.get("until").and_then(Value::as_str) {
            let mut events = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        let done = event_name(&event) == until;
                        events.push(event);
                        if done {
                            break;
                        }
                    }
                    Ok(None) => return Err(at(format!("stream ended before {until}"))),
                    Err(s) => {
                        return Err(at(format!(
                            "stream failed before {until}: {:?} {}",
                            s.code(),
                            s.message()
                        )));
                    }
                }
            }
            check_events(&frame, &events).map_err(at)?;
            if let Some(last) = events.last() {
                save(&frame, &render(last), vars).map_err(at)?;
            }
        } else if frame.get("close").is_some() {
            tx = None;
            let (code, message) = match stream.message().await {
                Ok(Some(event)) => {
                    return Err(at(format!(
                        "no event expected after close, got {}",
                        render(&event)
                    )));
                }
                Ok(None) => (Code::Ok, String::new()),
                Err(s) => (s.code(), s.message().to_string()),
            };
            check_status(&frame, code, &message, "code", "messageContains").map_err(at)?;
        } else {
            return Err(at(format!("unknown frame {frame}")));
        }
    }
    drop(tx);
    Ok(())
}

/// Stores `save` variables taken from `source`.
fn save(step: &Value, source: &Value, vars: &mut Vars) -> Result<(), String> {
    let Some(map) = step.get("save").and_then(Value::as_object) else {
        return Ok(());
    };
    for (var, path) in map {
        let path = path.as_str().ok_or("save paths are strings")?;
        let mut at = source;
        for segment in path.split('.') {
            at = match at {
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                Value::Object(fields) => fields.get(segment),
                _ => None,
            }
            .ok_or_else(|| format!("save {var}: no {path} in {source}"))?;
        }
        let value = match at {
            Value::String(s) => s.clone(),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| (f as i64).to_string())
                .unwrap_or_else(|| n.to_string()),
            other => {
                return Err(format!(
                    "save {var}: {path} is {other}, not a string or number"
                ));
            }
        };
        vars.insert(var.clone(), value);
    }
    Ok(())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// expected ⊆ actual, as the scenario format defines it.
fn subset(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    let mismatch = || format!("at {path}: expected {expected}, got {actual}");
    match expected {
        Value::String(s) if s == "$nonempty" => {
            let empty = match actual {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if empty { Err(mismatch()) } else { Ok(()) }
        }
        Value::Object(map) if map.len() == 1 && map.contains_key("$exact") => {
            if &map["$exact"] == actual || numbers_equal(&map["$exact"], actual) {
                Ok(())
            } else {
                Err(mismatch())
            }
        }
        Value::Object(map) => {
            let Value::Object(actual_map) = actual else {
                return Err(mismatch());
            };
            for (key, wanted) in map {
                let got = actual_map
                    .get(key)
                    .ok_or_else(|| format!("at {path}: missing key {key:?} in {actual}"))?;
                subset(wanted, got, &format!("{path}.{key}"))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            let Value::Array(actual_items) = actual else {
                return Err(mismatch());
            };
            if items.len() != actual_items.len() {
                return Err(mismatch());
            }
            for (i, (wanted, got)) in items.iter().zip(actual_items).enumerate() {
                subset(wanted, got, &format!("{path}.{i}"))?;
            }
            Ok(())
        }
        Value::Number(_) => match (number(expected), number(actual)) {
            (Some(a), Some(b)) if a == b => Ok(()),
            _ => Err(mismatch()),
        },
        _ if expected == actual => Ok(()),
        _ => Err(mismatch()),
    }
}

/// Deep equality where numbers compare by value (`1` equals `1.0` and `"1"`).
fn numbers_equal(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(_), _) => number(expected).is_some() && number(expected) == number(actual),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| numbers_equal(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| numbers_equal(v, w)))
        }
        _ => expected == actual,
    }
}
