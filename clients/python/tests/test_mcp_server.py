"""contextd as an MCP server: `/mcp` through the official MCP Python SDK's Streamable HTTP
client (PyPI `mcp` 2.x), as an MCP host would use it: tools, a turn handed to a session with
its reply streamed as progress, sessions as resources, and errors."""

from __future__ import annotations

import json
import uuid
from typing import Any, Awaitable, Callable, TypeVar

import anyio
import httpx
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

T = TypeVar("T")


def run(target: str, body: Callable[[ClientSession], Awaitable[T]]) -> T:
    async def main() -> T:
        with anyio.fail_after(60):  # a hang guard, not a timing assertion
            async with streamable_http_client(f"http://{target}/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    return await body(session)

    return anyio.run(main)


def test_tools_and_a_turn_with_progress(target: str) -> None:
    session_id = f"pysdk-{uuid.uuid4().hex[:8]}"
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def body(session: ClientSession) -> Any:
        tools = await session.list_tools()
        names = {t.name for t in tools.tools}
        assert {"contextd_interact", "context_get", "context_set", "history_search"} <= names
        turn = await session.call_tool(
            "contextd_interact",
            {"session_id": session_id, "message": "three small words", "context": {"user": "ann"}},
            progress_callback=on_progress,
        )
        got = await session.call_tool("context_get", {"session_id": session_id, "key": "user"})
        missing = await session.call_tool("context_get", {"key": "user"})
        return turn, got, missing

    turn, got, missing = run(target, body)
    assert not turn.is_error, turn
    reply = turn.structured_content
    assert reply["session_id"] == session_id and reply["finish_reason"] == "stop"
    assert turn.content[0].text == reply["response"]
    # The reply streamed as progress, delta by delta, and adds up to the whole.
    assert progress, "no progress notifications"
    assert "".join(m or "" for _, m in progress) == reply["response"]
    assert [v for v, _ in progress] == sorted(v for v, _ in progress)
    assert got.content[0].text == '"ann"'
    assert missing.is_error and "session_id" in missing.content[0].text


def test_sessions_are_resources(target: str) -> None:
    session_id = f"pysdk-res-{uuid.uuid4().hex[:8]}"
    uri = f"contextd://sessions/{session_id}"

    async def body(session: ClientSession) -> Any:
        await session.call_tool("contextd_interact", {"session_id": session_id, "message": "hello"})
        listed = await session.list_resources()
        read = await session.read_resource(uri)
        return listed, read

    listed, read = run(target, body)
    assert str(listed.resources[0].uri) == uri
    document = json.loads(read.contents[0].text)
    assert [m["content"] for m in document["history"]][0] == "hello"


def test_unknown_things_are_errors(target: str) -> None:
    async def body(session: ClientSession) -> list[str]:
        messages = []
        for attempt in (
            lambda: session.read_resource("contextd://sessions/pysdk-nobody"),
            lambda: session.call_tool("no_such_tool", {}),
        ):
            try:
                await attempt()
            except MCPError as error:
                messages.append(str(error))
        return messages

    messages = run(target, body)
    assert len(messages) == 2, messages
    assert "pysdk-nobody" in messages[0]
    assert "contextd_interact" in messages[1]


def test_foreign_origins_are_refused(target: str) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=f"http://{target}", timeout=20) as client:
        refused = client.post("/mcp", json=initialize, headers={**headers, "Origin": "http://evil.example"})
        assert refused.status_code == 403, refused.text
        refused = client.post("/mcp", json=initialize, headers={**headers, "Host": "evil.example"})
        assert refused.status_code == 403, refused.text
        port = target.rsplit(":", 1)[1]
        served = client.post("/mcp", json=initialize, headers={**headers, "Origin": f"http://localhost:{port}"})
        assert served.status_code == 200, served.text
