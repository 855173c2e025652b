import datetime

from contextd.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InteractRequest(_message.Message):
    __slots__ = ("session_id", "message", "context", "tool_results", "idempotency_key", "abandon_tool_calls")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ABANDON_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    message: str
    context: _struct_pb2.Struct
    tool_results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolResult]
    idempotency_key: str
    abandon_tool_calls: bool
    def __init__(self, session_id: _Optional[str] = ..., message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tool_results: _Optional[_Iterable[_Union[_common_pb2.ToolResult, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., abandon_tool_calls: _Optional[bool] = ...) -> None: ...

class InteractResponse(_message.Message):
    __slots__ = ("session_id", "response", "updated_context", "finish_reason", "tool_calls", "usage", "session_created", "turn_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_CREATED_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    response: str
    updated_context: _struct_pb2.Struct
    finish_reason: _common_pb2.FinishReason
    tool_calls: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolCall]
    usage: _common_pb2.Usage
    session_created: bool
    turn_id: str
    def __init__(self, session_id: _Optional[str] = ..., response: _Optional[str] = ..., updated_context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., tool_calls: _Optional[_Iterable[_Union[_common_pb2.ToolCall, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., session_created: _Optional[bool] = ..., turn_id: _Optional[str] = ...) -> None: ...

class StreamResponseRequest(_message.Message):
    __slots__ = ("session_id", "message", "context", "tool_results", "idempotency_key", "abandon_tool_calls")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ABANDON_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    message: str
    context: _struct_pb2.Struct
    tool_results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolResult]
    idempotency_key: str
    abandon_tool_calls: bool
    def __init__(self, session_id: _Optional[str] = ..., message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tool_results: _Optional[_Iterable[_Union[_common_pb2.ToolResult, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., abandon_tool_calls: _Optional[bool] = ...) -> None: ...

class TurnStarted(_message.Message):
    __slots__ = ("turn_id", "session_id", "session_created")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_CREATED_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    session_id: str
    session_created: bool
    def __init__(self, turn_id: _Optional[str] = ..., session_id: _Optional[str] = ..., session_created: _Optional[bool] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolResultEvent(_message.Message):
    __slots__ = ("tool_call", "result")
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    tool_call: _common_pb2.ToolCall
    result: _common_pb2.ToolResult
    def __init__(self, tool_call: _Optional[_Union[_common_pb2.ToolCall, _Mapping]] = ..., result: _Optional[_Union[_common_pb2.ToolResult, _Mapping]] = ...) -> None: ...

class StreamResponseResponse(_message.Message):
    __slots__ = ("started", "delta", "tool_call", "tool_result", "completed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    started: TurnStarted
    delta: TextDelta
    tool_call: _common_pb2.ToolCall
    tool_result: ToolResultEvent
    completed: InteractResponse
    def __init__(self, started: _Optional[_Union[TurnStarted, _Mapping]] = ..., delta: _Optional[_Union[TextDelta, _Mapping]] = ..., tool_call: _Optional[_Union[_common_pb2.ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResultEvent, _Mapping]] = ..., completed: _Optional[_Union[InteractResponse, _Mapping]] = ...) -> None: ...

class ConverseOpen(_message.Message):
    __slots__ = ("session_id", "system_prompt", "context", "model", "tools", "labels", "max_context_tokens", "expire_time", "window", "server_tools")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SERVER_TOOLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    system_prompt: str
    context: _struct_pb2.Struct
    model: str
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolDefinition]
    labels: _containers.ScalarMap[str, str]
    max_context_tokens: int
    expire_time: _timestamp_pb2.Timestamp
    window: _common_pb2.WindowSettings
    server_tools: _common_pb2.ServerToolSelection
    def __init__(self, session_id: _Optional[str] = ..., system_prompt: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.ToolDefinition, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_context_tokens: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[_common_pb2.WindowSettings, _Mapping]] = ..., server_tools: _Optional[_Union[_common_pb2.ServerToolSelection, _Mapping]] = ...) -> None: ...

class ConverseUserMessage(_message.Message):
    __slots__ = ("message", "context", "idempotency_key")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    message: str
    context: _struct_pb2.Struct
    idempotency_key: str
    def __init__(self, message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ConverseToolResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ToolResult, _Mapping]]] = ...) -> None: ...

class ConverseCancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("open", "user_message", "tool_results", "cancel")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    open: ConverseOpen
    user_message: ConverseUserMessage
    tool_results: ConverseToolResults
    cancel: ConverseCancel
    def __init__(self, open: _Optional[_Union[ConverseOpen, _Mapping]] = ..., user_message: _Optional[_Union[ConverseUserMessage, _Mapping]] = ..., tool_results: _Optional[_Union[ConverseToolResults, _Mapping]] = ..., cancel: _Optional[_Union[ConverseCancel, _Mapping]] = ...) -> None: ...

class ConverseOpened(_message.Message):
    __slots__ = ("session", "session_created")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_CREATED_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    session_created: bool
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., session_created: _Optional[bool] = ...) -> None: ...

class TurnError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("turn_id", "opened", "started", "delta", "tool_call", "tool_result", "completed", "error")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    opened: ConverseOpened
    started: TurnStarted
    delta: TextDelta
    tool_call: _common_pb2.ToolCall
    tool_result: ToolResultEvent
    completed: InteractResponse
    error: TurnError
    def __init__(self, turn_id: _Optional[str] = ..., opened: _Optional[_Union[ConverseOpened, _Mapping]] = ..., started: _Optional[_Union[TurnStarted, _Mapping]] = ..., delta: _Optional[_Union[TextDelta, _Mapping]] = ..., tool_call: _Optional[_Union[_common_pb2.ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResultEvent, _Mapping]] = ..., completed: _Optional[_Union[InteractResponse, _Mapping]] = ..., error: _Optional[_Union[TurnError, _Mapping]] = ...) -> None: ...
