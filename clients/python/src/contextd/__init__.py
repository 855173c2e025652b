"""Python client for contextd, the gRPC service that keeps LLM conversations.

>>> from contextd import Client                                  # doctest: +SKIP
>>> with Client("127.0.0.1:61900") as client:
...     reply = client.interact("alpha", "Hello, I am John.", context={"user_id": "john_doe"})
...     print(reply.response, reply.updated_context)

``Client`` blocks; ``AsyncClient`` is the asyncio twin. Failed calls raise ``ContextdError``
carrying the gRPC status code, raised as its per-code subclass (``NotFoundError``, …). The generated protobuf modules are ``contextd.v1.*_pb2``.
"""

from __future__ import annotations

from typing import Iterable

import grpc

from contextd.aio import AsyncClient, AsyncConversation, ConverseOpening
from contextd.client import DEFAULT_TARGET, Client, Conversation
from contextd.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    ContextdError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from contextd.types import (
    Event,
    FinishReason,
    Message,
    MessageRole,
    Opened,
    Page,
    Session,
    SessionState,
    TextDelta,
    ToolCall,
    ToolCallRequested,
    ToolDefinition,
    ToolList,
    ToolOutput,
    ToolRan,
    ToolResult,
    TurnCompleted,
    TurnFailed,
    TurnResult,
    TurnStarted,
    Usage,
    WindowSettings,
    WindowStrategy,
    ContextSummary,
)


def connect(
    target: str = DEFAULT_TARGET,
    *,
    tls: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    ca_cert: bytes | str | None = None,
    client_cert: bytes | str | None = None,
    client_key: bytes | str | None = None,
    token: str | None = None,
    metadata: Iterable[tuple[str, str]] = (),
    timeout: float | None = None,
) -> Client:
    """A blocking Client for ``target`` (host:port); the options are Client's."""
    return Client(
        target,
        tls=tls,
        credentials=credentials,
        ca_cert=ca_cert,
        client_cert=client_cert,
        client_key=client_key,
        token=token,
        metadata=metadata,
        timeout=timeout,
    )


__all__ = [
    "AsyncClient", "AsyncConversation", "Client", "Conversation", "ContextdError", "connect",
    "DEFAULT_TARGET", "Event", "FinishReason", "Message", "MessageRole", "Opened", "Page",
    "Session", "SessionState", "TextDelta", "ToolCall", "ToolCallRequested", "ToolDefinition",
    "ToolList", "ToolOutput", "ToolRan", "ToolResult", "TurnCompleted", "TurnFailed",
    "TurnResult", "TurnStarted", "Usage", "WindowSettings", "WindowStrategy", "ContextSummary",
    "ConverseOpening", "AbortedError", "AlreadyExistsError", "CancelledError", "DataLossError",
    "DeadlineExceededError", "FailedPreconditionError", "InternalError", "InvalidArgumentError",
    "NotFoundError", "OutOfRangeError", "PermissionDeniedError", "ResourceExhaustedError",
    "UnauthenticatedError", "UnavailableError", "UnimplementedError", "UnknownError",
]
