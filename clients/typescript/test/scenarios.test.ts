/** The shared scenario suite (clients/scenarios) against a live contextd. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { loadScenarios, matches, Runner, ScenarioFailure, type Scenario } from "./scenarios.js";
import { Server } from "./server.js";

const scenarios = loadScenarios();

describe("shared scenarios", () => {
  let server: Server;
  let sessions: Http2SessionManager;
  let runner: Runner;

  before(async () => {
    server = await Server.start();
    const baseUrl = `http://${server.address}`;
    sessions = new Http2SessionManager(baseUrl);
    runner = new Runner(createGrpcTransport({ baseUrl, sessionManager: sessions }));
  });

  after(async () => {
    sessions.abort();
    await server.stop();
  });

  test("the suite is there", () => {
    assert.ok(scenarios.length >= 10, scenarios.map((s) => s.name).join(", "));
  });

  for (const scenario of scenarios) {
    test(scenario.name, async () => {
      await runner.run(scenario);
    });
  }

  test("a wrong expectation fails", async () => {
    const wrong: Scenario = {
      name: "wrong",
      description: "",
      file: "",
      steps: [{ rpc: "contextd.v1.SessionService/GetSession", request: { sessionId: "absent-${run}" }, expect: { code: "OK" } }],
    };
    await assert.rejects(runner.run(wrong), (e: unknown) => e instanceof ScenarioFailure && /step 0.*NOT_FOUND/.test(e.message));
  });

  test("an unknown variable fails", async () => {
    const unknown: Scenario = {
      name: "unknown",
      description: "",
      file: "",
      steps: [{ rpc: "contextd.v1.SessionService/GetSession", request: { sessionId: "${nope}" } }],
    };
    await assert.rejects(runner.run(unknown), /unknown variable/);
  });
});

test("subset matching", () => {
  const cases: [unknown, unknown, boolean][] = [
    [{ a: 1 }, { a: 1, b: 2 }, true],
    [{ a: 1 }, { b: 2 }, false],
    [{ n: 6 }, { n: "6" }, true],
    [{ n: "6" }, { n: 6 }, false],
    [[{ a: 1 }], [{ a: 1 }, { a: 2 }], false],
    [[{ a: 1 }, {}], [{ a: 1, x: 0 }, { b: 1 }], true],
    ["$nonempty", "", false],
    ["$nonempty", "x", true],
    ["$nonempty", {}, false],
    [{ $exact: { a: 1 } }, { a: 1 }, true],
    [{ $exact: { a: 1 } }, { a: 1, b: 2 }, false],
    [{ $exact: { a: { b: 1 } } }, { a: { b: 1, c: 2 } }, false],
    [true, 1, false],
    [null, null, true],
    [false, null, false],
  ];
  for (const [expected, actual, ok] of cases) {
    assert.equal(matches(expected as never, actual as never), ok, JSON.stringify([expected, actual]));
  }
});
