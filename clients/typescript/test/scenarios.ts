/**
 * Runs the shared scenario files of clients/scenarios (format: clients/scenarios/README.md)
 * against a live contextd. Methods are resolved from the generated descriptors, so any
 * contextd.v1 method can be named by a scenario.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";

import {
  createRegistry,
  fromJson,
  toJson,
  type DescMessage,
  type DescMethod,
  type DescService,
  type JsonValue,
  type Message,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";

import { file_contextd_v1_admin } from "../src/gen/contextd/v1/admin_pb.js";
import { file_contextd_v1_interact } from "../src/gen/contextd/v1/interact_pb.js";
import { file_contextd_v1_session } from "../src/gen/contextd/v1/session_pb.js";
import { file_contextd_v1_tool } from "../src/gen/contextd/v1/tool_pb.js";
import { AsyncQueue } from "../src/queue.js";
import { REPO } from "./server.js";

export const SCENARIO_DIR = resolve(REPO, "clients/scenarios");
const registry = createRegistry(file_contextd_v1_admin, file_contextd_v1_interact, file_contextd_v1_session, file_contextd_v1_tool);

type Json = JsonValue;
type JsonObj = { [key: string]: Json };

export interface Scenario {
  name: string;
  description: string;
  steps: JsonObj[];
  file: string;
}

/** A step did not meet its expectation. */
export class ScenarioFailure extends Error {}

/** Every scenario file, sorted by file name. */
export function loadScenarios(dir = SCENARIO_DIR): Scenario[] {
  const files = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
  const scenarios = files.map((file) => {
    const data = JSON.parse(readFileSync(resolve(dir, file), "utf8")) as JsonObj;
    return { name: data["name"] as string, description: (data["description"] as string) ?? "", steps: data["steps"] as JsonObj[], file };
  });
  const names = scenarios.map((s) => s.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw new Error(`scenario name used twice: ${duplicate}`);
  return scenarios;
}

/** Replaces every ${name} in every string of value. */
export function substitute(value: Json, vars: Map<string, string>): Json {
  if (typeof value === "string") {
    return value.replace(/\$\{([^}]*)\}/g, (_, name: string) => {
      const found = vars.get(name);
      if (found === undefined) throw new ScenarioFailure(`unknown variable \${${name}}`);
      return found;
    });
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)]));
  }
  return value;
}

function asNumber(value: Json | undefined): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value))) return Number(value);
  return undefined;
}

function isObject(value: Json | undefined): value is JsonObj {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** expected ⊆ actual, as the scenario format defines it. */
export function matches(expected: Json, actual: Json | undefined): boolean {
  if (expected === "$nonempty") {
    return !(actual === undefined || actual === null || actual === "" ||
      (Array.isArray(actual) && actual.length === 0) || (isObject(actual) && Object.keys(actual).length === 0));
  }
  if (isObject(expected)) {
    const keys = Object.keys(expected);
    if (keys.length === 1 && keys[0] === "$exact") return exact(expected["$exact"]!, actual);
    if (!isObject(actual)) return false;
    return keys.every((k) => k in actual && matches(expected[k]!, actual[k]));
  }
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => matches(e, actual[i]));
  }
  if (typeof expected === "number") return asNumber(actual) === expected;
  return expected === actual;
}

function exact(expected: Json, actual: Json | undefined): boolean {
  if (isObject(expected)) {
    if (!isObject(actual)) return false;
    const keys = Object.keys(expected);
    return keys.length === Object.keys(actual).length && keys.every((k) => k in actual && exact(expected[k]!, actual[k]));
  }
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => exact(e, actual[i]));
  }
  if (typeof expected === "number") return asNumber(actual) === expected;
  return expected === actual;
}

function lookup(value: Json | undefined, path: string): string {
  let current = value;
  for (const segment of path.split(".")) {
    if (Array.isArray(current) && /^\d+$/.test(segment) && Number(segment) < current.length) {
      current = current[Number(segment)];
    } else if (isObject(current) && segment in current) {
      current = current[segment];
    } else {
      throw new ScenarioFailure(`save path ${JSON.stringify(path)} not found in ${JSON.stringify(value)}`);
    }
  }
  if (typeof current === "string") return current;
  if (typeof current === "number") return String(current);
  throw new ScenarioFailure(`save path ${JSON.stringify(path)} is not a string or number: ${JSON.stringify(current)}`);
}

/** gRPC status code names ("NOT_FOUND") of Connect's codes. */
function codeName(code: Code | 0): string {
  if (code === 0) return "OK";
  if (code === Code.Canceled) return "CANCELLED";
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function render(schema: DescMessage, message: Message): Json {
  return toJson(schema, message, { alwaysEmitImplicit: true, registry });
}

/** The .proto field name of the oneof `event` member that is set. */
function eventName(schema: DescMessage, message: Message): string {
  const oneof = schema.oneofs.find((o) => o.name === "event")!;
  const selected = (message as unknown as { event: { case: string | undefined } }).event.case;
  return oneof.fields.find((f) => f.localName === selected)?.name ?? "(none)";
}

function eventNames(schema: DescMessage, messages: Message[]): string[] {
  const names: string[] = [];
  for (const m of messages) {
    const name = eventName(schema, m);
    if (name === "delta" && names[names.length - 1] === "delta") continue;
    names.push(name);
  }
  return names;
}

function deltaText(messages: Message[]): string {
  return messages
    .map((m) => (m as unknown as { event: { case: string; value: { text?: string } } }).event)
    .filter((e) => e.case === "delta")
    .map((e) => e.value.text ?? "")
    .join("");
}

function check(what: string, expected: Json, actual: Json | undefined, exactly = false): void {
  const ok = exactly ? JSON.stringify(expected) === JSON.stringify(actual) : matches(expected, actual);
  if (!ok) {
    throw new ScenarioFailure(`${what} mismatch\n  expected: ${JSON.stringify(expected)}\n  actual:   ${JSON.stringify(actual ?? null)}`);
  }
}

function checkStatus(expect: JsonObj, code: string, message: string): void {
  const wanted = (expect["code"] as string | undefined) ?? "OK";
  if (code !== wanted) throw new ScenarioFailure(`expected status ${wanted}, got ${code}: ${JSON.stringify(message)}`);
  const contains = expect["messageContains"] as string | undefined;
  if (contains !== undefined && !message.includes(contains)) {
    throw new ScenarioFailure(`status message ${JSON.stringify(message)} does not contain ${JSON.stringify(contains)}`);
  }
}

function status(error: unknown): [string, string] {
  const e = ConnectError.from(error);
  return [codeName(e.code), e.rawMessage];
}

function resolveMethod(fullName: string): [DescService, DescMethod] {
  const [serviceName, methodName] = fullName.split("/");
  const service = registry.getService(serviceName ?? "");
  const method = service?.methods.find((m) => m.name === methodName);
  if (!service || !method) throw new ScenarioFailure(`unknown method ${JSON.stringify(fullName)}`);
  return [service, method];
}

type AnyFn = (request: unknown, options?: { timeoutMs?: number; signal?: AbortSignal }) => unknown;

/** Runs scenarios over a transport to a live contextd. */
export class Runner {
  constructor(
    private readonly transport: Transport,
    private readonly timeoutMs = 30000,
  ) {}

  async run(scenario: Scenario): Promise<void> {
    const vars = new Map([["run", randomBytes(4).toString("hex")]]);
    for (const [index, raw] of scenario.steps.entries()) {
      try {
        const { frames, ...rest } = raw;
        // Converse frames are substituted one by one as they run.
        const step = substitute(rest, vars) as JsonObj;
        await this.step(step, frames as JsonObj[] | undefined, vars);
      } catch (error) {
        if (error instanceof ScenarioFailure) {
          throw new ScenarioFailure(`scenario ${JSON.stringify(scenario.name)} step ${index} (${String(raw["rpc"])}): ${error.message}`);
        }
        throw error;
      }
    }
  }

  private call(service: DescService, method: DescMethod): AnyFn {
    const client = createClient(service, this.transport) as unknown as Record<string, AnyFn>;
    return client[method.localName]!.bind(client);
  }

  private async step(step: JsonObj, frames: JsonObj[] | undefined, vars: Map<string, string>): Promise<void> {
    const [service, method] = resolveMethod(step["rpc"] as string);
    const fn = this.call(service, method);
    if (method.methodKind === "bidi_streaming") {
      await this.converse(fn, method, frames ?? [], vars);
      return;
    }
    const expect = (step["expect"] as JsonObj | undefined) ?? {};
    const request = fromJson(method.input, (step["request"] as Json) ?? {}, { registry });
    const save = (step["save"] as Record<string, string> | undefined) ?? {};
    if (method.methodKind === "server_streaming") {
      const received: Message[] = [];
      let [code, message] = ["OK", ""];
      try {
        for await (const event of fn(request, { timeoutMs: this.timeoutMs }) as AsyncIterable<Message>) received.push(event);
      } catch (error) {
        [code, message] = status(error);
      }
      checkStatus(expect, code, message);
      if ("events" in expect) check("events", expect["events"]!, eventNames(method.output, received), true);
      if ("text" in expect) check("text", expect["text"]!, deltaText(received), true);
      const last = received.length ? render(method.output, received[received.length - 1]!) : null;
      if ("last" in expect) check("last event", expect["last"]!, last);
      for (const [name, path] of Object.entries(save)) vars.set(name, lookup(last, path));
      return;
    }
    let rendered: Json = null;
    let [code, message] = ["OK", ""];
    try {
      rendered = render(method.output, (await fn(request, { timeoutMs: this.timeoutMs })) as Message);
    } catch (error) {
      [code, message] = status(error);
    }
    checkStatus(expect, code, message);
    if ("response" in expect) check("response", expect["response"]!, rendered);
    for (const [name, path] of Object.entries(save)) vars.set(name, lookup(rendered, path));
  }

  private async converse(fn: AnyFn, method: DescMethod, frames: JsonObj[], vars: Map<string, string>): Promise<void> {
    const requests = new AsyncQueue<Message>();
    const abort = new AbortController();
    const responses = (fn(requests, { signal: abort.signal, timeoutMs: this.timeoutMs }) as AsyncIterable<Message>)[
      Symbol.asyncIterator
    ]();
    let ended = false;
    // One read at a time; each resolves to a message, or the stream's end with its status.
    const read = async (): Promise<{ message?: Message; end?: [string, string] }> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ScenarioFailure(`no event within ${this.timeoutMs} ms`)), this.timeoutMs);
      });
      try {
        const next = responses.next().then(
          (r) => (r.done ? { end: ["OK", ""] as [string, string] } : { message: r.value }),
          (error: unknown) => ({ end: status(error) }),
        );
        const result = await Promise.race([next, timeout]);
        if (result.end) ended = true;
        return result;
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      for (const [number, raw] of frames.entries()) {
        try {
          const frame = substitute(raw, vars) as JsonObj;
          if ("send" in frame) {
            requests.push(fromJson(method.input, frame["send"]!, { registry }));
          } else if ("until" in frame) {
            const received: Message[] = [];
            for (;;) {
              const got = await read();
              if (got.end) {
                throw new ScenarioFailure(
                  `stream ended with ${got.end[0]} ${JSON.stringify(got.end[1])} before ${JSON.stringify(frame["until"])}; ` +
                    `events read: ${JSON.stringify(eventNames(method.output, received))}`,
                );
              }
              received.push(got.message!);
              if (eventName(method.output, got.message!) === frame["until"]) break;
            }
            if ("events" in frame) check("events", frame["events"]!, eventNames(method.output, received), true);
            if ("text" in frame) check("text", frame["text"]!, deltaText(received), true);
            const last = render(method.output, received[received.length - 1]!);
            if ("last" in frame) check("last", frame["last"]!, last);
            for (const [name, path] of Object.entries((frame["save"] as Record<string, string>) ?? {})) {
              vars.set(name, lookup(last, path));
            }
          } else if (frame["close"] === true) {
            requests.end();
            const leftover: Json[] = [];
            let end: [string, string];
            for (;;) {
              const got = await read();
              if (got.end) {
                end = got.end;
                break;
              }
              leftover.push(render(method.output, got.message!));
            }
            if (leftover.length) throw new ScenarioFailure(`events after close: ${JSON.stringify(leftover)}`);
            checkStatus(frame, end[0], end[1]);
          } else {
            throw new ScenarioFailure(`frame has none of send/until/close: ${JSON.stringify(frame)}`);
          }
        } catch (error) {
          if (error instanceof ScenarioFailure) throw new ScenarioFailure(`frame ${number}: ${error.message}`);
          throw error;
        }
      }
    } finally {
      requests.end();
      if (!ended) abort.abort();
    }
  }
}
