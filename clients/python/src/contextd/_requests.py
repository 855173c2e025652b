"""Request messages built from the wrapper's plain arguments, shared by Client and AsyncClient."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import grpc

from datetime import datetime

from contextd.types import ToolDefinition, ToolResult, WindowSettings, dict_to_struct, timestamp
from contextd.v1 import common_pb2, interact_pb2, session_pb2, tool_pb2

Metadata = tuple[tuple[str, str], ...]


def metadata(token: str | None, extra: Iterable[tuple[str, str]] = ()) -> Metadata:
    """Call metadata: the bearer token (if any) and any extra pairs."""
    pairs = [(k.lower(), v) for k, v in extra]
    if token:
        pairs.append(("authorization", f"Bearer {token}"))
    return tuple(pairs)


def retry_delay(backoff: float, attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with full jitter in its
    upper half, at most 5 s."""
    import random

    ceiling: float = min(5.0, backoff * 2.0**attempt)
    return ceiling / 2 + random.random() * ceiling / 2


Pem = bytes | str | os.PathLike[str]


def pem_bytes(what: str, pem: Pem | None) -> bytes | None:
    """PEM given as bytes (the PEM text itself) or as a path to a file (str or Path)."""
    if pem is None or isinstance(pem, bytes):
        return pem
    try:
        return Path(pem).read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {what} {pem}: {error.strerror}") from None


def channel_credentials(
    tls: bool,
    credentials: grpc.ChannelCredentials | None,
    ca_cert: Pem | None = None,
    client_cert: Pem | None = None,
    client_key: Pem | None = None,
) -> grpc.ChannelCredentials | None:
    """The credentials of a secure channel; None for plaintext. ``ca_cert`` (the CA that
    issued the server's certificate; default: the system's roots) and ``client_cert`` with
    ``client_key`` (for mTLS) imply TLS."""
    if credentials is not None:
        return credentials
    if (client_cert is None) != (client_key is None):
        raise ValueError("client_cert and client_key go together (mTLS needs both)")
    if tls or ca_cert is not None or client_cert is not None:
        return grpc.ssl_channel_credentials(
            root_certificates=pem_bytes("ca_cert", ca_cert),
            private_key=pem_bytes("client_key", client_key),
            certificate_chain=pem_bytes("client_cert", client_cert),
        )
    return None


def tools(definitions: Iterable[ToolDefinition | Mapping[str, Any]]) -> list[Any]:
    result = []
    for tool in definitions:
        if isinstance(tool, Mapping):
            tool = ToolDefinition(tool["name"], tool.get("description", ""), tool.get("input_schema"))
        result.append(tool.to_proto())
    return result


def results(values: Iterable[ToolResult]) -> list[Any]:
    return [r.to_proto() for r in values]


def create_session(
    session_id: str,
    system_prompt: str,
    context: Mapping[str, Any] | None,
    model: str,
    tool_defs: Iterable[ToolDefinition | Mapping[str, Any]],
    labels: Mapping[str, str] | None,
    max_context_tokens: int,
    expire_time: datetime | None = None,
    window: WindowSettings | None = None,
    server_tools: Iterable[str] | None = None,
) -> session_pb2.CreateSessionRequest:
    request = session_pb2.CreateSessionRequest(
        session_id=session_id,
        system_prompt=system_prompt,
        model=model,
        tools=tools(tool_defs),
        labels=dict(labels or {}),
        max_context_tokens=max_context_tokens,
    )
    if context is not None:
        request.context.CopyFrom(dict_to_struct(context))
    if expire_time is not None:
        request.expire_time.CopyFrom(timestamp(expire_time))
    if window is not None:
        request.window.CopyFrom(window.to_proto())
    if server_tools is not None:
        request.server_tools.CopyFrom(server_tool_selection(server_tools))
    return request


def update_session(
    session_id: str,
    context: Mapping[str, Any] | None,
    system_prompt: str | None,
    tool_defs: Iterable[ToolDefinition | Mapping[str, Any]] | None,
    model: str | None,
    max_context_tokens: int | None,
    labels: Mapping[str, str] | None,
    remove_labels: Iterable[str],
    etag: str | None = None,
    expire_time: datetime | None = None,
    window: WindowSettings | None = None,
    server_tools: Iterable[str] | None = None,
    reset_server_tools: bool = False,
) -> session_pb2.UpdateSessionRequest:
    request = session_pb2.UpdateSessionRequest(
        session_id=session_id,
        labels=dict(labels or {}),
        remove_labels=list(remove_labels),
        etag=etag or "",
        reset_server_tools=reset_server_tools,
    )
    if context is not None:
        request.context.CopyFrom(dict_to_struct(context))
    if system_prompt is not None:
        request.system_prompt = system_prompt
    if tool_defs is not None:
        request.tools.CopyFrom(session_pb2.ToolDefinitionList(tools=tools(tool_defs)))
    if model is not None:
        request.model = model
    if max_context_tokens is not None:
        request.max_context_tokens = max_context_tokens
    if expire_time is not None:
        request.expire_time.CopyFrom(timestamp(expire_time))
    if window is not None:
        request.window.CopyFrom(window.to_proto())
    if server_tools is not None:
        request.server_tools.CopyFrom(server_tool_selection(server_tools))
    return request


def interact(
    session_id: str,
    message: str,
    context: Mapping[str, Any] | None,
    tool_results: Iterable[ToolResult],
    idempotency_key: str | None = None,
    abandon_tool_calls: bool = False,
) -> interact_pb2.InteractRequest:
    request = interact_pb2.InteractRequest(
        session_id=session_id,
        message=message,
        tool_results=results(tool_results),
        idempotency_key=idempotency_key or "",
        abandon_tool_calls=abandon_tool_calls,
    )
    if context is not None:
        request.context.CopyFrom(dict_to_struct(context))
    return request


def stream_response(
    session_id: str,
    message: str,
    context: Mapping[str, Any] | None,
    tool_results: Iterable[ToolResult],
    idempotency_key: str | None = None,
    abandon_tool_calls: bool = False,
) -> interact_pb2.StreamResponseRequest:
    request = interact_pb2.StreamResponseRequest(
        session_id=session_id,
        message=message,
        tool_results=results(tool_results),
        idempotency_key=idempotency_key or "",
        abandon_tool_calls=abandon_tool_calls,
    )
    if context is not None:
        request.context.CopyFrom(dict_to_struct(context))
    return request


def converse_open(
    session_id: str,
    system_prompt: str,
    context: Mapping[str, Any] | None,
    model: str,
    tool_defs: Iterable[ToolDefinition | Mapping[str, Any]],
    labels: Mapping[str, str] | None,
    max_context_tokens: int,
    expire_time: datetime | None = None,
    window: WindowSettings | None = None,
    server_tools: Iterable[str] | None = None,
) -> interact_pb2.ConverseRequest:
    frame = interact_pb2.ConverseOpen(
        session_id=session_id,
        system_prompt=system_prompt,
        model=model,
        tools=tools(tool_defs),
        labels=dict(labels or {}),
        max_context_tokens=max_context_tokens,
    )
    if context is not None:
        frame.context.CopyFrom(dict_to_struct(context))
    if expire_time is not None:
        frame.expire_time.CopyFrom(timestamp(expire_time))
    if window is not None:
        frame.window.CopyFrom(window.to_proto())
    if server_tools is not None:
        frame.server_tools.CopyFrom(server_tool_selection(server_tools))
    return interact_pb2.ConverseRequest(open=frame)


def server_tool_selection(patterns: Iterable[str]) -> common_pb2.ServerToolSelection:
    if isinstance(patterns, str):
        raise TypeError("server_tools is a list of names or patterns, not one string")
    return common_pb2.ServerToolSelection(patterns=list(patterns))


def converse_message(
    message: str, context: Mapping[str, Any] | None, idempotency_key: str | None = None
) -> interact_pb2.ConverseRequest:
    frame = interact_pb2.ConverseUserMessage(message=message, idempotency_key=idempotency_key or "")
    if context is not None:
        frame.context.CopyFrom(dict_to_struct(context))
    return interact_pb2.ConverseRequest(user_message=frame)


def converse_tool_results(values: Iterable[ToolResult]) -> interact_pb2.ConverseRequest:
    return interact_pb2.ConverseRequest(tool_results=interact_pb2.ConverseToolResults(results=results(values)))


def converse_cancel() -> interact_pb2.ConverseRequest:
    return interact_pb2.ConverseRequest(cancel=interact_pb2.ConverseCancel())


def call_tool(name: str, arguments: Mapping[str, Any] | None, session_id: str) -> tool_pb2.CallToolRequest:
    request = tool_pb2.CallToolRequest(name=name, session_id=session_id)
    request.arguments.CopyFrom(dict_to_struct(arguments or {}))
    return request
