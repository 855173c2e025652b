//! proto3 canonical JSON for the JSON doors, from the descriptors (prost-reflect).
//!
//! prost-reflect is used rather than pbjson because the doors are generic: one decoder and one
//! encoder serve every RPC through its `MessageDescriptor`, where pbjson would generate serde
//! code per message and still need the descriptors for path and query mapping.
//!
//! Emitted: lowerCamel names, fields with default values (as grpc-gateway's
//! `EmitUnpopulated`), enums as names, 64-bit integers as strings, `Struct`/`Value`/`Timestamp`
//! in their well-known forms. Accepted: lowerCamel and original field names (in bodies and in
//! query parameters). Unknown fields and malformed JSON are refused with a message naming the
//! field, or the line and column.

use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use tonic::Code;

use super::error::ApiError;
use super::rules::{BodyRule, Matched};

/// Encodes `message` as proto3 JSON.
pub(crate) fn to_json(message: &DynamicMessage) -> String {
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false);
    let mut out = serde_json::Serializer::new(Vec::with_capacity(256));
    // Serializing a well-formed DynamicMessage into a Vec cannot fail.
    let _ = message.serialize_with_options(&mut out, &options);
    String::from_utf8(out.into_inner()).unwrap_or_default()
}

/// Decodes protobuf bytes of `descriptor` (a response from the gRPC services).
pub(crate) fn from_protobuf(
    descriptor: MessageDescriptor,
    bytes: &[u8],
) -> Result<DynamicMessage, ApiError> {
    DynamicMessage::decode(descriptor, bytes).map_err(|e| {
        ApiError::new(
            Code::Internal,
            format!("the reply could not be read as JSON: {e}"),
        )
    })
}

/// Encodes a request message as protobuf bytes for the gRPC services.
pub(crate) fn to_protobuf(message: &DynamicMessage) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes a JSON document as a `descriptor` message. `what` names the document in errors
/// ("the request body", "the line").
pub(crate) fn from_json(
    descriptor: MessageDescriptor,
    bytes: &[u8],
    what: &str,
) -> Result<DynamicMessage, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(descriptor, &mut deserializer, &options)
        .and_then(|message| deserializer.end().map(|()| message));
    message.map_err(|e| json_error(&e, what))
}

/// Explains a JSON decoding failure: malformed JSON names the line and column; an unknown
/// field is named with a `google.rpc.BadRequest` detail.
fn json_error(error: &serde_json::Error, what: &str) -> ApiError {
    use serde_json::error::Category;
    let (line, column) = (error.line(), error.column());
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            Code::InvalidArgument,
            format!("{what} is not valid JSON at line {line} column {column}: {error}"),
        ),
        Category::Data => {
            let text = error.to_string();
            if let Some(field) = text
                .strip_prefix("unrecognized field name '")
                .and_then(|rest| rest.split_once('\''))
                .map(|(field, _)| field)
            {
                return ApiError::bad_field(
                    field,
                    format!(
                        "{what} has an unknown field '{field}' (line {line} column {column}); \
                         field names are those of the contract, in lowerCamel or original form"
                    ),
                );
            }
            ApiError::new(Code::InvalidArgument, format!("{what} is invalid: {text}"))
        }
    }
}

/// Builds the request message of a matched route from its body, query string and path
/// variables. A path variable wins over the body; a body that names another value for it is
/// refused.
pub(crate) fn request_message(
    matched: &Matched<'_>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, ApiError> {
    let input = matched.route.rpc.input();
    let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &matched.route.body {
        BodyRule::Whole if !body_is_empty => from_json(input, body, "the request body")?,
        BodyRule::Field(name) if !body_is_empty => {
            let field = input.get_field_by_name(name).ok_or_else(|| {
                ApiError::new(
                    Code::Internal,
                    format!("the HTTP rule names no field {name}"),
                )
            })?;
            let mut message = DynamicMessage::new(input);
            let value = match field.kind() {
                Kind::Message(descriptor) => {
                    Value::Message(from_json(descriptor, body, "the request body")?)
                }
                _ => {
                    return Err(ApiError::new(
                        Code::Internal,
                        format!("the HTTP rule's body field {name} is not a message"),
                    ));
                }
            };
            message.set_field(&field, value);
            message
        }
        _ => DynamicMessage::new(input),
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if matched.route.body == BodyRule::Whole {
            return Err(ApiError::new(
                Code::InvalidArgument,
                "this route takes its fields from the JSON body, not from the query string",
            ));
        }
        for (key, value) in parse_query(query)? {
            set_query_field(&mut message, &key, &value)?;
        }
    }
    for (name, value) in &matched.variables {
        let field = message
            .descriptor()
            .get_field_by_name(name)
            .ok_or_else(|| ApiError::new(Code::Internal, format!("no field {name}")))?;
        if message.has_field(&field) {
            let given = message.get_field(&field);
            if given.as_str() != Some(value.as_str()) {
                return Err(ApiError::bad_field(
                    field.json_name(),
                    format!(
                        "the body names {} '{}' but the path names '{value}'; leave it out of \
                         the body or make them equal",
                        field.json_name(),
                        given.as_str().unwrap_or_default()
                    ),
                ));
            }
        }
        message.set_field(&field, Value::String(value.clone()));
    }
    Ok(message)
}

/// The `Idempotency-Key` header.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Sets the request's `idempotency_key` from the `Idempotency-Key` header, if there is one.
/// Only turn requests have the field; a body that names another key is refused.
pub(crate) fn apply_idempotency_header(
    message: &mut DynamicMessage,
    headers: &http::HeaderMap,
) -> Result<(), ApiError> {
    let Some(header) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(());
    };
    let key = header.to_str().map_err(|_| {
        ApiError::new(
            Code::InvalidArgument,
            "the Idempotency-Key header must be printable ASCII",
        )
    })?;
    let Some(field) = message.descriptor().get_field_by_name("idempotency_key") else {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "Idempotency-Key applies to turns (:interact, :stream, /api/mcp/interact); leave it out of this request",
        ));
    };
    if message.has_field(&field) && message.get_field(&field).as_str() != Some(key) {
        return Err(ApiError::bad_field(
            field.json_name(),
            "the body's idempotencyKey differs from the Idempotency-Key header; send one of them",
        ));
    }
    message.set_field(&field, Value::String(key.to_string()));
    Ok(())
}

/// Splits `a=1&b=x%20y` into decoded pairs (`+` is a space, as in HTML forms).
fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |text: &str| {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                ApiError::new(
                    Code::InvalidArgument,
                    format!("query parameter '{text}' is not valid percent-encoded UTF-8"),
                )
            })
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

/// Sets the (possibly dotted) field `path` of `message` from a query parameter's text.
fn set_query_field(message: &mut DynamicMessage, path: &str, text: &str) -> Result<(), ApiError> {
    let mut names = path.split('.').peekable();
    let mut current = message;
    while let Some(name) = names.next() {
        let descriptor = current.descriptor();
        let field = find_field(&descriptor, name).ok_or_else(|| {
            ApiError::bad_field(
                path,
                format!(
                    "unknown query parameter '{path}'; {} has the fields {}",
                    descriptor.name(),
                    field_names(&descriptor)
                ),
            )
        })?;
        if names.peek().is_some() {
            if !matches!(field.kind(), Kind::Message(_)) || field.is_list() || field.is_map() {
                return Err(ApiError::bad_field(
                    path,
                    format!("query parameter '{path}': '{name}' is not a message field"),
                ));
            }
            current = current
                .get_field_mut(&field)
                .as_message_mut()
                .ok_or_else(|| ApiError::new(Code::Internal, "message field without a message"))?;
            continue;
        }
        let value = scalar_from_text(&field, text)
            .map_err(|why| ApiError::bad_field(path, format!("query parameter '{path}': {why}")))?;
        if field.is_list() {
            if let Some(list) = current.get_field_mut(&field).as_list_mut() {
                list.push(value);
            }
        } else {
            current.set_field(&field, value);
        }
    }
    Ok(())
}

/// A field by its lowerCamel JSON name or its original name.
fn find_field(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_json_name(name)
        .or_else(|| descriptor.get_field_by_name(name))
}

/// The JSON names of a message's fields, for error messages.
fn field_names(descriptor: &MessageDescriptor) -> String {
    let names: Vec<_> = descriptor
        .fields()
        .map(|f| f.json_name().to_owned())
        .collect();
    names.join(", ")
}

/// Parses a query parameter's text as the field's scalar type.
fn scalar_from_text(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    fn number<T: std::str::FromStr>(text: &str, kind: &str) -> Result<T, String> {
        text.parse()
            .map_err(|_| format!("'{text}' is not a valid {kind}"))
    }
    if field.is_map() {
        return Err("maps cannot be set from the query string".into());
    }
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(match text {
            "true" => true,
            "false" => false,
            _ => return Err(format!("'{text}' is not true or false")),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(number(text, "32-bit integer")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(number(text, "64-bit integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(number(text, "unsigned 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(number(text, "unsigned 64-bit integer")?),
        Kind::Float => Value::F32(number(text, "number")?),
        Kind::Double => Value::F64(number(text, "number")?),
        Kind::Enum(descriptor) => match descriptor.get_value_by_name(text) {
            Some(value) => Value::EnumNumber(value.number()),
            None => {
                let names: Vec<_> = descriptor.values().map(|v| v.name().to_owned()).collect();
                return Err(format!("'{text}' is not one of {}", names.join(", ")));
            }
        },
        Kind::Bytes | Kind::Message(_) => {
            return Err("this field cannot be set from the query string; use the body".into());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::rules::{Lookup, RouteTable};
    use http::Method;
    use prost_reflect::DescriptorPool;

    fn with_route<T>(method: Method, path: &str, f: impl FnOnce(&Matched<'_>) -> T) -> T {
        let pool = DescriptorPool::decode(crate::api::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool, "contextd.v1").unwrap();
        match table.lookup(&method, path) {
            Lookup::Found(matched) => f(&matched),
            _ => panic!("no route"),
        }
    }

    #[test]
    fn bodies_take_both_name_forms_and_the_path_wins() {
        with_route(Method::POST, "/v1/sessions/s1:interact", |m| {
            let message = request_message(
                m,
                None,
                br#"{"message": "hi", "context": {"user": "Alice"}, "tool_results": []}"#,
            )
            .unwrap();
            let json: serde_json::Value = serde_json::from_str(&to_json(&message)).unwrap();
            assert_eq!(json["sessionId"], "s1");
            assert_eq!(json["message"], "hi");
            assert_eq!(json["context"]["user"], "Alice");
            // The same value in the body is fine; another one is not.
            assert!(request_message(m, None, br#"{"sessionId": "s1"}"#).is_ok());
            let error = request_message(m, None, br#"{"sessionId": "s2"}"#).unwrap_err();
            assert_eq!(error.code, Code::InvalidArgument);
            assert!(error.message.contains("'s2'"), "{}", error.message);
        });
    }

    #[test]
    fn unknown_fields_and_bad_json_say_where() {
        with_route(Method::POST, "/v1/sessions/s1:interact", |m| {
            let error = request_message(m, None, b"{\"mesage\": \"hi\"}").unwrap_err();
            assert!(
                error.message.contains("unknown field 'mesage'"),
                "{}",
                error.message
            );
            assert!(
                matches!(&error.details[0], crate::http::error::Detail::BadRequest { field, .. } if field == "mesage"),
                "{error:?}"
            );
            let error = request_message(m, None, b"{\n  \"message\": \"hi\",\n}").unwrap_err();
            assert!(
                error.message.contains("line 3 column 1"),
                "{}",
                error.message
            );
            let error = request_message(m, None, b"[1]").unwrap_err();
            assert_eq!(error.code, Code::InvalidArgument);
        });
    }

    #[test]
    fn query_parameters_by_either_name() {
        with_route(Method::GET, "/v1/sessions", |m| {
            let message = request_message(m, Some("pageSize=5&page_token=a%20b+c"), b"").unwrap();
            let json: serde_json::Value = serde_json::from_str(&to_json(&message)).unwrap();
            assert_eq!(json["pageSize"], 5);
            assert_eq!(json["pageToken"], "a b c");
            let error = request_message(m, Some("pageSize=many"), b"").unwrap_err();
            assert!(error.message.contains("'many'"), "{}", error.message);
            let error = request_message(m, Some("size=5"), b"").unwrap_err();
            assert!(error.message.contains("unknown query parameter 'size'"));
        });
    }

    #[test]
    fn output_emits_defaults_enum_names_and_64_bit_strings() {
        let pool = DescriptorPool::decode(crate::api::FILE_DESCRIPTOR_SET).unwrap();
        let descriptor = pool
            .get_message_by_name("contextd.v1.DeleteSessionResponse")
            .unwrap();
        let mut message = DynamicMessage::new(descriptor.clone());
        assert_eq!(to_json(&message), r#"{"deletedMessages":"0"}"#);
        message.set_field_by_name("deleted_messages", Value::U64(1 << 60));
        assert_eq!(
            to_json(&message),
            r#"{"deletedMessages":"1152921504606846976"}"#
        );
        let descriptor = pool
            .get_message_by_name("contextd.v1.InteractResponse")
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&DynamicMessage::new(descriptor))).unwrap();
        assert_eq!(json["finishReason"], "FINISH_REASON_UNSPECIFIED");
        assert_eq!(json["toolCalls"], serde_json::json!([]));
        assert_eq!(json["sessionCreated"], false);
    }
}
