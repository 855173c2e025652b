"""Typed results of the contextd client: plain dataclasses built from the wire messages.

Contexts, tool arguments and structured tool output are plain ``dict`` values (JSON objects);
whole numbers in them come back as ``int``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping, Union

from google.protobuf import json_format, struct_pb2

from contextd.v1 import common_pb2, interact_pb2, tool_pb2

JSONObject = dict[str, Any]


class FinishReason(enum.Enum):
    """Why a turn ended."""

    UNSPECIFIED = common_pb2.FINISH_REASON_UNSPECIFIED
    STOP = common_pb2.FINISH_REASON_STOP
    TOOL_CALLS = common_pb2.FINISH_REASON_TOOL_CALLS
    LENGTH = common_pb2.FINISH_REASON_LENGTH
    CANCELLED = common_pb2.FINISH_REASON_CANCELLED
    STEP_LIMIT = common_pb2.FINISH_REASON_STEP_LIMIT


class SessionState(enum.Enum):
    """Whether a session can take a new message or waits for tool results."""

    UNSPECIFIED = common_pb2.SESSION_STATE_UNSPECIFIED
    IDLE = common_pb2.SESSION_STATE_IDLE
    AWAITING_TOOL_RESULTS = common_pb2.SESSION_STATE_AWAITING_TOOL_RESULTS


class MessageRole(enum.Enum):
    """Who wrote a stored message."""

    UNSPECIFIED = common_pb2.MESSAGE_ROLE_UNSPECIFIED
    USER = common_pb2.MESSAGE_ROLE_USER
    ASSISTANT = common_pb2.MESSAGE_ROLE_ASSISTANT
    TOOL = common_pb2.MESSAGE_ROLE_TOOL


def _enum(kind: type[enum.Enum], value: int) -> Any:
    try:
        return kind(value)
    except ValueError:
        return kind(0)


def _plain(value: Any) -> Any:
    """JSON from a Struct: whole-number doubles become ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> JSONObject:
    """A ``google.protobuf.Struct`` as a plain dict."""
    result: JSONObject = _plain(json_format.MessageToDict(struct))
    return result


def dict_to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A plain dict (JSON object; ``None`` is JSON null) as a ``google.protobuf.Struct``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"context must be a dict (a JSON object), not {type(value).__name__}")
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return struct


class WindowStrategy(enum.Enum):
    """How a session keeps its history within the model's context window."""

    UNSPECIFIED = common_pb2.WINDOW_STRATEGY_UNSPECIFIED
    SLIDING_WINDOW = common_pb2.WINDOW_STRATEGY_SLIDING_WINDOW
    SUMMARIZE = common_pb2.WINDOW_STRATEGY_SUMMARIZE
    DISABLED = common_pb2.WINDOW_STRATEGY_DISABLED


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    result: datetime = getattr(message, name).ToDatetime(tzinfo=timezone.utc)
    return result




def timestamp(value: datetime) -> Any:
    """A timezone-aware datetime as a ``google.protobuf.Timestamp`` (naive ones are UTC)."""
    from google.protobuf import timestamp_pb2

    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


@dataclass(frozen=True)
class WindowSettings:
    """How a session's context window is managed (``Session.window``; create/update/converse
    take one). ``summarize_threshold_percent`` 0 is the server default (90)."""

    strategy: WindowStrategy = WindowStrategy.UNSPECIFIED
    summarize_threshold_percent: int = 0
    summarizer_model: str = ""

    @classmethod
    def from_proto(cls, m: common_pb2.WindowSettings) -> WindowSettings:
        return cls(_enum(WindowStrategy, m.strategy), m.summarize_threshold_percent, m.summarizer_model)

    def to_proto(self) -> common_pb2.WindowSettings:
        return common_pb2.WindowSettings(
            strategy=self.strategy.value,
            summarize_threshold_percent=self.summarize_threshold_percent,
            summarizer_model=self.summarizer_model,
        )


@dataclass(frozen=True)
class ContextSummary:
    """The running summary that stands in for the oldest messages (strategy SUMMARIZE)."""

    text: str
    first_message_index: int
    end_message_index: int
    token_count: int

    @classmethod
    def from_proto(cls, m: common_pb2.ContextSummary) -> ContextSummary:
        return cls(m.text, m.first_message_index, m.end_message_index, m.token_count)


@dataclass(frozen=True)
class ToolDefinition:
    """A tool the model may call: for a session's own tools, the client runs it."""

    name: str
    description: str = ""
    input_schema: JSONObject | None = None
    #: Hints about the tool's behaviour in the shape of MCP's ``ToolAnnotations`` (``title``,
    #: ``readOnlyHint``, ...); ``None`` means none. contextd never acts on them; on an MCP
    #: server's tools they are that server's word, unverified.
    annotations: JSONObject | None = None

    @classmethod
    def from_proto(cls, m: common_pb2.ToolDefinition) -> ToolDefinition:
        return cls(
            m.name,
            m.description,
            struct_to_dict(m.input_schema) if m.HasField("input_schema") else None,
            struct_to_dict(m.annotations) if m.HasField("annotations") else None,
        )

    def to_proto(self) -> common_pb2.ToolDefinition:
        m = common_pb2.ToolDefinition(name=self.name, description=self.description)
        if self.input_schema is not None:
            m.input_schema.CopyFrom(dict_to_struct(self.input_schema))
        if self.annotations is not None:
            m.annotations.CopyFrom(dict_to_struct(self.annotations))
        return m


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool to be run with these arguments."""

    id: str
    name: str
    arguments: JSONObject

    @classmethod
    def from_proto(cls, m: common_pb2.ToolCall) -> ToolCall:
        return cls(m.tool_call_id, m.name, struct_to_dict(m.arguments))


@dataclass(frozen=True)
class ToolResult:
    """What a tool returned for one call; ``is_error`` when it ran and failed."""

    tool_call_id: str
    content: str
    is_error: bool = False

    @classmethod
    def from_proto(cls, m: common_pb2.ToolResult) -> ToolResult:
        return cls(m.tool_call_id, m.content, m.is_error)

    def to_proto(self) -> common_pb2.ToolResult:
        return common_pb2.ToolResult(tool_call_id=self.tool_call_id, content=self.content, is_error=self.is_error)


@dataclass(frozen=True)
class Usage:
    """Token counts."""

    input_tokens: int = 0
    output_tokens: int = 0
    context_tokens: int = 0

    @classmethod
    def from_proto(cls, m: common_pb2.Usage) -> Usage:
        return cls(m.input_tokens, m.output_tokens, m.context_tokens)


@dataclass(frozen=True)
class Session:
    """A conversation kept by contextd."""

    session_id: str
    system_prompt: str
    context: JSONObject
    model: str
    tools: list[ToolDefinition]
    labels: dict[str, str]
    create_time: datetime | None
    update_time: datetime | None
    message_count: int
    state: SessionState
    pending_tool_calls: list[ToolCall]
    usage: Usage
    max_context_tokens: int
    #: Opaque version tag; changes with every write. Pass it to ``update_session`` or
    #: ``delete_session`` to make them conditional (ABORTED when the session changed).
    etag: str = ""
    #: When the session expires; None: never.
    expire_time: datetime | None = None
    window: WindowSettings = field(default_factory=WindowSettings)
    #: The running summary; None until the first one is written.
    summary: ContextSummary | None = None
    #: Provider tokens per contextd token, as measured (0: not measured).
    token_estimate_scale: float = 0.0
    #: Names or ``*`` patterns of the server-side tools its model is offered; None: the
    #: server's ``engine.default_server_tools``; []: none.
    server_tools: list[str] | None = None

    @classmethod
    def from_proto(cls, m: common_pb2.Session) -> Session:
        return cls(
            session_id=m.session_id,
            system_prompt=m.system_prompt,
            context=struct_to_dict(m.context),
            model=m.model,
            tools=[ToolDefinition.from_proto(t) for t in m.tools],
            labels=dict(m.labels),
            create_time=_time(m, "create_time"),
            update_time=_time(m, "update_time"),
            message_count=m.message_count,
            state=_enum(SessionState, m.state),
            pending_tool_calls=[ToolCall.from_proto(c) for c in m.pending_tool_calls],
            usage=Usage.from_proto(m.usage),
            max_context_tokens=m.max_context_tokens,
            etag=m.etag,
            expire_time=_time(m, "expire_time"),
            window=WindowSettings.from_proto(m.window),
            summary=ContextSummary.from_proto(m.summary) if m.HasField("summary") else None,
            token_estimate_scale=m.token_estimate_scale,
            server_tools=list(m.server_tools.patterns) if m.HasField("server_tools") else None,
        )


@dataclass(frozen=True)
class Message:
    """One stored message of a session's history."""

    index: int
    role: MessageRole
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    tool_name: str
    is_error: bool
    create_time: datetime | None
    token_count: int
    turn_id: str

    @classmethod
    def from_proto(cls, m: common_pb2.Message) -> Message:
        return cls(
            index=m.index,
            role=_enum(MessageRole, m.role),
            content=m.content,
            tool_calls=[ToolCall.from_proto(c) for c in m.tool_calls],
            tool_call_id=m.tool_call_id,
            tool_name=m.tool_name,
            is_error=m.is_error,
            create_time=_time(m, "create_time"),
            token_count=m.token_count,
            turn_id=m.turn_id,
        )


@dataclass(frozen=True)
class TurnResult:
    """The outcome of a turn (``Interact``, or ``completed`` of a stream)."""

    session_id: str
    response: str
    updated_context: JSONObject
    finish_reason: FinishReason
    tool_calls: list[ToolCall]
    usage: Usage
    session_created: bool
    turn_id: str

    @property
    def needs_tool_results(self) -> bool:
        """True when the turn paused for client-side tools (see ``tool_calls``)."""
        return self.finish_reason is FinishReason.TOOL_CALLS

    @classmethod
    def from_proto(cls, m: interact_pb2.InteractResponse) -> TurnResult:
        return cls(
            session_id=m.session_id,
            response=m.response,
            updated_context=struct_to_dict(m.updated_context),
            finish_reason=_enum(FinishReason, m.finish_reason),
            tool_calls=[ToolCall.from_proto(c) for c in m.tool_calls],
            usage=Usage.from_proto(m.usage),
            session_created=m.session_created,
            turn_id=m.turn_id,
        )


@dataclass(frozen=True)
class Page:
    """One page of a listing; pass ``next_page_token`` back for the next ("" at the end)."""

    items: list[Any]
    next_page_token: str


@dataclass(frozen=True)
class ToolList:
    """Server-side tools, and the session's own (client-side) tools when a session was named."""

    tools: list[ToolDefinition]
    session_tools: list[ToolDefinition]
    #: With a session: names of every tool its model is offered (selected server-side tools,
    #: then its own), in the order the model sees them.
    offered_tools: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ToolOutput:
    """What a server-side tool returned through ``call_tool``."""

    content: str
    structured_content: Any
    is_error: bool

    @classmethod
    def from_proto(cls, m: tool_pb2.CallToolResponse) -> ToolOutput:
        structured = _plain(json_format.MessageToDict(m.structured_content)) if m.HasField("structured_content") else None
        return cls(m.content, structured, m.is_error)


# Events of a streamed turn (StreamResponse, Converse). Unknown kinds are skipped.


@dataclass(frozen=True)
class TurnStarted:
    """The turn began."""

    turn_id: str
    session_id: str
    session_created: bool


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's text."""

    text: str
    turn_id: str = ""


@dataclass(frozen=True)
class ToolCallRequested:
    """The model asked for a client-side tool; the turn will pause for its result."""

    call: ToolCall
    turn_id: str = ""


@dataclass(frozen=True)
class ToolRan:
    """A server-side tool ran during the turn."""

    call: ToolCall
    result: ToolResult
    turn_id: str = ""


@dataclass(frozen=True)
class TurnCompleted:
    """The turn ended (or paused for tool results: ``result.needs_tool_results``)."""

    result: TurnResult
    turn_id: str = ""


@dataclass(frozen=True)
class Opened:
    """Converse: the stream is attached to the session."""

    session: Session
    session_created: bool


@dataclass(frozen=True)
class TurnFailed:
    """Converse: a frame failed; the stream stays usable."""

    code: Any  # grpc.StatusCode
    message: str
    turn_id: str = ""


Event = Union[TurnStarted, TextDelta, ToolCallRequested, ToolRan, TurnCompleted, Opened, TurnFailed]

#: What a tool handler may return: the result's text, any JSON value (sent as JSON text), or a
#: full ToolResult. Raising an exception sends ``is_error=True`` with the exception's text.
ToolHandlerResult = Union[str, ToolResult, Any]
ToolHandler = Callable[[ToolCall], ToolHandlerResult]
AsyncToolHandler = Callable[[ToolCall], Union[ToolHandlerResult, Awaitable[ToolHandlerResult]]]


def tool_result_from(call: ToolCall, value: Any) -> ToolResult:
    """The ToolResult for what a tool handler returned."""
    if isinstance(value, ToolResult):
        return value if value.tool_call_id else ToolResult(call.id, value.content, value.is_error)
    if isinstance(value, str):
        return ToolResult(call.id, value)
    return ToolResult(call.id, json.dumps(value))


def tool_error_from(call: ToolCall, error: BaseException) -> ToolResult:
    """The ToolResult for a tool handler that raised."""
    return ToolResult(call.id, str(error) or type(error).__name__, is_error=True)


def event_from_proto(m: Any) -> Event | None:
    """The typed event of a StreamResponseResponse or ConverseResponse; None for unknown kinds."""
    from contextd.errors import status_code

    kind = m.WhichOneof("event")
    turn_id = getattr(m, "turn_id", "")
    if kind == "started":
        return TurnStarted(m.started.turn_id, m.started.session_id, m.started.session_created)
    if kind == "delta":
        return TextDelta(m.delta.text, turn_id)
    if kind == "tool_call":
        return ToolCallRequested(ToolCall.from_proto(m.tool_call), turn_id)
    if kind == "tool_result":
        return ToolRan(ToolCall.from_proto(m.tool_result.tool_call), ToolResult.from_proto(m.tool_result.result), turn_id)
    if kind == "completed":
        return TurnCompleted(TurnResult.from_proto(m.completed), turn_id or m.completed.turn_id)
    if kind == "opened":
        return Opened(Session.from_proto(m.opened.session), m.opened.session_created)
    if kind == "error":
        return TurnFailed(status_code(m.error.code), m.error.message, turn_id)
    return None


__all__ = [
    "FinishReason", "SessionState", "MessageRole", "WindowStrategy", "WindowSettings", "ContextSummary", "ToolDefinition", "ToolCall", "ToolResult",
    "Usage", "Session", "Message", "TurnResult", "Page", "ToolList", "ToolOutput", "TurnStarted",
    "TextDelta", "ToolCallRequested", "ToolRan", "TurnCompleted", "Opened", "TurnFailed", "Event",
    "ToolHandler", "AsyncToolHandler", "struct_to_dict", "dict_to_struct",
]
