"""The asyncio client: the same operations as Client, awaited, with async iterators for streams."""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

import grpc
import grpc.aio

from contextd import _requests
from contextd.client import DEFAULT_TARGET
from contextd.errors import ContextdError
from contextd.types import (
    AsyncToolHandler,
    Event,
    Message,
    Opened,
    Page,
    Session,
    ToolCall,
    ToolDefinition,
    ToolList,
    ToolOutput,
    ToolResult,
    TurnCompleted,
    TurnFailed,
    TurnResult,
    dict_to_struct,
    event_from_proto,
    tool_error_from,
    tool_result_from,
)
from contextd.v1 import interact_pb2, interact_pb2_grpc, session_pb2, session_pb2_grpc, tool_pb2, tool_pb2_grpc


async def run_tool_handler(handler: AsyncToolHandler, calls: Sequence[ToolCall]) -> list[ToolResult]:
    """Runs the handler (sync or async) for each call; an exception becomes an ``is_error`` result."""
    answers = []
    for call in calls:
        try:
            value = handler(call)
            if inspect.isawaitable(value):
                value = await value
            answers.append(tool_result_from(call, value))
        except Exception as error:  # the tool failed: the model is told, the turn goes on
            answers.append(tool_error_from(call, error))
    return answers


class AsyncClient:
    """An asyncio contextd client.

    >>> async with AsyncClient("127.0.0.1:61900") as client:     # doctest: +SKIP
    ...     async for event in client.stream_response("alpha", "Hello!"):
    ...         print(event)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Same arguments as Client. Create it inside a running event loop."""
        secure = _requests.channel_credentials(tls, credentials)
        if secure is None:
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(target, secure, options=list(options))
        self._metadata = _requests.metadata(token, metadata)
        self._timeout = timeout
        self._sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self._interact = interact_pb2_grpc.InteractServiceStub(self._channel)
        self._tools = tool_pb2_grpc.ToolServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None

    # Sessions

    async def create_session(
        self,
        session_id: str = "",
        *,
        system_prompt: str = "",
        context: Mapping[str, Any] | None = None,
        model: str = "",
        tools: Iterable[ToolDefinition | Mapping[str, Any]] = (),
        labels: Mapping[str, str] | None = None,
        max_context_tokens: int = 0,
    ) -> Session:
        """Creates a session (an empty id lets the server choose one)."""
        request = _requests.create_session(
            session_id, system_prompt, context, model, tools, labels, max_context_tokens
        )
        return Session.from_proto((await self._call(self._sessions.CreateSession, request)).session)

    async def get_session(self, session_id: str) -> Session:
        """The session, with its context, state and pending tool calls."""
        request = session_pb2.GetSessionRequest(session_id=session_id)
        return Session.from_proto((await self._call(self._sessions.GetSession, request)).session)

    async def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> Page:
        """One page of sessions ordered by id; ``items`` are Session values."""
        request = session_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
        response = await self._call(self._sessions.ListSessions, request)
        return Page([Session.from_proto(s) for s in response.sessions], response.next_page_token)

    async def iter_sessions(self, *, page_size: int = 0) -> AsyncIterator[Session]:
        """Every session, page by page."""
        token = ""
        while True:
            page = await self.list_sessions(page_size=page_size, page_token=token)
            for session in page.items:
                yield session
            token = page.next_page_token
            if not token:
                return

    async def update_session(
        self,
        session_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        tools: Iterable[ToolDefinition | Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_context_tokens: int | None = None,
        labels: Mapping[str, str] | None = None,
        remove_labels: Iterable[str] = (),
        etag: str | None = None,
    ) -> Session:
        """Changes a session: ``context`` is a JSON merge patch (``None`` values delete keys)."""
        request = _requests.update_session(
            session_id, context, system_prompt, tools, model, max_context_tokens, labels, remove_labels, etag
        )
        return Session.from_proto((await self._call(self._sessions.UpdateSession, request)).session)

    async def delete_session(self, session_id: str, *, etag: str | None = None) -> int:
        """Deletes a session; returns how many messages it had. With ``etag``, only while the
        session's etag is still that one (ABORTED otherwise)."""
        request = session_pb2.DeleteSessionRequest(session_id=session_id, etag=etag or "")
        deleted: int = (await self._call(self._sessions.DeleteSession, request)).deleted_messages
        return deleted

    async def list_messages(self, session_id: str, *, page_size: int = 0, page_token: str = "") -> Page:
        """One page of the session's history, oldest first; ``items`` are Message values."""
        request = session_pb2.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        response = await self._call(self._sessions.ListMessages, request)
        return Page([Message.from_proto(m) for m in response.messages], response.next_page_token)

    async def preview_context(
        self, session_id: str, message: str = "", *, context: Mapping[str, Any] | None = None
    ) -> session_pb2.PreviewContextResponse:
        """Exactly what the model would see for ``message`` now (the generated message)."""
        request = session_pb2.PreviewContextRequest(session_id=session_id, message=message)
        if context is not None:
            request.context.CopyFrom(dict_to_struct(context))
        result: session_pb2.PreviewContextResponse = await self._call(self._sessions.PreviewContext, request)
        return result

    # Turns

    async def interact(
        self,
        session_id: str,
        message: str = "",
        *,
        context: Mapping[str, Any] | None = None,
        tool_results: Iterable[ToolResult] = (),
        tool_handler: AsyncToolHandler | None = None,
    ) -> TurnResult:
        """Runs a turn; with ``tool_handler`` (sync or async), client-side tool calls are
        answered by it and the turn continued until it finishes."""
        request = _requests.interact(session_id, message, context, tool_results)
        result = TurnResult.from_proto(await self._call(self._interact.Interact, request))
        while tool_handler is not None and result.needs_tool_results:
            answers = await run_tool_handler(tool_handler, result.tool_calls)
            request = _requests.interact(session_id, "", None, answers)
            result = TurnResult.from_proto(await self._call(self._interact.Interact, request))
        return result

    async def stream_response(
        self,
        session_id: str,
        message: str = "",
        *,
        context: Mapping[str, Any] | None = None,
        tool_results: Iterable[ToolResult] = (),
        timeout: float | None = None,
    ) -> AsyncIterator[Event]:
        """Runs a turn and yields its events, TurnCompleted last. Leaving early cancels the call."""
        request = _requests.stream_response(session_id, message, context, tool_results)
        call = self._interact.StreamResponse(request, metadata=self._metadata, timeout=timeout)
        try:
            async for response in call:
                event = event_from_proto(response)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def converse(
        self,
        session_id: str,
        *,
        tool_handler: AsyncToolHandler | None = None,
        system_prompt: str = "",
        context: Mapping[str, Any] | None = None,
        model: str = "",
        tools: Iterable[ToolDefinition | Mapping[str, Any]] = (),
        labels: Mapping[str, str] | None = None,
        max_context_tokens: int = 0,
        timeout: float | None = None,
    ) -> AsyncConversation:
        """Opens a Converse stream on the session and waits for ``opened``. Use the result as
        an async context manager; ``tool_handler`` answers client-side tool calls."""
        call = self._interact.Converse(metadata=self._metadata, timeout=timeout)
        conversation = AsyncConversation(call, tool_handler)
        await conversation._open(
            _requests.converse_open(session_id, system_prompt, context, model, tools, labels, max_context_tokens)
        )
        return conversation

    # Tools

    async def list_tools(self, session_id: str = "") -> ToolList:
        """Server-side tools, plus the session's own tools when ``session_id`` is given."""
        response = await self._call(self._tools.ListTools, tool_pb2.ListToolsRequest(session_id=session_id))
        return ToolList(
            [ToolDefinition.from_proto(t) for t in response.tools],
            [ToolDefinition.from_proto(t) for t in response.session_tools],
        )

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, session_id: str = ""
    ) -> ToolOutput:
        """Runs a server-side tool directly. A tool that ran and failed has ``is_error``."""
        request = _requests.call_tool(name, arguments, session_id)
        return ToolOutput.from_proto(await self._call(self._tools.CallTool, request))


class AsyncConversation:
    """One Converse stream, asyncio flavour: ``send`` is an async iterator of a turn's events,
    ``ask`` returns its result; a tool handler continues paused turns automatically."""

    session: Session
    session_created: bool

    def __init__(self, call: Any, tool_handler: AsyncToolHandler | None) -> None:
        self._call = call
        self._tool_handler = tool_handler
        self._closed = False

    async def _open(self, frame: interact_pb2.ConverseRequest) -> None:
        await self._write(frame)
        first = await self._next()
        if isinstance(first, TurnFailed):
            self._call.cancel()
            raise ContextdError(first.code, first.message)
        if not isinstance(first, Opened):
            self._call.cancel()
            raise ContextdError(grpc.StatusCode.INTERNAL, f"expected opened, got {first!r}")
        self.session = first.session
        self.session_created = first.session_created

    async def _write(self, frame: interact_pb2.ConverseRequest) -> None:
        try:
            await self._call.write(frame)
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None

    async def _next(self) -> Event:
        while True:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as error:
                raise ContextdError.from_rpc_error(error) from None
            if response is grpc.aio.EOF:
                code = await self._call.code()
                details = await self._call.details()
                if code != grpc.StatusCode.OK:
                    raise ContextdError(code, details or "")
                raise ContextdError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
            event = event_from_proto(response)
            if event is not None:
                return event

    async def _turn(self) -> AsyncIterator[Event]:
        while True:
            event = await self._next()
            yield event
            if isinstance(event, TurnFailed):
                return
            if isinstance(event, TurnCompleted):
                result = event.result
                if self._tool_handler is None or not result.needs_tool_results:
                    return
                answers = await run_tool_handler(self._tool_handler, result.tool_calls)
                await self._write(_requests.converse_tool_results(answers))

    async def send(self, message: str, *, context: Mapping[str, Any] | None = None) -> AsyncIterator[Event]:
        """Sends a user message and yields the turn's events up to the last TurnCompleted (or
        a TurnFailed)."""
        await self._write(_requests.converse_message(message, context))
        async for event in self._turn():
            yield event

    async def send_tool_results(self, results: Iterable[ToolResult]) -> AsyncIterator[Event]:
        """Continues a paused turn with results for its pending calls; yields its events."""
        await self._write(_requests.converse_tool_results(results))
        async for event in self._turn():
            yield event

    async def ask(self, message: str, *, context: Mapping[str, Any] | None = None) -> TurnResult:
        """Sends a user message and returns the turn's final result; a failed frame raises."""
        result = None
        async for event in self.send(message, context=context):
            if isinstance(event, TurnFailed):
                raise ContextdError(event.code, event.message)
            if isinstance(event, TurnCompleted):
                result = event.result
        if result is None:
            raise ContextdError(grpc.StatusCode.INTERNAL, "the turn ended without a result")
        return result

    async def cancel(self) -> None:
        """Cancels the running turn (it ends with FinishReason.CANCELLED, nothing stored)."""
        await self._write(_requests.converse_cancel())

    async def close(self) -> None:
        """Half-closes the stream and waits for the server to end it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call.done_writing()
            while await self._call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        code = await self._call.code()
        if code != grpc.StatusCode.OK:
            raise ContextdError(code, await self._call.details() or "")

    async def __aenter__(self) -> AsyncConversation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.close()
        else:
            self._closed = True
            self._call.cancel()
