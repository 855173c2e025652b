"""The shared scenario suite (clients/scenarios) against a live contextd."""

from __future__ import annotations

import grpc
import pytest

from scenarios import Runner, Scenario, ScenarioFailure, load_scenarios, matches

SCENARIOS = load_scenarios()


def test_the_suite_is_there() -> None:
    assert len(SCENARIOS) >= 10, [s.name for s in SCENARIOS]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario, target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        Runner(channel).run(scenario)


def test_a_wrong_expectation_fails(target: str) -> None:
    scenario = Scenario(
        "wrong",
        "",
        [
            {
                "rpc": "contextd.v1.SessionService/GetSession",
                "request": {"sessionId": "absent-${run}"},
                "expect": {"code": "OK"},
            }
        ],
        path=SCENARIOS[0].path,
    )
    with grpc.insecure_channel(target) as channel, pytest.raises(ScenarioFailure, match="step 0.*NOT_FOUND"):
        Runner(channel).run(scenario)


def test_an_unknown_variable_fails(target: str) -> None:
    scenario = Scenario(
        "unknown_variable",
        "",
        [{"rpc": "contextd.v1.SessionService/GetSession", "request": {"sessionId": "${nope}"}}],
        path=SCENARIOS[0].path,
    )
    with grpc.insecure_channel(target) as channel, pytest.raises(ScenarioFailure, match="unknown variable"):
        Runner(channel).run(scenario)


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"b": 2}, False),
        ({"n": 6}, {"n": "6"}, True),
        ({"n": "6"}, {"n": 6}, False),
        ([{"a": 1}], [{"a": 1}, {"a": 2}], False),
        ([{"a": 1}, {}], [{"a": 1, "x": 0}, {"b": 1}], True),
        ("$nonempty", "", False),
        ("$nonempty", "x", True),
        ("$nonempty", {}, False),
        ({"$exact": {"a": 1}}, {"a": 1.0}, True),
        ({"$exact": {"a": 1}}, {"a": 1, "b": 2}, False),
        ({"$exact": {"a": {"b": 1}}}, {"a": {"b": 1, "c": 2}}, False),
        (True, 1, False),
        (None, None, True),
        (False, None, False),
    ],
)
def test_subset_matching(expected: object, actual: object, ok: bool) -> None:
    assert matches(expected, actual) is ok
