"""The asyncio client: the same operations as Client, awaited, with async iterators for streams."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Generator, Iterable, Mapping, Sequence

import grpc
import grpc.aio

from contextd import _admin, _requests
from contextd.client import DEFAULT_TARGET, _ends_turn, _is_barrier
from contextd.errors import ContextdError
from contextd.types import (
    AsyncToolHandler,
    Event,
    FinishReason,
    Message,
    Opened,
    Page,
    Session,
    ToolCall,
    ToolDefinition,
    WindowSettings,
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
from contextd.v1 import admin_pb2, admin_pb2_grpc, interact_pb2, interact_pb2_grpc, model_pb2, model_pb2_grpc, session_pb2, session_pb2_grpc, tool_pb2, tool_pb2_grpc


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
        ca_cert: _requests.Pem | None = None,
        client_cert: _requests.Pem | None = None,
        client_key: _requests.Pem | None = None,
        server_name: str | None = None,
        token: str | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        timeout: float | None = None,
        options: Sequence[tuple[str, Any]] = (),
        retries: int = 0,
        retry_backoff: float = 0.1,
    ) -> None:
        """Same arguments as Client. Create it inside a running event loop."""
        secure = _requests.channel_credentials(tls, credentials, ca_cert, client_cert, client_key)
        if server_name is not None:
            options = [*options, ("grpc.ssl_target_name_override", server_name)]
        if secure is None:
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(target, secure, options=list(options))
        self._metadata = _requests.metadata(token, metadata)
        self._timeout = timeout
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self._interact = interact_pb2_grpc.InteractServiceStub(self._channel)
        self._tools = tool_pb2_grpc.ToolServiceStub(self._channel)
        self._models = model_pb2_grpc.ModelServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, *, safe: bool = False) -> Any:
        attempt = 0
        while True:
            try:
                return await method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                failure = ContextdError.from_rpc_error(error)
            if not (safe and failure.code is grpc.StatusCode.UNAVAILABLE and attempt < self._retries):
                raise failure
            await asyncio.sleep(_requests.retry_delay(self._retry_backoff, attempt))
            attempt += 1

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
        expire_time: datetime | None = None,
        window: WindowSettings | None = None,
        server_tools: Iterable[str] | None = None,
    ) -> Session:
        """Creates a session (an empty id lets the server choose one)."""
        request = _requests.create_session(
            session_id, system_prompt, context, model, tools, labels, max_context_tokens, expire_time, window,
            server_tools,
        )
        return Session.from_proto((await self._call(self._sessions.CreateSession, request)).session)

    async def get_session(self, session_id: str) -> Session:
        """The session, with its context, state and pending tool calls."""
        request = session_pb2.GetSessionRequest(session_id=session_id)
        return Session.from_proto((await self._call(self._sessions.GetSession, request, safe=True)).session)

    async def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> Page:
        """One page of sessions ordered by id; ``items`` are Session values."""
        request = session_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
        response = await self._call(self._sessions.ListSessions, request, safe=True)
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
        expire_time: datetime | None = None,
        window: WindowSettings | None = None,
        server_tools: Iterable[str] | None = None,
        reset_server_tools: bool = False,
        labels: Mapping[str, str] | None = None,
        remove_labels: Iterable[str] = (),
        etag: str | None = None,
    ) -> Session:
        """Changes a session: ``context`` is a JSON merge patch (``None`` values delete keys);
        ``reset_server_tools=True`` goes back to the server's default server-side tools."""
        request = _requests.update_session(
            session_id, context, system_prompt, tools, model, max_context_tokens, labels, remove_labels,
            etag=etag, expire_time=expire_time, window=window, server_tools=server_tools,
            reset_server_tools=reset_server_tools,
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
        response = await self._call(self._sessions.ListMessages, request, safe=True)
        return Page([Message.from_proto(m) for m in response.messages], response.next_page_token)

    async def preview_context(
        self,
        session_id: str,
        message: str = "",
        *,
        context: Mapping[str, Any] | None = None,
        summarize: bool = False,
    ) -> session_pb2.PreviewContextResponse:
        """Exactly what the model would see for ``message`` now (the generated message).

        A summary the turn would write first shows as a ``CONTEXT_ENTRY_KIND_PENDING_SUMMARY``
        entry; with ``summarize=True`` it is written now (a summarizer model call) and kept for
        the next turn unless the session changed meanwhile (``summary_kept`` says which).
        """
        request = session_pb2.PreviewContextRequest(session_id=session_id, message=message, summarize=summarize)
        if context is not None:
            request.context.CopyFrom(dict_to_struct(context))
        # Only a preview that writes nothing is repeated on UNAVAILABLE.
        result: session_pb2.PreviewContextResponse = await self._call(
            self._sessions.PreviewContext, request, safe=not summarize
        )
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
        idempotency_key: str | None = None,
        abandon_tool_calls: bool = False,
    ) -> TurnResult:
        """Runs a turn; with ``tool_handler`` (sync or async), client-side tool calls are
        answered by it and the turn continued until it finishes.

        ``idempotency_key`` (a fresh UUID per new message, the same for its retries) makes the
        turn safe to repeat: a repeat within the server's ``limits.idempotency_window`` gets the
        first attempt's outcome instead of a second turn, and with ``retries`` > 0 the call is
        retried on UNAVAILABLE like the read calls.

        ``abandon_tool_calls=True`` abandons the turn paused for client-side tools, as
        ``Client.interact`` describes."""
        request = _requests.interact(
            session_id, message, context, tool_results, idempotency_key, abandon_tool_calls
        )
        keyed = idempotency_key is not None
        result = TurnResult.from_proto(await self._call(self._interact.Interact, request, safe=keyed))
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
        idempotency_key: str | None = None,
        abandon_tool_calls: bool = False,
    ) -> AsyncIterator[Event]:
        """Runs a turn and yields its events, TurnCompleted last. Leaving early cancels the call."""
        request = _requests.stream_response(
            session_id, message, context, tool_results, idempotency_key, abandon_tool_calls
        )
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

    def converse(
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
        expire_time: datetime | None = None,
        window: WindowSettings | None = None,
        server_tools: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> ConverseOpening:
        """Opens a Converse stream on the session and waits for ``opened``:
        ``async with client.converse(...) as conv`` (closed at the end of the block), or
        ``conv = await client.converse(...)``. ``tool_handler`` answers client-side tool
        calls."""
        frame = _requests.converse_open(
            session_id, system_prompt, context, model, tools, labels, max_context_tokens, expire_time, window,
            server_tools,
        )
        return ConverseOpening(self._interact, self._metadata, frame, tool_handler, timeout)

    # Models

    async def list_models(self) -> model_pb2.ListModelsResponse:
        """The models sessions may name and the configured provider backends (the generated
        message: ``models``, ``backends``, ``default_model``)."""
        result: model_pb2.ListModelsResponse = await self._call(self._models.ListModels, model_pb2.ListModelsRequest(), safe=True)
        return result

    # Keys and tenants (AdminService: an admin key, or a server with authentication off)

    async def create_key(
        self,
        tenant_id: str,
        *,
        role: _admin.Role = "user",
        label: str = "",
        ttl: timedelta | float | None = None,
    ) -> admin_pb2.CreateKeyResponse:
        """Makes an API key for ``tenant_id``; see Client.create_key."""
        request = _admin.create_key(tenant_id, role, label, ttl)
        result: admin_pb2.CreateKeyResponse = await self._call(self._admin.CreateKey, request)
        return result

    async def list_keys(self, tenant_id: str | None = None) -> list[admin_pb2.ApiKey]:
        """Keys (never their secrets), of one tenant or of all, ordered by tenant and creation."""
        response = await self._call(self._admin.ListKeys, _admin.list_keys(tenant_id), safe=True)
        return list(response.keys)

    async def revoke_key(self, key_id: str) -> admin_pb2.ApiKey:
        """Revokes a key by its id (as ``list_keys`` shows it); returns the revoked key."""
        key: admin_pb2.ApiKey = (await self._call(self._admin.RevokeKey, _admin.revoke_key(key_id))).key
        return key

    async def list_tenants(self) -> list[admin_pb2.TenantUsage]:
        """Tenants with what they store (every one for an admin, a user key's own otherwise)."""
        response = await self._call(self._admin.ListTenants, admin_pb2.ListTenantsRequest(), safe=True)
        return list(response.tenants)

    async def export_tenant(self, tenant_id: str) -> AsyncIterator[admin_pb2.ExportTenantResponse]:
        """Yields all of a tenant's data: each session, followed by its history oldest first.
        Leaving the loop early cancels the call."""
        call = self._admin.ExportTenant(_admin.export_tenant(tenant_id), metadata=self._metadata, timeout=self._timeout)
        try:
            async for record in call:
                yield record
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def delete_tenant(self, tenant_id: str) -> admin_pb2.DeleteTenantResponse:
        """Deletes all of a tenant's sessions, histories and keys; returns the counts."""
        result: admin_pb2.DeleteTenantResponse = await self._call(
            self._admin.DeleteTenant, _admin.delete_tenant(tenant_id)
        )
        return result


    # Tools

    async def list_tools(self, session_id: str = "") -> ToolList:
        """Server-side tools, plus the session's own tools when ``session_id`` is given."""
        response = await self._call(self._tools.ListTools, tool_pb2.ListToolsRequest(session_id=session_id), safe=True)
        return ToolList(
            [ToolDefinition.from_proto(t) for t in response.tools],
            [ToolDefinition.from_proto(t) for t in response.session_tools],
            list(response.offered_tools),
        )

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, session_id: str = ""
    ) -> ToolOutput:
        """Runs a server-side tool directly. A tool that ran and failed has ``is_error``."""
        request = _requests.call_tool(name, arguments, session_id)
        return ToolOutput.from_proto(await self._call(self._tools.CallTool, request))


class ConverseOpening:
    """A Converse stream being opened: await it for the AsyncConversation, or use it directly
    as an async context manager."""

    def __init__(
        self,
        stub: Any,
        metadata: _requests.Metadata,
        frame: interact_pb2.ConverseRequest,
        tool_handler: AsyncToolHandler | None,
        timeout: float | None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._frame = frame
        self._tool_handler = tool_handler
        self._timeout = timeout
        self._conversation: AsyncConversation | None = None

    async def _open(self) -> AsyncConversation:
        call = self._stub.Converse(metadata=self._metadata, timeout=self._timeout)
        conversation = AsyncConversation(call, self._tool_handler)
        await conversation._open(self._frame)
        return conversation

    def __await__(self) -> Generator[Any, None, AsyncConversation]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncConversation:
        self._conversation = await self._open()
        return self._conversation

    async def __aexit__(self, *exc: Any) -> None:
        assert self._conversation is not None
        await self._conversation.__aexit__(*exc)


class AsyncConversation:
    """One Converse stream, asyncio flavour: ``send`` is an async iterator of a turn's events,
    ``ask`` returns its result; a tool handler continues paused turns automatically."""

    session: Session
    session_created: bool

    def __init__(self, call: Any, tool_handler: AsyncToolHandler | None) -> None:
        self._call = call
        self._tool_handler = tool_handler
        self._closed = False
        self._running = False  # a turn was started whose last event is not read yet
        self._paused = False  # the session waits for tool results, as far as the events read tell
        self._turns = 0
        # One task reads the stream: a caller's read that is cancelled (a task cancelled
        # mid-turn) must not cancel the whole call, as cancelling grpc.aio's read() does.
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read_all())

    async def _read_all(self) -> None:
        try:
            while True:
                response = await self._call.read()
                await self._inbox.put(response)
                if response is grpc.aio.EOF:
                    return
        except grpc.aio.AioRpcError as error:
            await self._inbox.put(error)
        except asyncio.CancelledError:
            await self._inbox.put(grpc.aio.EOF)

    async def _open(self, frame: interact_pb2.ConverseRequest) -> None:
        await self._write(frame)
        first = await self._next()
        if isinstance(first, TurnFailed):
            self._call.cancel()
            self._reader.cancel()
            raise ContextdError(first.code, first.message)
        if not isinstance(first, Opened):
            self._call.cancel()
            self._reader.cancel()
            raise ContextdError(grpc.StatusCode.INTERNAL, f"expected opened, got {first!r}")
        self.session = first.session
        self.session_created = first.session_created
        self._paused = bool(first.session.pending_tool_calls)

    async def _write(self, frame: interact_pb2.ConverseRequest) -> None:
        try:
            await self._call.write(frame)
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None

    async def _next(self) -> Event:
        while True:
            response = await self._inbox.get()
            if isinstance(response, grpc.aio.AioRpcError):
                self._inbox.put_nowait(response)  # every later read fails the same way
                raise ContextdError.from_rpc_error(response) from None
            if response is grpc.aio.EOF:
                self._inbox.put_nowait(response)
                code = await self._call.code()
                details = await self._call.details()
                if code != grpc.StatusCode.OK:
                    raise ContextdError(code, details or "")
                raise ContextdError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
            event = event_from_proto(response)
            if event is not None:
                return event

    async def _turn(self, turn: int) -> AsyncIterator[Event]:
        try:
            while True:
                event = await self._next()
                if isinstance(event, TurnCompleted):
                    self._note(event.result)
                if isinstance(event, TurnFailed) or (
                    isinstance(event, TurnCompleted)
                    and (self._tool_handler is None or not event.result.needs_tool_results)
                ):
                    self._running = False
                yield event
                if not self._running:
                    return
                if isinstance(event, TurnCompleted):
                    answers = await run_tool_handler(self._tool_handler, event.result.tool_calls)  # type: ignore[arg-type]
                    await self._write(_requests.converse_tool_results(answers))
        finally:
            # Left early (break, return, an exception, a cancelled task): end the turn on the
            # server. An async generator left by `break` is closed later by the event loop;
            # the next send() does it first, and then this turn is no longer the current one.
            if self._running and turn == self._turns and not self._closed:
                await self._abandon()

    async def _abandon(self) -> None:
        """Cancels the running turn and reads the rest of it, so that the next turn's events
        are its own. A turn that paused before the cancel reached it (its events unread) is
        abandoned by the cancel; a turn whose pause was read is not running and stays paused."""
        self._running = False
        await self._write(_requests.converse_cancel())
        while True:
            event = await self._next()
            if isinstance(event, TurnCompleted) and event.result.finish_reason is not FinishReason.CANCELLED:
                self._paused = False  # finished, or paused and so abandoned by the cancel
            if _ends_turn(event):
                break
        # See Conversation._abandon: the empty frame's INVALID_ARGUMENT answer comes after
        # any answer to the cancel.
        await self._write(interact_pb2.ConverseRequest())
        while not _is_barrier(await self._next()):
            pass

    async def send(
        self, message: str, *, context: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> AsyncIterator[Event]:
        """Sends a user message and yields the turn's events up to the last TurnCompleted (or
        a TurnFailed). Leaving the loop early cancels the turn (nothing of it is stored); so
        does sending the next message before this turn's events are read."""
        if self._running:
            await self._abandon()
        self._turns += 1
        self._running = True
        await self._write(_requests.converse_message(message, context, idempotency_key))
        async for event in self._turn(self._turns):
            yield event

    async def send_tool_results(self, results: Iterable[ToolResult]) -> AsyncIterator[Event]:
        """Continues a paused turn with results for its pending calls; yields its events."""
        if self._running:
            await self._abandon()
        self._turns += 1
        self._running = True
        await self._write(_requests.converse_tool_results(results))
        async for event in self._turn(self._turns):
            yield event

    async def ask(
        self, message: str, *, context: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> TurnResult:
        """Sends a user message and returns the turn's final result; a failed frame raises."""
        result = None
        async for event in self.send(message, context=context, idempotency_key=idempotency_key):
            if isinstance(event, TurnFailed):
                raise ContextdError(event.code, event.message)
            if isinstance(event, TurnCompleted):
                result = event.result
        if result is None:
            raise ContextdError(grpc.StatusCode.INTERNAL, "the turn ended without a result")
        return result

    async def cancel(self) -> None:
        """Cancels the running turn (it ends with FinishReason.CANCELLED, nothing stored).
        While the session waits for tool results (a paused TurnCompleted was read and not
        answered), abandons the paused turn instead, as ``abandon_tool_calls`` does, and
        returns once it has ended."""
        if not self._running and self._paused:
            await self.abandon_tool_calls()
            return
        await self._write(_requests.converse_cancel())

    async def abandon_tool_calls(self) -> TurnResult:
        """Abandons the turn paused for tool results: every pending call gets the error
        result "cancelled by the client", stored with its call; the turn ends with
        FinishReason.CANCELLED without another model step and the session is idle again.
        Returns that result; raises FAILED_PRECONDITION when nothing is paused."""
        if self._running:
            await self._abandon()
        self._turns += 1
        self._running = True
        await self._write(_requests.converse_cancel())
        result = None
        async for event in self._turn(self._turns):
            if isinstance(event, TurnFailed):
                raise ContextdError(event.code, event.message)
            if isinstance(event, TurnCompleted):
                result = event.result
        self._paused = False
        if result is None:
            raise ContextdError(grpc.StatusCode.INTERNAL, "the turn ended without a result")
        return result

    def _note(self, result: TurnResult) -> None:
        """Follows the session's pause from a turn's result. A cancelled continuation leaves
        the session as it was; an abandon clears the pause itself."""
        if result.finish_reason is not FinishReason.CANCELLED:
            self._paused = result.needs_tool_results and self._tool_handler is None

    async def close(self) -> None:
        """Half-closes the stream and waits for the server to end it."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        while True:
            response = await self._inbox.get()
            if isinstance(response, grpc.aio.AioRpcError):
                raise ContextdError.from_rpc_error(response) from None
            if response is grpc.aio.EOF:
                break
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
            self._reader.cancel()
