import datetime

from contextd.v1 import common_pb2 as _common_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_ENTRY_KIND_UNSPECIFIED: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_SYSTEM_PROMPT: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_CONTEXT: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_HISTORY: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_USER_MESSAGE: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_SUMMARY: _ClassVar[ContextEntryKind]
    CONTEXT_ENTRY_KIND_PENDING_SUMMARY: _ClassVar[ContextEntryKind]
CONTEXT_ENTRY_KIND_UNSPECIFIED: ContextEntryKind
CONTEXT_ENTRY_KIND_SYSTEM_PROMPT: ContextEntryKind
CONTEXT_ENTRY_KIND_CONTEXT: ContextEntryKind
CONTEXT_ENTRY_KIND_HISTORY: ContextEntryKind
CONTEXT_ENTRY_KIND_USER_MESSAGE: ContextEntryKind
CONTEXT_ENTRY_KIND_SUMMARY: ContextEntryKind
CONTEXT_ENTRY_KIND_PENDING_SUMMARY: ContextEntryKind

class CreateSessionRequest(_message.Message):
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

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_common_pb2.Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ToolDefinitionList(_message.Message):
    __slots__ = ("tools",)
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolDefinition]
    def __init__(self, tools: _Optional[_Iterable[_Union[_common_pb2.ToolDefinition, _Mapping]]] = ...) -> None: ...

class UpdateSessionRequest(_message.Message):
    __slots__ = ("session_id", "context", "system_prompt", "tools", "model", "max_context_tokens", "labels", "remove_labels", "expire_time", "window", "etag", "server_tools", "reset_server_tools")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SERVER_TOOLS_FIELD_NUMBER: _ClassVar[int]
    RESET_SERVER_TOOLS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    context: _struct_pb2.Struct
    system_prompt: str
    tools: ToolDefinitionList
    model: str
    max_context_tokens: int
    labels: _containers.ScalarMap[str, str]
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    window: _common_pb2.WindowSettings
    etag: str
    server_tools: _common_pb2.ServerToolSelection
    reset_server_tools: bool
    def __init__(self, session_id: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., system_prompt: _Optional[str] = ..., tools: _Optional[_Union[ToolDefinitionList, _Mapping]] = ..., model: _Optional[str] = ..., max_context_tokens: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window: _Optional[_Union[_common_pb2.WindowSettings, _Mapping]] = ..., etag: _Optional[str] = ..., server_tools: _Optional[_Union[_common_pb2.ServerToolSelection, _Mapping]] = ..., reset_server_tools: _Optional[bool] = ...) -> None: ...

class UpdateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id", "etag")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    etag: str
    def __init__(self, session_id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("deleted_messages",)
    DELETED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    deleted_messages: int
    def __init__(self, deleted_messages: _Optional[int] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PreviewContextRequest(_message.Message):
    __slots__ = ("session_id", "message", "context", "summarize")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SUMMARIZE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    message: str
    context: _struct_pb2.Struct
    summarize: bool
    def __init__(self, session_id: _Optional[str] = ..., message: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., summarize: _Optional[bool] = ...) -> None: ...

class ContextEntry(_message.Message):
    __slots__ = ("kind", "role", "content", "token_count", "message_index", "tool_calls", "tool_call_id", "summary_first_message_index", "summary_end_message_index")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIRST_MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_END_MESSAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    kind: ContextEntryKind
    role: _common_pb2.MessageRole
    content: str
    token_count: int
    message_index: int
    tool_calls: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolCall]
    tool_call_id: str
    summary_first_message_index: int
    summary_end_message_index: int
    def __init__(self, kind: _Optional[_Union[ContextEntryKind, str]] = ..., role: _Optional[_Union[_common_pb2.MessageRole, str]] = ..., content: _Optional[str] = ..., token_count: _Optional[int] = ..., message_index: _Optional[int] = ..., tool_calls: _Optional[_Iterable[_Union[_common_pb2.ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ..., summary_first_message_index: _Optional[int] = ..., summary_end_message_index: _Optional[int] = ...) -> None: ...

class PreviewContextResponse(_message.Message):
    __slots__ = ("entries", "total_tokens", "omitted_messages", "max_context_tokens", "reserved_output_tokens", "model", "tools", "summary_kept")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_KEPT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[ContextEntry]
    total_tokens: int
    omitted_messages: int
    max_context_tokens: int
    reserved_output_tokens: int
    model: str
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.ToolDefinition]
    summary_kept: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[ContextEntry, _Mapping]]] = ..., total_tokens: _Optional[int] = ..., omitted_messages: _Optional[int] = ..., max_context_tokens: _Optional[int] = ..., reserved_output_tokens: _Optional[int] = ..., model: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.ToolDefinition, _Mapping]]] = ..., summary_kept: _Optional[bool] = ...) -> None: ...
