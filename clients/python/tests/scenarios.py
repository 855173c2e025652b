"""Runs the shared scenario files of clients/scenarios against a live contextd.

The format is documented in clients/scenarios/README.md. Calls go through plain gRPC
multicallables built from the generated descriptors, so any method of contextd.v1 can be named
by a scenario without code here knowing it.
"""

from __future__ import annotations

import json
import math
import queue
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

# Importing the modules registers their descriptors in the default pool.
from contextd.v1 import admin_pb2, interact_pb2, session_pb2, tool_pb2  # noqa: F401

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "scenarios"
_VAR = re.compile(r"\$\{([^}]*)\}")


class ScenarioFailure(AssertionError):
    """A step did not meet its expectation."""


@dataclass
class Scenario:
    """One scenario file."""

    name: str
    description: str
    steps: list[dict[str, Any]]
    path: Path


def load_scenarios(directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """Every scenario file in the directory, sorted by file name."""
    scenarios = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        scenarios.append(Scenario(data["name"], data.get("description", ""), data["steps"], path))
    names = [s.name for s in scenarios]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"scenario names used twice: {sorted(duplicates)}")
    return scenarios


def render(message: Message) -> Any:
    """Canonical proto3 JSON with default-valued fields emitted."""
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=False
    )


def substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replaces every ${name} in every string of value."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise ScenarioFailure(f"unknown variable ${{{name}}}")
            return variables[name]

        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def matches(expected: Any, actual: Any) -> bool:
    """expected ⊆ actual, as the scenario format defines it."""
    if expected == "$nonempty":
        return actual not in (None, "", [], {})
    if isinstance(expected, dict):
        if set(expected) == {"$exact"}:
            return _exact(expected["$exact"], actual)
        if not isinstance(actual, dict):
            return False
        return all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual))
        )
    if isinstance(expected, bool) or expected is None:
        return expected is actual
    if isinstance(expected, (int, float)):
        number = _number(actual)
        return number is not None and number == float(expected)
    return bool(expected == actual)


def _exact(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and set(expected) == set(actual)
            and all(_exact(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(_exact(e, a) for e, a in zip(expected, actual))
        )
    if isinstance(expected, bool) or expected is None:
        return expected is actual
    if isinstance(expected, (int, float)) and not isinstance(actual, bool):
        number = _number(actual)
        return number is not None and number == float(expected)
    return bool(expected == actual)


def lookup(value: Any, path: str) -> str:
    """The string form of the value at a dotted path (numeric segments index arrays)."""
    current = value
    for segment in path.split("."):
        if isinstance(current, list) and segment.isdigit() and int(segment) < len(current):
            current = current[int(segment)]
        elif isinstance(current, dict) and segment in current:
            current = current[segment]
        else:
            raise ScenarioFailure(f"save path {path!r} not found in {json.dumps(value)}")
    if isinstance(current, bool) or not isinstance(current, (str, int, float)):
        raise ScenarioFailure(f"save path {path!r} is not a string or number: {current!r}")
    if isinstance(current, float) and current.is_integer():
        return str(int(current))  # Struct numbers are doubles: 4.0 is saved as "4"
    return current if isinstance(current, str) else str(current)


def event_names(messages: list[Any], oneof: str) -> list[str]:
    """The oneof field names of the messages, runs of "delta" collapsed into one."""
    names: list[str] = []
    for message in messages:
        name = message.WhichOneof(oneof) or "(none)"
        if name == "delta" and names and names[-1] == "delta":
            continue
        names.append(name)
    return names


def delta_text(messages: list[Any], oneof: str) -> str:
    return "".join(m.delta.text for m in messages if m.WhichOneof(oneof) == "delta")


class Method:
    """A contextd.v1 method resolved from the descriptor pool."""

    def __init__(self, full_name: str) -> None:
        service_name, _, method_name = full_name.partition("/")
        pool = descriptor_pool.Default()
        try:
            service = pool.FindServiceByName(service_name)
        except KeyError as error:
            raise ScenarioFailure(f"unknown service {service_name!r}") from error
        method = service.methods_by_name.get(method_name)
        if method is None:
            raise ScenarioFailure(f"unknown method {full_name!r}")
        self.path = f"/{service_name}/{method_name}"
        self.request_type = message_factory.GetMessageClass(method.input_type)
        self.response_type = message_factory.GetMessageClass(method.output_type)
        self.client_streaming = method.client_streaming
        self.server_streaming = method.server_streaming

    def request(self, data: Any) -> Message:
        return json_format.ParseDict(data, self.request_type())


class Runner:
    """Runs scenarios against the server at target."""

    def __init__(self, channel: grpc.Channel, timeout: float = 30.0) -> None:
        self.channel = channel
        self.timeout = timeout

    def run(self, scenario: Scenario) -> None:
        variables = {"run": secrets.token_hex(4)}
        for index, raw in enumerate(scenario.steps):
            step: dict[str, Any] = {}
            try:
                # Converse frames are substituted one by one as they run, so a frame can use
                # what an earlier frame of the same step saved.
                step = substitute({k: v for k, v in raw.items() if k != "frames"}, variables)
                if "frames" in raw:
                    step["frames"] = raw["frames"]
                self._step(step, variables)
            except ScenarioFailure as failure:
                raise ScenarioFailure(
                    f"scenario {scenario.name!r} step {index} ({step.get('rpc', raw.get('rpc'))}): {failure}"
                ) from None

    def _step(self, step: dict[str, Any], variables: dict[str, str]) -> None:
        method = Method(step["rpc"])
        if method.client_streaming:
            self._converse(method, step["frames"], variables)
            return
        expect = step.get("expect", {})
        request = method.request(step.get("request", {}))
        if method.server_streaming:
            call = self.channel.unary_stream(
                method.path,
                request_serializer=method.request_type.SerializeToString,
                response_deserializer=method.response_type.FromString,
            )
            received: list[Any] = []
            code, details = grpc.StatusCode.OK, ""
            try:
                for event in call(request, timeout=self.timeout):
                    received.append(event)
            except grpc.RpcError as error:
                code, details = error.code(), error.details() or ""
            _check_status(expect, code, details)
            if "events" in expect:
                _check("events", expect["events"], event_names(received, "event"), exact=True)
            if "text" in expect:
                _check("text", expect["text"], delta_text(received, "event"), exact=True)
            last = render(received[-1]) if received else None
            if "last" in expect:
                _check("last event", expect["last"], last)
            for name, path in step.get("save", {}).items():
                variables[name] = lookup(last, path)
            return
        call = self.channel.unary_unary(
            method.path,
            request_serializer=method.request_type.SerializeToString,
            response_deserializer=method.response_type.FromString,
        )
        try:
            response = call(request, timeout=self.timeout)
            code, details, rendered = grpc.StatusCode.OK, "", render(response)
        except grpc.RpcError as error:
            code, details, rendered = error.code(), error.details() or "", None
        _check_status(expect, code, details)
        if "response" in expect:
            _check("response", expect["response"], rendered)
        for name, path in step.get("save", {}).items():
            variables[name] = lookup(rendered, path)

    def _converse(self, method: Method, frames: list[dict[str, Any]], variables: dict[str, str]) -> None:
        outgoing: queue.Queue[Message | None] = queue.Queue()

        def requests() -> Iterator[Message]:
            while True:
                item = outgoing.get()
                if item is None:
                    return
                yield item

        call = self.channel.stream_stream(
            method.path,
            request_serializer=method.request_type.SerializeToString,
            response_deserializer=method.response_type.FromString,
        )
        responses = call(requests(), timeout=self.timeout)
        incoming: queue.Queue[tuple[str, Any]] = queue.Queue()

        def read() -> None:
            try:
                for response in responses:
                    incoming.put(("message", response))
                incoming.put(("end", (grpc.StatusCode.OK, "")))
            except grpc.RpcError as error:
                incoming.put(("end", (error.code(), error.details() or "")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ended: tuple[grpc.StatusCode, str] | None = None
        try:
            for number, raw in enumerate(frames):
                frame = substitute(raw, variables)
                try:
                    if "send" in frame:
                        outgoing.put(method.request(frame["send"]))
                    elif "until" in frame:
                        received: list[Any] = []
                        while True:
                            kind, item = incoming.get(timeout=self.timeout)
                            if kind == "end":
                                ended = item
                                names = event_names(received, "event")
                                raise ScenarioFailure(
                                    f"stream ended with {item[0].name} {item[1]!r} before "
                                    f"{frame['until']!r}; events read: {names}"
                                )
                            received.append(item)
                            if item.WhichOneof("event") == frame["until"]:
                                break
                        if "events" in frame:
                            _check("events", frame["events"], event_names(received, "event"), exact=True)
                        if "text" in frame:
                            _check("text", frame["text"], delta_text(received, "event"), exact=True)
                        last = render(received[-1])
                        if "last" in frame:
                            _check("last", frame["last"], last)
                        for name, path in frame.get("save", {}).items():
                            variables[name] = lookup(last, path)
                    elif frame.get("close"):
                        outgoing.put(None)
                        leftover: list[Any] = []
                        while True:
                            kind, item = incoming.get(timeout=self.timeout)
                            if kind == "end":
                                ended = item
                                break
                            leftover.append(item)
                        if leftover:
                            raise ScenarioFailure(
                                "events after close: " + json.dumps([render(m) for m in leftover])
                            )
                        _check_status(frame, ended[0], ended[1])
                    else:
                        raise ScenarioFailure(f"frame has none of send/until/close: {json.dumps(frame)}")
                except queue.Empty:
                    raise ScenarioFailure(
                        f"frame {number}: no event within {self.timeout}s"
                    ) from None
                except ScenarioFailure as failure:
                    raise ScenarioFailure(f"frame {number}: {failure}") from None
        finally:
            outgoing.put(None)
            if ended is None:
                responses.cancel()
            reader.join(timeout=self.timeout)


def _check_status(expect: dict[str, Any], code: grpc.StatusCode, details: str) -> None:
    wanted = expect.get("code", "OK")
    if code.name != wanted:
        raise ScenarioFailure(f"expected status {wanted}, got {code.name}: {details!r}")
    contains = expect.get("messageContains")
    if contains is not None and contains not in details:
        raise ScenarioFailure(f"status message {details!r} does not contain {contains!r}")


def _check(what: str, expected: Any, actual: Any, exact: bool = False) -> None:
    ok = expected == actual if exact else matches(expected, actual)
    if not ok:
        raise ScenarioFailure(
            f"{what} mismatch\n  expected: {json.dumps(expected, sort_keys=True)}\n"
            f"  actual:   {json.dumps(actual, sort_keys=True)}"
        )
