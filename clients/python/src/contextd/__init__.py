"""Python client for contextd, the gRPC service that keeps LLM conversations.

>>> from contextd import Client                                  # doctest: +SKIP
>>> with Client("127.0.0.1:61900") as client:
...     reply = client.interact("alpha", "Hello, I am John.", context={"user_id": "john_doe"})
...     print(reply.response, reply.updated_context)

``Client`` blocks; ``AsyncClient`` is the asyncio twin. Failed calls raise ``ContextdError``
carrying the gRPC status code. The generated protobuf modules are ``contextd.v1.*_pb2``.
"""

from contextd.aio import AsyncClient, AsyncConversation
from contextd.client import DEFAULT_TARGET, Client, Conversation
from contextd.errors import ContextdError
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
)


def connect(target: str = DEFAULT_TARGET, **options: object) -> Client:
    """A blocking Client for ``target``; see Client for the options (tls, credentials, token…)."""
    return Client(target, **options)  # type: ignore[arg-type]


__all__ = [
    "AsyncClient", "AsyncConversation", "Client", "Conversation", "ContextdError", "connect",
    "DEFAULT_TARGET", "Event", "FinishReason", "Message", "MessageRole", "Opened", "Page",
    "Session", "SessionState", "TextDelta", "ToolCall", "ToolCallRequested", "ToolDefinition",
    "ToolList", "ToolOutput", "ToolRan", "ToolResult", "TurnCompleted", "TurnFailed",
    "TurnResult", "TurnStarted", "Usage",
]
