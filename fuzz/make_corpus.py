#!/usr/bin/env python3
"""Writes fuzz/corpus/<target>/ seed files: the inputs the integration tests use, in each
target's input format. Protobuf is encoded by hand (the wire format is small), so nothing
but Python is needed. Run it again after changing a target's input format."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """One field: int -> varint, bytes/str -> length-delimited (a nested message is bytes)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields)


def pb_value(v):
    """google.protobuf.Value."""
    if v is None:
        return message((1, 0))
    if isinstance(v, bool):
        return message((4, v))
    if isinstance(v, (int, float)):
        return varint(2 << 3 | 1) + struct.pack("<d", float(v))
    if isinstance(v, str):
        return message((3, v))
    if isinstance(v, list):
        return message((6, b"".join(field(1, pb_value(x)) for x in v)))
    return message((5, pb_struct(v)))


def pb_struct(obj):
    """google.protobuf.Struct: map<string, Value> fields = 1."""
    return b"".join(field(1, message((1, k), (2, pb_value(v)))) for k, v in obj.items())


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


CONTEXT = {"user": {"name": "Alice", "city": "Oslo"}, "topic": "weather", "n": 3}
TOOL = message((1, "get_weather"), (2, "Weather for a city"),
               (3, pb_struct({"type": "object", "properties": {"city": {"type": "string"}}})))

# grpc_requests: selector byte, then the request.
grpc = {
    0: message((1, "s1"), (2, "You are terse."), (3, pb_struct(CONTEXT)), (4, "echo"),
               (5, TOOL), (7, 4096)),
    1: message((1, "s1")),
    2: message((1, 2), (2, "")),
    3: message((1, "s1"), (2, pb_struct({"topic": None, "user": {"city": "NYC"}})), (3, "Be brief.")),
    4: message((1, "s1")),
    5: message((1, "s1"), (2, 10)),
    6: message((1, "s1"), (2, "what next?")),
    7: message((1, "s1"), (2, "hello"), (3, pb_struct(CONTEXT))),
    8: message((1, "s2"), (2, "stream me"), (5, "key-1")),
    9: message((1, "s1")),
    10: message((1, "context_get"), (2, pb_struct({"path": "/user"})), (3, "s1")),
    11: b"",
    12: message((1, "acme"), (2, 1), (3, "ci")),
    15: b"",
    16: message((1, "default")),
    18: message((1, "s1"), (4, message((1, "call_1"), (2, "72F and sunny"))), (6, False)),
}
for selector, body in grpc.items():
    write("grpc_requests", f"rpc-{selector:02}", bytes([selector]) + body)


def frames(*frames):
    out = b""
    for f in frames:
        out += bytes([len(f)]) + f if len(f) < 255 else bytes([255]) + f
    return out


OPEN = message((1, message((1, "c1"), (3, pb_struct({"user": "Bob"})), (5, TOOL))))
USER = message((2, message((1, "hello"), (2, pb_struct({"mood": "ok"})))))
RESULTS = message((3, message((1, message((1, "call_1"), (2, "sunny"))))))
CANCEL = message((4, b""))
write("converse_frames", "open-user", frames(OPEN, USER))
write("converse_frames", "open-user-results", frames(OPEN, USER, RESULTS))
write("converse_frames", "open-cancel-user", frames(OPEN, USER, CANCEL, USER))
write("converse_frames", "user-first", frames(USER))

# merge_patch: target NUL patch; the RFC 7386 appendix A cases.
rfc = [
    ({"a": "b"}, {"a": "c"}), ({"a": "b"}, {"b": "c"}), ({"a": "b"}, {"a": None}),
    ({"a": "b", "b": "c"}, {"a": None}), ({"a": ["b"]}, {"a": "c"}), ({"a": "c"}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}), ({"a": [{"b": "c"}]}, {"a": [1]}),
    (["a", "b"], ["c", "d"]), ({"a": "b"}, ["c"]), ({"a": "foo"}, None), ({"a": "foo"}, "bar"),
    ({"e": None}, {"a": 1}), ([1, 2], {"a": "b", "c": None}), ({}, {"a": {"bb": {"ccc": None}}}),
]
for i, (target, patch) in enumerate(rfc):
    write("merge_patch", f"rfc7386-{i:02}", json.dumps(target) + "\0" + json.dumps(patch))


def window(max_ctx, reserve, scale, cap, system, context, turn, history):
    out = struct.pack("<HHBHBBH", max_ctx, reserve, scale, cap, system, context, turn)
    for role, tokens in history:
        out += struct.pack("<BH", role, tokens)
    return out


U, A, T = 0, 1, 2
write("window_assembly", "plain", window(200, 0, 0, 0xFFFF, 10, 10, 20, [(U, 30)] * 10))
write("window_assembly", "tool-unit", window(110, 0, 0, 0xFFFF, 10, 10, 20,
                                             [(A, 10), (T, 30), (A, 30), (U, 10)]))
write("window_assembly", "orphan", window(1000, 0, 0, 0xFFFF, 10, 10, 5, [(U, 5), (T, 5)]))
write("window_assembly", "too-large", window(100, 20, 0, 0xFFFF, 10, 10, 70, []))
write("window_assembly", "scaled-capped", window(8192, 1024, 42, 500, 40, 90, 30,
                                                 [(U, 50), (A, 80), (T, 20), (T, 25), (A, 60)] * 4))


def openai(obj):
    return "data: " + json.dumps(obj) + "\n\n"


def anthropic(event, obj):
    return f"event: {event}\ndata: " + json.dumps(obj) + "\n\n"


openai_text = (
    openai({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    + "".join(openai({"id": "c", "object": "chat.completion.chunk",
                      "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
              for p in ["Hel", "lo ", "wor", "ld"])
    + openai({"id": "c", "object": "chat.completion.chunk",
              "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + openai({"id": "c", "object": "chat.completion.chunk", "choices": [],
              "usage": {"prompt_tokens": 12, "completion_tokens": 4}})
    + "data: [DONE]\n\n"
)
openai_tools = (
    openai({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]})
    + openai({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "{\"city\": "}}]}}]})
    + openai({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}}]})
    + openai({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    + "data: [DONE]\n\n"
)
openai_error = openai({"error": {"message": "The server had an error", "type": "server_error"}})
anthropic_text = (
    anthropic("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [],
        "usage": {"input_tokens": 472, "output_tokens": 1}}})
    + anthropic("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
    + anthropic("ping", {"type": "ping"})
    + "".join(anthropic("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": p}})
              for p in ["Hello", " there"])
    + anthropic("content_block_stop", {"type": "content_block_stop", "index": 0})
    + anthropic("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 15}})
    + anthropic("message_stop", {"type": "message_stop"})
)
anthropic_tool = (
    anthropic("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 9}}})
    + anthropic("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})
    + anthropic("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": "{\"city\": \"Os"}})
    + anthropic("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": "lo\"}"}})
    + anthropic("content_block_stop", {"type": "content_block_stop", "index": 1})
    + anthropic("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}})
    + anthropic("message_stop", {"type": "message_stop"})
)
anthropic_error = anthropic("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
for name, body in [("openai-text", openai_text), ("openai-tools", openai_tools),
                   ("openai-error", openai_error), ("anthropic-text", anthropic_text),
                   ("anthropic-tool", anthropic_tool), ("anthropic-error", anthropic_error),
                   ("cut", openai_text[:70])]:
    write("sse_streams", name, b"\x07" + body.encode())

for i, args in enumerate(['{"city": "Oslo"}', '{"q": {"nested": [1, 2.5, true, null]}, "u": "\\u00e9"}',
                          "", "   ", "[1, 2]", '{"a": 1', "null", '{"emoji": "\U0001F600"}']):
    write("tool_arguments", f"args-{i}", bytes([i * 9 + 1]) + args.encode())

# http_json: selector byte, then the body (the HTTP tests' bodies).
http = [
    (0, {"sessionId": "h1", "systemPrompt": "Be brief.", "context": CONTEXT}),
    (1, {"message": "hello", "context": {"user": "Alice"}}),
    (2, {"message": "stream"}),
    (3, {"context": {"topic": None}, "labels": {"team": "a"}}),
    (4, {"message": "preview"}),
    (5, {"arguments": {"path": "/user"}, "sessionId": "fuzz"}),
    (6, {"tenantId": "acme", "role": "KEY_ROLE_USER"}),
    (7, {"sessionId": "101", "message": "hi", "context": {"user": "Alice"}}),
]
for selector, body in http:
    write("http_json", f"route-{selector}", bytes([selector]) + json.dumps(body).encode())
write("http_json", "unknown-field", b"\x01" + b'{"mesage": "typo"}')
write("http_json", "bad-json", b"\x00" + b'{"sessionId": ')

write("json_lines", "interact", '{"sessionId": "101", "message": "hello", "context": {"user": "Alice"}}\n')
write("json_lines", "two-lines", '{"sessionId": "101", "message": "a"}\n{"sessionId": "101", "message": "b"}\n')
write("json_lines", "not-object", "MCP_INIT: SESSION_ID=101\n".lower())
write("json_lines", "auth", '{"sessionId": "7", "message": "x", "authorization": "Bearer ctxd_x"}\n')
