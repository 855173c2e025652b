"""The wrapper itself against a live contextd: sync and asyncio clients, tool handlers, errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from contextd import (
    AsyncClient,
    Client,
    ContextdError,
    FinishReason,
    MessageRole,
    SessionState,
    TextDelta,
    ToolCall,
    ToolCallRequested,
    ToolDefinition,
    ToolRan,
    ToolResult,
    TurnCompleted,
    TurnFailed,
    TurnStarted,
    connect,
)
from contextd._requests import metadata

WEATHER = ToolDefinition("get_weather", "Current weather for a city.", {"type": "object"})


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(target: str):
    with Client(target, timeout=30) as c:
        yield c


def test_session_lifecycle(client: Client) -> None:
    sid = fresh("py-crud")
    created = client.create_session(sid, system_prompt="Be brief.", context={"user": {"name": "Ann"}}, labels={"team": "a"})
    assert created.session_id == sid
    assert created.context == {"user": {"name": "Ann"}}
    assert created.state is SessionState.IDLE
    assert created.create_time is not None and created.create_time.tzinfo is not None

    updated = client.update_session(sid, context={"user": {"age": 41}, "tier": "gold"}, labels={"env": "test"}, remove_labels=["team"])
    assert updated.context == {"user": {"name": "Ann", "age": 41}, "tier": "gold"}
    assert isinstance(updated.context["user"]["age"], int)
    assert updated.labels == {"env": "test"}
    assert updated.system_prompt == "Be brief."

    assert client.update_session(sid, context={"tier": None}).context == {"user": {"name": "Ann", "age": 41}}
    assert client.get_session(sid).labels == {"env": "test"}
    assert sid in [s.session_id for s in client.iter_sessions(page_size=2)]

    client.interact(sid, "hello")
    page = client.list_messages(sid, page_size=1)
    assert [m.role for m in page.items] == [MessageRole.USER] and page.next_page_token
    rest = client.list_messages(sid, page_token=page.next_page_token)
    assert [m.role for m in rest.items] == [MessageRole.ASSISTANT]

    assert client.delete_session(sid) == 2
    with pytest.raises(ContextdError) as missing:
        client.get_session(sid)
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert sid in missing.value.message


def test_errors_carry_the_status_code(client: Client) -> None:
    sid = fresh("py-err")
    client.create_session(sid)
    with pytest.raises(ContextdError) as taken:
        client.create_session(sid)
    assert taken.value.code is grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(ContextdError) as bad:
        client.interact("not a valid id!", "hi")
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "session_id" in str(bad.value)
    with pytest.raises(ContextdError) as stream_bad:
        list(client.stream_response(sid, ""))
    assert stream_bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        client.interact(sid, "hi", context=["not", "an", "object"])  # type: ignore[arg-type]


def test_interact_and_stream_agree(client: Client) -> None:
    context = {"user_id": "john_doe", "topic": "environment"}
    unary = client.interact(fresh("py-unary"), "Tell me about climate change.", context=context)
    events = list(client.stream_response(fresh("py-stream"), "Tell me about climate change.", context=context))
    assert isinstance(events[0], TurnStarted) and events[0].session_created
    assert isinstance(events[-1], TurnCompleted)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == events[-1].result.response == unary.response
    assert unary.response == "You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment."
    assert unary.updated_context == context
    assert unary.finish_reason is FinishReason.STOP and unary.usage.output_tokens > 0


def test_leaving_a_stream_early_cancels_it(client: Client) -> None:
    sid = fresh("py-early")
    for event in client.stream_response(sid, "/delay 200 one two three four five"):
        assert isinstance(event, TurnStarted)
        break
    # The cancelled turn stored nothing, and the session takes the next turn.
    assert client.interact(sid, "again").response == "You said 'again'."
    assert client.get_session(sid).message_count == 2


def test_interact_with_a_tool_handler(client: Client) -> None:
    sid = fresh("py-tools")
    client.create_session(sid, tools=[WEATHER, {"name": "broken"}])
    seen: list[ToolCall] = []

    def handler(call: ToolCall) -> object:
        seen.append(call)
        if call.name == "broken":
            raise RuntimeError("no such sensor")
        return {"forecast": "sunny", "city": call.arguments["city"]}

    result = client.interact(sid, '/call get_weather {"city": "Rome"}\n/call broken {}', tool_handler=handler)
    assert [c.name for c in seen] == ["get_weather", "broken"]
    assert result.finish_reason is FinishReason.STOP
    assert result.response == (
        'Tool get_weather returned: {"forecast": "sunny", "city": "Rome"}\nTool broken failed: no such sensor'
    )
    tool_messages = [m for m in client.list_messages(sid).items if m.role is MessageRole.TOOL]
    assert [m.is_error for m in tool_messages] == [False, True]


def test_manual_tool_round_trip(client: Client) -> None:
    sid = fresh("py-manual")
    client.create_session(sid, tools=[WEATHER])
    paused = client.interact(sid, '/call get_weather {"city": "Oslo"}')
    assert paused.needs_tool_results and paused.tool_calls[0].arguments == {"city": "Oslo"}
    assert client.get_session(sid).state is SessionState.AWAITING_TOOL_RESULTS
    with pytest.raises(ContextdError) as pending:
        client.interact(sid, "hello?")
    assert pending.value.code is grpc.StatusCode.FAILED_PRECONDITION
    events = list(client.stream_response(sid, tool_results=[ToolResult(paused.tool_calls[0].id, "snow")]))
    assert events[-1].result.response == "Tool get_weather returned: snow"  # type: ignore[union-attr]
    assert events[-1].result.turn_id == paused.turn_id  # type: ignore[union-attr]


def test_server_side_tools(client: Client) -> None:
    sid = fresh("py-builtin")
    events = list(client.stream_response(sid, '/call context_set {"patch": {"mood": "happy"}}'))
    ran = [e for e in events if isinstance(e, ToolRan)]
    assert ran and ran[0].call.name == "context_set" and not ran[0].result.is_error
    listed = client.list_tools(sid)
    assert [t.name for t in listed.tools] == ["context_get", "context_set", "history_search"]
    assert listed.tools[0].annotations is not None and listed.tools[0].annotations["readOnlyHint"] is True
    assert listed.session_tools == []
    hinted = ToolDefinition("find", "Finds.", {"type": "object"}, annotations={"readOnlyHint": True})
    client.update_session(sid, tools=[hinted])
    assert client.list_tools(sid).session_tools == [hinted]
    client.update_session(sid, tools=[])
    output = client.call_tool("context_get", {}, session_id=sid)
    assert output.structured_content == {"mood": "happy"} and not output.is_error
    assert client.call_tool("context_get", {"key": "nope"}, session_id=sid).is_error
    with pytest.raises(ContextdError) as unknown:
        client.call_tool("nope", session_id=sid)
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND


def test_server_tool_selection(client: Client) -> None:
    sid = fresh("py-select")
    created = client.create_session(sid, tools=[WEATHER], server_tools=["context_*"])
    assert created.server_tools == ["context_*"]
    assert client.list_tools(sid).offered_tools == ["context_get", "context_set", "get_weather"]
    updated = client.update_session(sid, server_tools=[])
    assert updated.server_tools == []
    assert client.list_tools(sid).offered_tools == ["get_weather"]
    assert client.get_session(sid).server_tools == []
    with pytest.raises(ContextdError) as refused:
        client.update_session(sid, server_tools=["time__*"])
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT and "context_get" in refused.value.message
    with pytest.raises(ContextdError) as both:
        client.update_session(sid, server_tools=["context_get"], reset_server_tools=True)
    assert both.value.code is grpc.StatusCode.INVALID_ARGUMENT and "cannot both be set" in both.value.message
    assert client.get_session(sid).server_tools == []
    reset = client.update_session(sid, reset_server_tools=True)
    assert reset.server_tools is None
    assert client.list_tools(sid).offered_tools == ["context_get", "context_set", "history_search", "get_weather"]
    with client.converse(fresh("py-select-open"), server_tools=["history_search"]) as conversation:
        assert conversation.session.server_tools == ["history_search"]
    violation = client.call_tool("context_get", {"city": "Paris"}, session_id=sid)
    assert violation.is_error and "city" in violation.content


def test_converse_with_a_tool_handler(client: Client) -> None:
    sid = fresh("py-conv")
    with client.converse(sid, tools=[WEATHER], context={"user_id": "ann"}, tool_handler=lambda c: "cloudy") as conversation:
        assert conversation.session_created and conversation.session.context == {"user_id": "ann"}
        first = conversation.ask("Hi.")
        assert first.response == "You said 'Hi.'. User ann is active."
        kinds = [type(e) for e in conversation.send('/call get_weather {"city": "Lima"}')]
        # paused turn (tool call, completed), then the continued turn under the same id
        assert kinds[:3] == [TurnStarted, ToolCallRequested, TurnCompleted]
        assert kinds[-1] is TurnCompleted and TextDelta in kinds[3:]
        failed = list(conversation.send_tool_results([ToolResult("call_unknown", "x")]))
        assert len(failed) == 1 and isinstance(failed[0], TurnFailed)
        assert failed[0].code is grpc.StatusCode.INVALID_ARGUMENT
        assert conversation.ask("Still here?").response == "You said 'Still here?'. User ann is active."
    assert client.get_session(sid).message_count == 8


def test_converse_without_handler_and_cancel(client: Client) -> None:
    sid = fresh("py-conv-manual")
    with client.converse(sid, tools=[WEATHER]) as conversation:
        paused = conversation.ask('/call get_weather {"city": "Kyiv"}')
        assert paused.needs_tool_results
        result = None
        for event in conversation.send_tool_results([ToolResult(paused.tool_calls[0].id, "rain")]):
            if isinstance(event, TurnCompleted):
                result = event.result
        assert result is not None and result.response == "Tool get_weather returned: rain"
        events = conversation.send("/delay 300 a b c d e f g h")
        assert isinstance(next(events), TurnStarted)
        conversation.cancel()
        last = list(events)[-1]
        assert isinstance(last, TurnCompleted) and last.result.finish_reason is FinishReason.CANCELLED
    assert client.get_session(sid).message_count == 4


def test_converse_open_error_raises(target: str) -> None:
    with Client(target) as client, pytest.raises(ContextdError) as bad:
        client.converse("bad id!")
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_async_client(target: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(target, token="secret-token") as client:
            sid = fresh("py-async")
            created = await client.create_session(sid, context={"user_id": "jane"}, tools=[WEATHER])
            assert created.context == {"user_id": "jane"}
            reply = await client.interact(sid, "Hello.", context={"location": "NYC"})
            assert reply.response == "You said 'Hello.'. User jane is active. Context: location=NYC."
            events = [e async for e in client.stream_response(sid, "Again.")]
            assert "".join(e.text for e in events if isinstance(e, TextDelta)) == events[-1].result.response  # type: ignore[union-attr]

            async def handler(call: ToolCall) -> str:
                await asyncio.sleep(0)
                return f"hot in {call.arguments['city']}"

            done = await client.interact(sid, '/call get_weather {"city": "Cairo"}', tool_handler=handler)
            assert done.response == "Tool get_weather returned: hot in Cairo"
            async with await client.converse(sid, tool_handler=handler) as conversation:
                assert not conversation.session_created
                result = await conversation.ask('/call get_weather {"city": "Lima"}')
                assert result.response == "Tool get_weather returned: hot in Lima"
                failed = [e async for e in conversation.send_tool_results([ToolResult("nope", "x")])]
                assert isinstance(failed[0], TurnFailed)
            assert [s.session_id async for s in client.iter_sessions() if s.session_id == sid] == [sid]
            assert (await client.list_tools()).tools[0].name == "context_get"
            assert (await client.call_tool("context_get", {"key": "location"}, session_id=sid)).structured_content == "NYC"
            assert (await client.list_messages(sid)).items[0].content == "Hello."
            chosen = await client.update_session(sid, server_tools=["history_search"])
            assert chosen.server_tools == ["history_search"]
            reset = await client.update_session(sid, reset_server_tools=True)
            assert reset.server_tools is None
            assert (await client.list_tools(sid)).offered_tools == [
                "context_get", "context_set", "history_search", "get_weather",
            ]
            assert await client.delete_session(sid) == 12
            with pytest.raises(ContextdError) as missing:
                await client.get_session(sid)
            assert missing.value.code is grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


def test_connect_and_bearer_metadata(target: str) -> None:
    assert metadata("abc") == (("authorization", "Bearer abc"),)
    assert metadata(None, [("X-Trace", "1")]) == (("x-trace", "1"),)
    with connect(target, token="abc", metadata=[("x-trace", "1")]) as client:
        assert client.interact(fresh("py-token"), "hi").response == "You said 'hi'."


def test_unreachable_server_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=5) as client, pytest.raises(ContextdError) as down:
        client.list_tools()
    assert down.value.code is grpc.StatusCode.UNAVAILABLE


def test_demo_example(target: str) -> None:
    demo = Path(__file__).resolve().parents[1] / "examples" / "demo.py"
    out = subprocess.run([sys.executable, str(demo), target], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "< You said 'What are some solutions?'. User john_doe is active. Current topic: environment." in out
    assert 'context: {"topic": "environment", "user_id": "john_doe"}' in out
    assert 'context: {"location": "NYC", "user_id": "jane_doe"}' in out
    assert "messages: 6" in out
    assert "< Tool get_weather returned: sunny, 21 C in Paris" in out


def test_the_package_type_checks() -> None:
    """The package ships py.typed: its own annotations must hold under mypy --strict."""
    root = Path(__file__).resolve().parents[1]
    checked = subprocess.run([sys.executable, "-m", "mypy"], cwd=root, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr


SLOW = "/delay 1000 " + " ".join(f"w{i}" for i in range(30))


def test_leaving_a_converse_turn_early_cancels_it(client: Client) -> None:
    sid = fresh("py-conv-break")
    with client.converse(sid) as conversation:
        for event in conversation.send(SLOW):
            if isinstance(event, TextDelta):
                break
        assert conversation.ask("one").response == "You said 'one'."
        with pytest.raises(RuntimeError):
            for event in conversation.send(SLOW):
                if isinstance(event, TextDelta):
                    raise RuntimeError("left by an exception")
        assert conversation.ask("two").response == "You said 'two'."
        # A turn whose events were never read is ended by the next send.
        conversation.send(SLOW)
        assert conversation.ask("three").response == "You said 'three'."
    # Only the three whole turns are stored.
    assert [m.content for m in client.list_messages(sid).items] == [
        "one", "You said 'one'.", "two", "You said 'two'.", "three", "You said 'three'.",
    ]


def test_leaving_an_async_converse_turn_early_cancels_it(target: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(target) as client:
            sid = fresh("py-aconv-break")
            async with client.converse(sid) as conversation:
                async for event in conversation.send(SLOW):
                    if isinstance(event, TextDelta):
                        break
                assert (await conversation.ask("one")).response == "You said 'one'."
                assert (await conversation.ask("two")).response == "You said 'two'."

                async def read_until_cancelled() -> None:
                    async for _ in conversation.send(SLOW):
                        await asyncio.sleep(0)

                task = asyncio.create_task(read_until_cancelled())
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert (await conversation.ask("three")).response == "You said 'three'."
            page = await client.list_messages(sid)
            assert [m.content for m in page.items][::2] == ["one", "two", "three"]

    asyncio.run(scenario())


def test_a_turn_paused_for_tools_stays_paused_when_left(client: Client) -> None:
    sid = fresh("py-conv-paused")
    with client.converse(sid, tools=[WEATHER]) as conversation:
        for event in conversation.send('/call get_weather {"city": "Oslo"}'):
            if isinstance(event, TurnCompleted):
                break
        session = client.get_session(sid)
        assert session.state is SessionState.AWAITING_TOOL_RESULTS
        call = session.pending_tool_calls[0]
        done = list(conversation.send_tool_results([ToolResult(call.id, "snow")]))[-1]
        assert isinstance(done, TurnCompleted) and done.result.response == "Tool get_weather returned: snow"


def test_errors_are_subclasses_per_status(client: Client) -> None:
    from contextd import AlreadyExistsError, InvalidArgumentError, NotFoundError

    with pytest.raises(NotFoundError) as missing:
        client.get_session(fresh("py-none"))
    assert isinstance(missing.value, ContextdError) and missing.value.code is grpc.StatusCode.NOT_FOUND
    sid = fresh("py-dup")
    client.create_session(sid)
    with pytest.raises(AlreadyExistsError):
        client.create_session(sid)
    with pytest.raises(InvalidArgumentError):
        client.create_session("bad id!")


def test_window_expiry_summary_and_models(client: Client) -> None:
    from datetime import datetime, timedelta, timezone

    from contextd import WindowSettings, WindowStrategy

    sid = fresh("py-window")
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    created = client.create_session(
        sid, expire_time=expires, window=WindowSettings(WindowStrategy.SUMMARIZE, 50, "echo")
    )
    assert created.expire_time == expires
    assert created.window == WindowSettings(WindowStrategy.SUMMARIZE, 50, "echo")
    assert created.summary is None and created.token_estimate_scale == 0.0
    later = expires + timedelta(hours=1)
    updated = client.update_session(sid, expire_time=later, window=WindowSettings(WindowStrategy.DISABLED))
    assert updated.expire_time == later and updated.window.strategy is WindowStrategy.DISABLED
    with client.converse(fresh("py-window-conv"), window=WindowSettings(WindowStrategy.DISABLED), expire_time=later) as conv:
        assert conv.session.window.strategy is WindowStrategy.DISABLED and conv.session.expire_time == later
    models = client.list_models()
    assert models.default_model == "echo" and any(m.name == "echo" for m in models.models)
    preview = client.preview_context(sid, "hi")
    assert preview.total_tokens > 0 and preview.entries[-1].content == "hi"


class _Flaky:
    """A gRPC SessionService on a loopback port whose GetSession is UNAVAILABLE the first
    ``failures`` times, and whose CreateSession always is: what a restarting server looks
    like to a client."""

    def __init__(self, failures: int) -> None:
        from concurrent import futures

        from contextd.v1 import common_pb2, session_pb2, session_pb2_grpc

        outer = self
        self.calls: dict[str, int] = {"get": 0, "create": 0}

        class Service(session_pb2_grpc.SessionServiceServicer):  # type: ignore[misc]
            def GetSession(self, request: session_pb2.GetSessionRequest, context: grpc.ServicerContext) -> session_pb2.GetSessionResponse:
                outer.calls["get"] += 1
                if outer.calls["get"] <= failures:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
                return session_pb2.GetSessionResponse(session=common_pb2.Session(session_id=request.session_id))

            def CreateSession(self, request: session_pb2.CreateSessionRequest, context: grpc.ServicerContext) -> session_pb2.CreateSessionResponse:
                outer.calls["create"] += 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        session_pb2_grpc.add_SessionServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None)


def test_idempotency_keys_make_turns_safe_to_repeat(client: Client, target: str) -> None:
    session = fresh("py-idem")
    key = str(uuid.uuid4())
    first = client.interact(session, "only once", idempotency_key=key)
    again = client.interact(session, "only once", idempotency_key=key)
    assert again.turn_id == first.turn_id and again.response == first.response
    events = list(client.stream_response(session, "only once", idempotency_key=key))
    assert isinstance(events[-1], TurnCompleted) and events[-1].result.turn_id == first.turn_id
    with client.converse(session) as conversation:
        assert conversation.ask("only once", idempotency_key=key).turn_id == first.turn_id
    with pytest.raises(ContextdError) as refused:
        client.interact(session, "another request", idempotency_key=key)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert client.get_session(session).message_count == 2

    async def async_repeat() -> None:
        async with AsyncClient(target) as aclient:
            assert (await aclient.interact(session, "only once", idempotency_key=key)).turn_id == first.turn_id

    asyncio.run(async_repeat())


def test_safe_calls_are_retried_on_unavailable() -> None:
    from contextd import UnavailableError

    flaky = _Flaky(failures=2)
    try:
        with Client(f"127.0.0.1:{flaky.port}", retries=3, retry_backoff=0.01) as client:
            assert client.get_session("s").session_id == "s"
            assert flaky.calls["get"] == 3
            # A change is never repeated.
            with pytest.raises(UnavailableError):
                client.create_session("s")
            assert flaky.calls["create"] == 1
        flaky.calls["get"] = 0
        with Client(f"127.0.0.1:{flaky.port}") as client, pytest.raises(UnavailableError):
            client.get_session("s")  # no retries unless asked for
        assert flaky.calls["get"] == 1

        async def async_retries() -> None:
            flaky.calls["get"] = 0
            async with AsyncClient(f"127.0.0.1:{flaky.port}", retries=2, retry_backoff=0.01) as client:
                assert (await client.get_session("s")).session_id == "s"
            assert flaky.calls["get"] == 3

        asyncio.run(async_retries())
    finally:
        flaky.stop()


def test_abandoning_a_paused_turn(client: Client) -> None:
    sid = fresh("py-abandon")
    client.create_session(sid, tools=[WEATHER])
    paused = client.interact(sid, '/call get_weather {"city": "Oslo"}')
    assert paused.needs_tool_results
    done = client.interact(sid, abandon_tool_calls=True)
    assert done.finish_reason is FinishReason.CANCELLED and done.turn_id == paused.turn_id
    assert done.response == ""
    assert client.get_session(sid).state is SessionState.IDLE
    tool = client.list_messages(sid).items[2]
    assert (tool.tool_call_id, tool.content, tool.is_error) == (paused.tool_calls[0].id, "cancelled by the client", True)
    with pytest.raises(ContextdError) as nothing:
        client.interact(sid, abandon_tool_calls=True)
    assert nothing.value.code is grpc.StatusCode.INVALID_ARGUMENT

    client.interact(sid, '/call get_weather {"city": "Rome"}')
    events = list(client.stream_response(sid, abandon_tool_calls=True))
    assert isinstance(events[0], TurnStarted)
    assert isinstance(events[-1], TurnCompleted) and events[-1].result.finish_reason is FinishReason.CANCELLED
    assert client.interact(sid, "after").response.startswith("You said 'after'.")


def test_converse_cancel_while_paused_abandons(client: Client) -> None:
    sid = fresh("py-conv-abandon")
    with client.converse(sid, tools=[WEATHER]) as conversation:
        paused = conversation.ask('/call get_weather {"city": "Oslo"}')
        assert paused.needs_tool_results
        done = conversation.abandon_tool_calls()
        assert done.finish_reason is FinishReason.CANCELLED and done.turn_id == paused.turn_id
        assert conversation.ask("next").response == "You said 'next'."
        # cancel() while paused abandons too, and the next turn's reply is its own.
        assert conversation.ask('/call get_weather {"city": "Rome"}').needs_tool_results
        conversation.cancel()
        assert client.get_session(sid).state is SessionState.IDLE
        assert conversation.ask("and now").response == "You said 'and now'."
        with pytest.raises(ContextdError) as nothing:
            conversation.abandon_tool_calls()
        assert nothing.value.code is grpc.StatusCode.FAILED_PRECONDITION
    errors = [m for m in client.list_messages(sid).items if m.role is MessageRole.TOOL]
    assert [(m.content, m.is_error) for m in errors] == [("cancelled by the client", True)] * 2


def test_async_abandoning_a_paused_turn(target: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(target) as client:
            sid = fresh("py-async-abandon")
            await client.create_session(sid, tools=[WEATHER])
            assert (await client.interact(sid, '/call get_weather {"city": "Oslo"}')).needs_tool_results
            done = await client.interact(sid, abandon_tool_calls=True)
            assert done.finish_reason is FinishReason.CANCELLED
            await client.interact(sid, '/call get_weather {"city": "Rome"}')
            events = [e async for e in client.stream_response(sid, abandon_tool_calls=True)]
            assert isinstance(events[-1], TurnCompleted) and events[-1].result.finish_reason is FinishReason.CANCELLED
            async with await client.converse(sid) as conversation:
                assert (await conversation.ask('/call get_weather {"city": "Lima"}')).needs_tool_results
                done = await conversation.abandon_tool_calls()
                assert done.finish_reason is FinishReason.CANCELLED
                assert (await conversation.ask('/call get_weather {"city": "Kyiv"}')).needs_tool_results
                await conversation.cancel()
                assert (await conversation.ask("next")).response == "You said 'next'."
            assert (await client.get_session(sid)).state is SessionState.IDLE

    asyncio.run(scenario())


def _pending(preview: object) -> bool:
    from contextd.v1 import session_pb2

    return any(e.kind == session_pb2.CONTEXT_ENTRY_KIND_PENDING_SUMMARY for e in preview.entries)  # type: ignore[attr-defined]


def test_preview_summarize_sync_and_async(client: Client, target: str) -> None:
    from contextd import WindowSettings, WindowStrategy

    message = "the quick brown fox jumps over the lazy dog, and counts another turn"
    sync_sid, async_sid = fresh("py-fold"), fresh("py-fold-async")
    for sid in (sync_sid, async_sid):
        client.create_session(sid, max_context_tokens=300, window=WindowSettings(WindowStrategy.SUMMARIZE))
        for _ in range(60):
            if _pending(client.preview_context(sid, message)):
                break
            client.interact(sid, message)
        else:
            pytest.fail("the window never reached its threshold")
        assert client.get_session(sid).summary is None, "a preview writes nothing by default"

    written = client.preview_context(sync_sid, message, summarize=True)
    assert written.summary_kept and not _pending(written)
    assert client.get_session(sync_sid).summary is not None

    async def run() -> None:
        async with AsyncClient(target) as aclient:
            kept = await aclient.preview_context(async_sid, message, summarize=True)
            assert kept.summary_kept
            assert (await aclient.get_session(async_sid)).summary is not None

    asyncio.run(run())
