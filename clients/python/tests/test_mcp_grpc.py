"""Google's MCP gRPC binding against a live contextd, through the stubs published in PyPI's
`mcp-grpc-transport-proto` 0.2.0 (code nobody here generated): tools, a turn through
`contextd_interact`, sessions as resources, and the answers for what contextd lacks."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from mcp_grpc_transport_proto import mcp_messages_pb2 as pb
from mcp_grpc_transport_proto.mcp_pb2_grpc import McpStub

COMPLETE = pb.RESULT_TYPE_COMPLETE
# A client of the binding sends the protocol version as metadata; contextd accepts it.
VERSION = (("mcp-protocol-version", "2026-07-28"),)


@pytest.fixture(scope="module")
def mcp(target: str) -> Iterator[McpStub]:
    with grpc.insecure_channel(target) as channel:
        yield McpStub(channel)


def arguments(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def call(mcp: McpStub, name: str, args: dict[str, Any], **kw: Any) -> Any:
    request = pb.CallToolRequest(request=pb.CallToolRequest.Request(name=name, arguments=arguments(args)))
    return mcp.CallTool(request, timeout=20, **kw)


def text_of(response: Any) -> str:
    return "".join(c.text.text for c in response.content)


def test_tools_are_listed_with_schemas(mcp: McpStub) -> None:
    listed = mcp.ListTools(pb.ListToolsRequest(), timeout=20, metadata=VERSION)
    assert listed.common.result_type == COMPLETE
    tools = {t.name: t for t in listed.tools}
    assert {"context_get", "context_set", "history_search", "contextd_interact"} <= set(tools)
    schema = json_format.MessageToDict(tools["context_get"].input_schema)
    assert "session_id" in schema["required"]
    interact = json_format.MessageToDict(tools["contextd_interact"].input_schema)
    assert interact["required"] == ["session_id", "message"]


def test_a_turn_and_a_tool_on_the_same_session(mcp: McpStub) -> None:
    session = f"pymcp-{uuid.uuid4().hex[:8]}"
    turn = call(
        mcp,
        "contextd_interact",
        {"session_id": session, "message": "three small words", "context": {"user": "ann"}},
        metadata=VERSION,
    )
    assert turn.common.result_type == COMPLETE
    assert not turn.is_error, text_of(turn)
    reply = json_format.MessageToDict(turn.structured_content)
    assert reply["session_id"] == session and reply["session_created"] is True
    assert reply["response"] == text_of(turn) and reply["finish_reason"] == "stop"

    got = call(mcp, "context_get", {"session_id": session, "key": "user"})
    assert not got.is_error and text_of(got) == '"ann"'

    # A tool that fails is a result the caller can read, not a status.
    missing = call(mcp, "context_get", {"key": "user"})
    assert missing.is_error and "session_id" in text_of(missing)


def test_sessions_are_resources(mcp: McpStub) -> None:
    session = f"pymcp-res-{uuid.uuid4().hex[:8]}"
    call(mcp, "contextd_interact", {"session_id": session, "message": "hello", "context": {"k": 1}})
    listed = mcp.ListResources(pb.ListResourcesRequest(), timeout=20)
    assert listed.common.result_type == COMPLETE
    uri = f"contextd://sessions/{session}"
    assert listed.resources[0].uri == uri, "the newest session comes first"
    read = mcp.ReadResource(pb.ReadResourceRequest(uri=uri), timeout=20)
    (contents,) = read.resource
    assert contents.mime_type == "application/json"
    document = json.loads(contents.text)
    assert document["context"] == {"k": 1}
    assert [m["role"] for m in document["history"]] == ["user", "assistant"]
    assert document["history"][0]["content"] == "hello"


def test_what_contextd_lacks_is_empty_or_not_found(mcp: McpStub) -> None:
    assert list(mcp.ListPrompts(pb.ListPromptsRequest(), timeout=20).prompts) == []
    templates = mcp.ListResourceTemplates(pb.ListResourceTemplatesRequest(), timeout=20)
    assert templates.common.result_type == COMPLETE and list(templates.resource_templates) == []
    completion = mcp.Complete(pb.CompletionRequest(), timeout=20)
    assert completion.common.result_type == COMPLETE and list(completion.values) == []
    for rpc, request in [
        (mcp.GetPrompt, pb.GetPromptRequest(name="summarize")),
        (mcp.ReadResource, pb.ReadResourceRequest(uri="contextd://sessions/pymcp-nobody")),
        (mcp.ReadResource, pb.ReadResourceRequest(uri="file:///etc/passwd")),
    ]:
        with pytest.raises(grpc.RpcError) as failure:
            rpc(request, timeout=20)
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND, failure.value.details()


def test_a_call_without_a_tool_name_is_invalid(mcp: McpStub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        mcp.CallTool(pb.CallToolRequest(), timeout=20)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in (failure.value.details() or "")
    with pytest.raises(grpc.RpcError) as failure:
        call(mcp, "no_such_tool", {})
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "contextd_interact" in (failure.value.details() or "")
