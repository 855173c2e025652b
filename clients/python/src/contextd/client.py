"""The blocking client: one gRPC channel, one method per contextd operation."""

from __future__ import annotations

import queue
import time
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping, Sequence

import grpc

from contextd import _admin, _requests
from contextd.errors import ContextdError
from contextd.types import (
    Event,
    FinishReason,
    Message,
    Opened,
    Page,
    Session,
    ToolCall,
    ToolDefinition,
    WindowSettings,
    ToolHandler,
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

DEFAULT_TARGET = "127.0.0.1:61900"


def run_tool_handler(handler: ToolHandler, calls: Sequence[ToolCall]) -> list[ToolResult]:
    """Runs the handler for each call; an exception becomes an ``is_error`` result."""
    answers = []
    for call in calls:
        try:
            answers.append(tool_result_from(call, handler(call)))
        except Exception as error:  # the tool failed: the model is told, the turn goes on
            answers.append(tool_error_from(call, error))
    return answers


class Client:
    """A blocking contextd client.

    >>> with Client("127.0.0.1:61900") as client:          # doctest: +SKIP
    ...     reply = client.interact("alpha", "Hello!", context={"user_id": "john"})
    ...     print(reply.response, reply.updated_context)
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
        """Connects to ``target`` (host:port): plaintext unless ``tls``, ``credentials``,
        ``ca_cert`` or ``client_cert`` is given. ``ca_cert`` is the CA that issued the server's
        certificate (PEM bytes, or a file path as str or Path; default: the system's roots);
        ``client_cert`` and ``client_key`` (the same forms) are shown to a server that
        requires client certificates (mTLS); ``server_name`` is the name the server's
        certificate must carry when it is not the target's host;
        ``token`` is the API key (``ctxd_…``), sent as ``authorization: Bearer <token>`` on
        every call; ``timeout`` is
        the default deadline in seconds of unary calls. ``retries`` > 0 repeats the calls
        that are safe to repeat (get, list, preview, list_models, list_tools) that many times
        more when they fail with UNAVAILABLE, waiting ``retry_backoff`` seconds, doubled after
        each attempt (with jitter, at most 5 s); turns and changes are never repeated."""
        secure = _requests.channel_credentials(tls, credentials, ca_cert, client_cert, client_key)
        if server_name is not None:
            options = [*options, ("grpc.ssl_target_name_override", server_name)]
        if secure is None:
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, secure, options=list(options))
        self._metadata = _requests.metadata(token, metadata)
        self._timeout = timeout
        self._retries = retries
        self._retry_backoff = retry_backoff
        self._sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self._interact = interact_pb2_grpc.InteractServiceStub(self._channel)
        self._tools = tool_pb2_grpc.ToolServiceStub(self._channel)
        self._models = model_pb2_grpc.ModelServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, *, safe: bool = False) -> Any:
        attempt = 0
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.RpcError as error:
                failure = ContextdError.from_rpc_error(error)
            if not (safe and failure.code is grpc.StatusCode.UNAVAILABLE and attempt < self._retries):
                raise failure
            time.sleep(_requests.retry_delay(self._retry_backoff, attempt))
            attempt += 1

    # Sessions

    def create_session(
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
        return Session.from_proto(self._call(self._sessions.CreateSession, request).session)

    def get_session(self, session_id: str) -> Session:
        """The session, with its context, state and pending tool calls."""
        request = session_pb2.GetSessionRequest(session_id=session_id)
        return Session.from_proto(self._call(self._sessions.GetSession, request, safe=True).session)

    def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> Page:
        """One page of sessions ordered by id; ``items`` are Session values."""
        request = session_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
        response = self._call(self._sessions.ListSessions, request, safe=True)
        return Page([Session.from_proto(s) for s in response.sessions], response.next_page_token)

    def iter_sessions(self, *, page_size: int = 0) -> Iterator[Session]:
        """Every session, page by page."""
        token = ""
        while True:
            page = self.list_sessions(page_size=page_size, page_token=token)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    def update_session(
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
        the other arguments replace what they name when given. ``reset_server_tools=True``
        forgets the session's own ``server_tools`` so it is offered the server's
        ``engine.default_server_tools`` again (INVALID_ARGUMENT together with ``server_tools``)."""
        request = _requests.update_session(
            session_id, context, system_prompt, tools, model, max_context_tokens, labels, remove_labels,
            etag=etag, expire_time=expire_time, window=window, server_tools=server_tools,
            reset_server_tools=reset_server_tools,
        )
        return Session.from_proto(self._call(self._sessions.UpdateSession, request).session)

    def delete_session(self, session_id: str, *, etag: str | None = None) -> int:
        """Deletes a session; returns how many messages it had. With ``etag``, only while the
        session's etag is still that one (ABORTED otherwise)."""
        request = session_pb2.DeleteSessionRequest(session_id=session_id, etag=etag or "")
        deleted: int = self._call(self._sessions.DeleteSession, request).deleted_messages
        return deleted

    def list_messages(self, session_id: str, *, page_size: int = 0, page_token: str = "") -> Page:
        """One page of the session's history, oldest first; ``items`` are Message values."""
        request = session_pb2.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        response = self._call(self._sessions.ListMessages, request, safe=True)
        return Page([Message.from_proto(m) for m in response.messages], response.next_page_token)

    def preview_context(
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
        result: session_pb2.PreviewContextResponse = self._call(
            self._sessions.PreviewContext, request, safe=not summarize
        )
        return result

    # Turns

    def interact(
        self,
        session_id: str,
        message: str = "",
        *,
        context: Mapping[str, Any] | None = None,
        tool_results: Iterable[ToolResult] = (),
        tool_handler: ToolHandler | None = None,
        idempotency_key: str | None = None,
        abandon_tool_calls: bool = False,
    ) -> TurnResult:
        """Runs a turn. With ``tool_handler``, client-side tool calls are answered by it and the
        turn continued until it finishes; without, a paused turn is returned as is
        (``needs_tool_results``) and you send ``tool_results`` yourself.

        ``idempotency_key`` (a fresh UUID per new message, the same for its retries) makes the
        turn safe to repeat: a repeat within the server's ``limits.idempotency_window`` gets the
        first attempt's outcome instead of a second turn, and with ``retries`` > 0 the call is
        retried on UNAVAILABLE like the read calls.

        ``abandon_tool_calls=True`` (with no message and no tool results) abandons the turn
        paused for client-side tools instead: every pending call gets the error result
        "cancelled by the client", the turn ends with FinishReason.CANCELLED without another
        model step, and the session is idle again. INVALID_ARGUMENT when nothing is pending."""
        request = _requests.interact(
            session_id, message, context, tool_results, idempotency_key, abandon_tool_calls
        )
        keyed = idempotency_key is not None
        result = TurnResult.from_proto(self._call(self._interact.Interact, request, safe=keyed))
        while tool_handler is not None and result.needs_tool_results:
            answers = run_tool_handler(tool_handler, result.tool_calls)
            request = _requests.interact(session_id, "", None, answers)
            result = TurnResult.from_proto(self._call(self._interact.Interact, request))
        return result

    def stream_response(
        self,
        session_id: str,
        message: str = "",
        *,
        context: Mapping[str, Any] | None = None,
        tool_results: Iterable[ToolResult] = (),
        timeout: float | None = None,
        idempotency_key: str | None = None,
        abandon_tool_calls: bool = False,
    ) -> Iterator[Event]:
        """Runs a turn and yields its events: TurnStarted, TextDelta…, ToolCallRequested /
        ToolRan, and TurnCompleted last. Leaving the loop early cancels the call.
        ``abandon_tool_calls=True`` abandons the paused turn, as ``interact`` describes."""
        request = _requests.stream_response(
            session_id, message, context, tool_results, idempotency_key, abandon_tool_calls
        )
        call = self._interact.StreamResponse(request, metadata=self._metadata, timeout=timeout)
        try:
            for response in call:
                event = event_from_proto(response)
                if event is not None:
                    yield event
        except grpc.RpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def converse(
        self,
        session_id: str,
        *,
        tool_handler: ToolHandler | None = None,
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
    ) -> Conversation:
        """Opens a Converse stream on the session (created with the given fields if missing).
        Use it as a context manager; ``tool_handler`` answers client-side tool calls."""
        open_frame = _requests.converse_open(
            session_id, system_prompt, context, model, tools, labels, max_context_tokens, expire_time, window,
            server_tools,
        )
        return Conversation(self._interact, self._metadata, open_frame, tool_handler, timeout)

    # Models

    def list_models(self) -> model_pb2.ListModelsResponse:
        """The models sessions may name and the configured provider backends (the generated
        message: ``models``, ``backends``, ``default_model``)."""
        result: model_pb2.ListModelsResponse = self._call(self._models.ListModels, model_pb2.ListModelsRequest(), safe=True)
        return result

    # Tools

    def list_tools(self, session_id: str = "") -> ToolList:
        """Server-side tools, plus the session's own tools when ``session_id`` is given."""
        response = self._call(self._tools.ListTools, tool_pb2.ListToolsRequest(session_id=session_id), safe=True)
        return ToolList(
            [ToolDefinition.from_proto(t) for t in response.tools],
            [ToolDefinition.from_proto(t) for t in response.session_tools],
            list(response.offered_tools),
        )

    def call_tool(self, name: str, arguments: Mapping[str, Any] | None = None, *, session_id: str = "") -> ToolOutput:
        """Runs a server-side tool directly. A tool that ran and failed has ``is_error``."""
        request = _requests.call_tool(name, arguments, session_id)
        return ToolOutput.from_proto(self._call(self._tools.CallTool, request))

    # Keys and tenants (AdminService: an admin key, or a server with authentication off)

    def create_key(
        self,
        tenant_id: str,
        *,
        role: _admin.Role = "user",
        label: str = "",
        ttl: timedelta | float | None = None,
    ) -> admin_pb2.CreateKeyResponse:
        """Makes an API key for ``tenant_id``; ``ttl`` (a timedelta or seconds) limits how long
        it works. The response's ``secret`` is the key itself, shown only here: pass it as
        ``token=`` to a Client. ``key`` is what ``list_keys`` will show of it."""
        request = _admin.create_key(tenant_id, role, label, ttl)
        result: admin_pb2.CreateKeyResponse = self._call(self._admin.CreateKey, request)
        return result

    def list_keys(self, tenant_id: str | None = None) -> list[admin_pb2.ApiKey]:
        """Keys (never their secrets), of one tenant or of all, ordered by tenant and creation."""
        response = self._call(self._admin.ListKeys, _admin.list_keys(tenant_id), safe=True)
        return list(response.keys)

    def revoke_key(self, key_id: str) -> admin_pb2.ApiKey:
        """Revokes a key by its id (as ``list_keys`` shows it); returns the revoked key."""
        key: admin_pb2.ApiKey = self._call(self._admin.RevokeKey, _admin.revoke_key(key_id)).key
        return key

    def list_tenants(self) -> list[admin_pb2.TenantUsage]:
        """Tenants with what they store (every one for an admin, a user key's own otherwise)."""
        response = self._call(self._admin.ListTenants, admin_pb2.ListTenantsRequest(), safe=True)
        return list(response.tenants)

    def export_tenant(self, tenant_id: str) -> Iterator[admin_pb2.ExportTenantResponse]:
        """Yields all of a tenant's data: each session (``record.session``), followed by its
        history oldest first (``record.message``). Leaving the loop early cancels the call."""
        call = self._admin.ExportTenant(_admin.export_tenant(tenant_id), metadata=self._metadata, timeout=self._timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise ContextdError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def delete_tenant(self, tenant_id: str) -> admin_pb2.DeleteTenantResponse:
        """Deletes all of a tenant's sessions, histories and keys; returns the counts."""
        result: admin_pb2.DeleteTenantResponse = self._call(self._admin.DeleteTenant, _admin.delete_tenant(tenant_id))
        return result


_END = object()


class Conversation:
    """One Converse stream: many turns on one session, one at a time.

    ``send`` yields a turn's events; ``ask`` returns its result. With a tool handler, a turn
    that pauses for client-side tools is continued automatically."""

    def __init__(
        self,
        stub: interact_pb2_grpc.InteractServiceStub,
        metadata: _requests.Metadata,
        open_frame: interact_pb2.ConverseRequest,
        tool_handler: ToolHandler | None,
        timeout: float | None,
    ) -> None:
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._tool_handler = tool_handler
        self._closed = False
        self._running = False  # a turn was started whose last event is not read yet
        self._paused = False  # the session waits for tool results, as far as the events read tell
        self._turns = 0
        self._call = stub.Converse(iter(self._outgoing.get, _END), metadata=metadata, timeout=timeout)
        self._outgoing.put(open_frame)
        first = self._next()
        if isinstance(first, TurnFailed):
            self._call.cancel()
            raise ContextdError(first.code, first.message)
        if not isinstance(first, Opened):
            self._call.cancel()
            raise ContextdError(grpc.StatusCode.INTERNAL, f"expected opened, got {first!r}")
        self.session: Session = first.session
        self.session_created: bool = first.session_created
        self._paused = bool(first.session.pending_tool_calls)

    def _next(self) -> Event:
        while True:
            try:
                response = next(self._call)
            except StopIteration:
                raise ContextdError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream") from None
            except grpc.RpcError as error:
                raise ContextdError.from_rpc_error(error) from None
            event = event_from_proto(response)
            if event is not None:
                return event

    def _turn(self, turn: int) -> Iterator[Event]:
        try:
            while True:
                event = self._next()
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
                    answers = run_tool_handler(self._tool_handler, event.result.tool_calls)  # type: ignore[arg-type]
                    self._outgoing.put(_requests.converse_tool_results(answers))
        finally:
            # Left early (break, return, an exception): end the turn on the server.
            if self._running and turn == self._turns and not self._closed:
                self._abandon()

    def _abandon(self) -> None:
        """Cancels the running turn and reads the rest of it, so that the next turn's events
        are its own. A turn that paused before the cancel reached it (its events unread) is
        abandoned by the cancel; a turn whose pause was read is not running and stays paused."""
        self._running = False
        self._outgoing.put(_requests.converse_cancel())
        while True:
            event = self._next()
            if isinstance(event, TurnCompleted) and event.result.finish_reason is not FinishReason.CANCELLED:
                self._paused = False  # finished, or paused and so abandoned by the cancel
            if _ends_turn(event):
                break
        # The cancel is answered by the `completed` above, or, when the turn had ended
        # before it arrived, by a FAILED_PRECONDITION error still to come. An empty frame,
        # answered in order with INVALID_ARGUMENT, marks where those answers end.
        self._outgoing.put(interact_pb2.ConverseRequest())
        while not _is_barrier(self._next()):
            pass

    def send(
        self, message: str, *, context: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> Iterator[Event]:
        """Sends a user message and yields the turn's events up to the last TurnCompleted (or a
        TurnFailed). Leaving the loop early cancels the turn (nothing of it is stored); so does
        sending the next message before this turn's events are read."""
        if self._running:
            self._abandon()
        self._turns += 1
        self._running = True
        self._outgoing.put(_requests.converse_message(message, context, idempotency_key))
        return self._turn(self._turns)

    def send_tool_results(self, results: Iterable[ToolResult]) -> Iterator[Event]:
        """Continues a paused turn with results for its pending calls; yields its events."""
        if self._running:
            self._abandon()
        self._turns += 1
        self._running = True
        self._outgoing.put(_requests.converse_tool_results(results))
        return self._turn(self._turns)

    def ask(
        self, message: str, *, context: Mapping[str, Any] | None = None, idempotency_key: str | None = None
    ) -> TurnResult:
        """Sends a user message and returns the turn's final result; a failed frame raises."""
        return _final(self.send(message, context=context, idempotency_key=idempotency_key))

    def cancel(self) -> None:
        """Cancels the running turn (it ends with FinishReason.CANCELLED, nothing stored).
        While the session waits for tool results (a paused TurnCompleted was read and not
        answered), abandons the paused turn instead, as ``abandon_tool_calls`` does, and
        returns once it has ended."""
        if not self._running and self._paused:
            self.abandon_tool_calls()
            return
        self._outgoing.put(_requests.converse_cancel())

    def abandon_tool_calls(self) -> TurnResult:
        """Abandons the turn paused for tool results: every pending call gets the error
        result "cancelled by the client", stored with its call; the turn ends with
        FinishReason.CANCELLED without another model step and the session is idle again.
        Returns that result; raises FAILED_PRECONDITION when nothing is paused."""
        if self._running:
            self._abandon()
        self._turns += 1
        self._running = True
        self._outgoing.put(_requests.converse_cancel())
        result = _final(self._turn(self._turns))
        self._paused = False
        return result

    def _note(self, result: TurnResult) -> None:
        """Follows the session's pause from a turn's result. A cancelled continuation leaves
        the session as it was; an abandon clears the pause itself."""
        if result.finish_reason is not FinishReason.CANCELLED:
            self._paused = result.needs_tool_results and self._tool_handler is None

    def close(self) -> None:
        """Half-closes the stream and waits for the server to end it."""
        if self._closed:
            return
        self._closed = True
        self._outgoing.put(_END)
        try:
            for _ in self._call:
                pass
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise ContextdError.from_rpc_error(error) from None

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._closed = True
            self._outgoing.put(_END)
            self._call.cancel()


def _ends_turn(event: Event) -> bool:
    """True for the last event of a turn's frame: its `completed` (final, paused or
    cancelled) or an error."""
    return isinstance(event, (TurnCompleted, TurnFailed))


def _is_barrier(event: Event) -> bool:
    """True for the answer to the empty frame that ends an abandoned turn's read."""
    return isinstance(event, TurnFailed) and event.code == grpc.StatusCode.INVALID_ARGUMENT and not event.turn_id


def _final(events: Iterable[Event]) -> TurnResult:
    result = None
    for event in events:
        if isinstance(event, TurnFailed):
            raise ContextdError(event.code, event.message)
        if isinstance(event, TurnCompleted):
            result = event.result
    if result is None:
        raise ContextdError(grpc.StatusCode.INTERNAL, "the turn ended without a result")
    return result
