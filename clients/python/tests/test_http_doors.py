"""contextd's JSON doors as Python callers use them: httpx for HTTP/JSON, httpx-sse (a real
Server-Sent Events client) for streamed turns, and the classic guide's plain `socket` client
for the JSON-lines door."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
from httpx_sse import connect_sse


def base(target: str) -> str:
    return f"http://{target}"


def test_streamed_turns_are_server_sent_events(target: str) -> None:
    with httpx.Client(base_url=base(target), timeout=20) as client:
        with connect_sse(
            client,
            "POST",
            "/v1/sessions/py_sse:stream",
            json={"message": "three small words", "context": {"user_id": "ann"}},
        ) as source:
            assert source.response.status_code == 200
            events = [(e.event, json.loads(e.data)) for e in source.iter_sse()]
    names = [name for name, _ in events]
    assert names[0] == "started" and names[-1] == "completed"
    assert set(names[1:-1]) == {"delta"}
    for name, data in events:
        assert list(data) == [name]
    text = "".join(d["delta"]["text"] for n, d in events if n == "delta")
    completed = events[-1][1]["completed"]
    assert completed["response"] == text
    assert completed["updatedContext"] == {"user_id": "ann"}
    assert completed["finishReason"] == "FINISH_REASON_STOP"


def test_errors_use_one_json_format(target: str) -> None:
    with httpx.Client(base_url=base(target), timeout=20) as client:
        reply = client.get("/v1/sessions/py_nobody")
        assert reply.status_code == 404
        error: dict[str, Any] = reply.json()["error"]
        assert error["code"] == 404 and error["status"] == "NOT_FOUND"
        assert "py_nobody" in error["message"]
        reply = client.post("/v1/sessions/py_x:interact", json={"mesage": "typo"})
        assert reply.status_code == 400
        violation = reply.json()["error"]["details"][0]["fieldViolations"][0]
        assert violation["field"] == "mesage"


def test_the_classic_guides_python_clients(target: str) -> None:
    calls = [
        ("session_py", "Tell me about climate change.", {"user_id": "john_doe", "topic": "environment"}),
        ("session_py", "What are the main causes?", {}),
    ]
    with httpx.Client(base_url=base(target), timeout=20) as client:
        reply = client.post(
            "/api/mcp/interact",
            json={"sessionId": calls[0][0], "message": calls[0][1], "context": calls[0][2]},
        ).json()
    assert reply["response"].startswith("You said 'Tell me about climate change.'.")
    assert reply["updatedContext"] == {"user_id": "john_doe", "topic": "environment"}

    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        request = {"sessionId": calls[1][0], "message": calls[1][1], "context": calls[1][2]}
        sock.sendall((json.dumps(request) + "\n").encode())
        answer = json.loads(sock.makefile("r", encoding="utf-8").readline())
    assert answer["response"] == (
        "You said 'What are the main causes?'. User john_doe is active. "
        "Current topic: environment."
    )
    assert answer["sessionCreated"] is False
