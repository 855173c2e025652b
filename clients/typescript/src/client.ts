/**
 * The contextd client: one HTTP/2 connection, one method per contextd operation, plain objects
 * for contexts and for results (the wrapper's own types of `plain.ts`: enum names as strings,
 * counts as numbers), `ConnectError` (with its `code`) for failures.
 */
import { toJson, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { readFileSync } from "node:fs";
import type * as http2 from "node:http2";

import {
  MessageSchema,
  SessionSchema,
  WindowStrategy,
  type Message as WireMessage,
  type Session as WireSession,
  type ToolCall as WireToolCall,
  type ToolDefinition as WireToolDefinition,
  type Usage as WireUsage,
} from "./gen/contextd/v1/common_pb.js";
import {
  ConverseResponseSchema,
  InteractResponseSchema,
  InteractService,
  StreamResponseResponseSchema,
  type ConverseOpenSchema,
  type ConverseRequestSchema,
  type ConverseResponse,
  type InteractResponse,
  type StreamResponseResponse,
} from "./gen/contextd/v1/interact_pb.js";
import {
  PreviewContextResponseSchema,
  SessionService,
  type CreateSessionRequestSchema,
  type PreviewContextResponse,
  type UpdateSessionRequestSchema,
} from "./gen/contextd/v1/session_pb.js";
import { ListModelsResponseSchema, ModelService, type ListModelsResponse } from "./gen/contextd/v1/model_pb.js";
import { ListToolsResponseSchema, ToolService, type ListToolsResponse } from "./gen/contextd/v1/tool_pb.js";
import {
  AdminService,
  ApiKeySchema,
  CreateKeyResponseSchema,
  DeleteTenantResponseSchema,
  ExportTenantResponseSchema,
  KeyRole,
  TenantUsageSchema,
  type ApiKey as WireApiKey,
  type CreateKeyResponse,
  type DeleteTenantResponse,
  type ExportTenantResponse,
  type TenantUsage as WireTenantUsage,
} from "./gen/contextd/v1/admin_pb.js";
import { oneofToPlain, toPlain, type KeyRoleName, type Plain, type WindowStrategyName } from "./plain.js";
import { AsyncQueue } from "./queue.js";

// The results, as the wrapper returns them: plain objects with the generated messages' field
// names, enums as their proto names, counts as numbers, timestamps as Date (see plain.ts). The
// generated messages stay available as `pb.*`.

/** A session, with its context, state and pending tool calls. */
export type Session = Plain<WireSession>;
/** One message of a session's history. */
export type Message = Plain<WireMessage>;
/** A turn's outcome (`InteractResponse`): `response`, `updatedContext`, `finishReason`, `toolCalls`, `usage`… */
export type Reply = Plain<InteractResponse>;
/** A client-side tool call the model made. */
export type ToolCall = Plain<WireToolCall>;
/** A tool definition as the server returns it. */
export type ToolDefinition = Plain<WireToolDefinition>;
/** Token counts. */
export type Usage = Plain<WireUsage>;
/** What `listModels` returns. */
export type ModelList = Plain<ListModelsResponse>;
/** What `listTools` returns: `tools` (server-side), `sessionTools` and `offeredTools`. */
export type ToolList = Plain<ListToolsResponse>;
/** What `previewContext` returns: the window the model would see. */
export type ContextPreview = Plain<PreviewContextResponse>;
/** An API key as `listKeys` shows it (never its secret). */
export type ApiKey = Plain<WireApiKey>;
/** A new key (`createKey`): `secret`, shown only here, and `key`. */
export type CreatedKey = Plain<CreateKeyResponse>;
/** A tenant with what it stores. */
export type TenantUsage = Plain<WireTenantUsage>;
/** One record of `exportTenant`: `record.case` is `"session"` or `"message"`. */
export type ExportRecord = Plain<ExportTenantResponse>;
/** What `deleteTenant` deleted. */
export type DeletedTenant = Plain<DeleteTenantResponse>;

/** Where contextd listens by default. */
export const DEFAULT_TARGET = "127.0.0.1:61900";

/** How to reach contextd. */
export interface ConnectOptions {
  /** Use TLS (https). Default false: plaintext HTTP/2; `ca`, `caFile`, `cert` and `certFile` imply it. */
  tls?: boolean;
  /** PEM of the CA that issued the server's certificate (default: Node's roots). */
  ca?: string | Buffer;
  /** `ca`, read from this PEM file. */
  caFile?: string;
  /** PEM client certificate chain, shown to servers that require one (mTLS); needs `key`. */
  cert?: string | Buffer;
  /** PEM private key of `cert`. */
  key?: string | Buffer;
  /** `cert`, read from this PEM file; needs `keyFile`. */
  certFile?: string;
  /** `key`, read from this PEM file. */
  keyFile?: string;
  /** The name the server's certificate must carry, when it is not the target's host. */
  serverName?: string;
  /** Node http2 options, e.g. `{ ca }` for a private certificate authority. */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** The API key (`ctxd_…`), sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Extra headers (metadata) on every call. */
  headers?: Record<string, string>;
  /** Default deadline of unary calls, in milliseconds. */
  timeoutMs?: number;
  /** More interceptors, run after the one that adds the headers. */
  interceptors?: Interceptor[];
}

type ConverseFrame = MessageInitShape<typeof ConverseRequestSchema>;

/** A streamed turn's event (`StreamResponse`). Unknown kinds are skipped. */
export type StreamEvent = Plain<Exclude<StreamResponseResponse["event"], { case: undefined }>>;

/** A Converse event, with the turn it belongs to. Unknown kinds are skipped. */
export type ConverseEvent = Plain<Exclude<ConverseResponse["event"], { case: undefined }>> & { turnId: string };

/**
 * Answers one client-side tool call: return the result's text, any JSON value (sent as JSON
 * text), or a full ToolResult; throwing sends `isError: true` with the error's message.
 */
export type ToolHandler = (call: ToolCall) => unknown | Promise<unknown>;

/** A tool definition as plain data. */
export interface ToolSpec {
  name: string;
  description?: string;
  inputSchema?: JsonObject;
  /**
   * Hints about the tool's behaviour in the shape of MCP's `ToolAnnotations` (`title`,
   * `readOnlyHint`, ...). contextd never acts on them; on an MCP server's tools they are that
   * server's word, unverified.
   */
  annotations?: JsonObject;
}

/** A tool result as plain data. */
export interface ToolResultInit {
  toolCallId: string;
  content: string;
  isError?: boolean;
}

/** Fields of a new session (CreateSession, or Converse's open). */
export interface SessionInit {
  systemPrompt?: string;
  context?: JsonObject;
  model?: string;
  tools?: (ToolSpec | WireToolDefinition)[];
  labels?: Record<string, string>;
  maxContextTokens?: number;
  /** When the session expires (in the future); unset: the server's idle TTL, if any. */
  expireTime?: Date;
  /** How the context window is managed; unset: sliding window. */
  window?: WindowSettingsInit;
  /**
   * Server-side tools offered to the model: names or `*` patterns such as `time__*` (`[]`:
   * none); unset: the server's `engine.default_server_tools`.
   */
  serverTools?: string[];
}

/** Window settings as plain data (`strategy` by name, such as `"WINDOW_STRATEGY_SUMMARIZE"`, or value). */
export interface WindowSettingsInit {
  strategy?: WindowStrategyName | WindowStrategy;
  summarizeThresholdPercent?: number;
  summarizerModel?: string;
}

/** Changes to a session; `context` is a JSON merge patch (`null` deletes a key). */
export interface SessionUpdate {
  context?: JsonObject;
  systemPrompt?: string;
  tools?: (ToolSpec | WireToolDefinition)[];
  model?: string;
  maxContextTokens?: number;
  labels?: Record<string, string>;
  removeLabels?: string[];
  /** Apply only while the session's `etag` is still this one (ABORTED otherwise). */
  etag?: string;
  /** A new fixed expiry. */
  expireTime?: Date;
  /** New window settings (the running summary is kept). */
  window?: WindowSettingsInit;
  /** Replaces the server-side tools offered to the model (names or `*` patterns; `[]`: none). */
  serverTools?: string[];
  /**
   * Forgets the session's own `serverTools`, so it is offered the server's
   * `engine.default_server_tools` again (INVALID_ARGUMENT together with `serverTools`).
   */
  resetServerTools?: boolean;
}

/** One turn's input. */
export interface TurnInput {
  /** JSON merge patch for the session's context. */
  context?: JsonObject;
  /** Results for the calls a paused turn waits for. */
  toolResults?: ToolResultInit[];
  /**
   * Makes the turn safe to repeat: a repeat with the same key on the session, within the
   * server's `limits.idempotency_window`, gets the first attempt's outcome instead of a second
   * turn. Use a fresh key (a UUID) per new message and the same one for its retries.
   */
  idempotencyKey?: string;
  /**
   * Abandons the turn paused for client-side tools instead (with no message and no tool
   * results): every pending call gets the error result "cancelled by the client", the turn
   * ends with FINISH_REASON_CANCELLED without another model step, and the session is idle
   * again. INVALID_ARGUMENT when nothing is pending.
   */
  abandonToolCalls?: boolean;
  /** Abort the call. */
  signal?: AbortSignal;
}

/** What a server-side tool returned through `callTool`. */
export interface ToolOutput {
  /** The result as text. */
  content: string;
  /** The result as JSON, when the tool has one. */
  structuredContent: JsonValue | undefined;
  /** The tool ran and failed. */
  isError: boolean;
}

/** Per-call options of the unary calls. */
export interface CallOptions {
  /** Abort the call (it rejects with `Code.Canceled`). */
  signal?: AbortSignal;
  /** Deadline of this call in milliseconds; default: the client's `timeoutMs`. */
  timeoutMs?: number;
}

/** A new API key's settings (`createKey`). */
export interface KeyInit extends CallOptions {
  /** `"user"` (default: the tenant's sessions only) or `"admin"` (also keys and tenants). */
  role?: "user" | "admin" | KeyRoleName | KeyRole;
  /** A note for `listKeys`, such as who holds the key. */
  label?: string;
  /** How long the key works, in milliseconds; unset: until revoked. */
  ttlMs?: number;
}

/** One page of a listing. */
export interface Page<T> {
  items: T[];
  /** Pass back for the next page; "" at the end. */
  nextPageToken: string;
}

function toolResult(call: ToolCall, value: unknown): ToolResultInit {
  if (typeof value === "string") return { toolCallId: call.toolCallId, content: value };
  if (value !== null && typeof value === "object" && "content" in value && "toolCallId" in value) {
    const result = value as ToolResultInit;
    return { toolCallId: result.toolCallId || call.toolCallId, content: result.content, isError: result.isError ?? false };
  }
  return { toolCallId: call.toolCallId, content: JSON.stringify(value as JsonValue) ?? "null" };
}

/** Runs the handler for each call; a throw becomes an `isError` result. */
export async function runToolHandler(handler: ToolHandler, calls: ToolCall[]): Promise<ToolResultInit[]> {
  const results: ToolResultInit[] = [];
  for (const call of calls) {
    try {
      results.push(toolResult(call, await handler(call)));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      results.push({ toolCallId: call.toolCallId, content: message || "tool failed", isError: true });
    }
  }
  return results;
}

/** True when the turn paused for client-side tools (see `toolCalls`). */
export function needsToolResults(result: Reply): boolean {
  return result.finishReason === "FINISH_REASON_TOOL_CALLS";
}

/** `WindowSettingsInit` for the wire: a strategy's name becomes its value. */
function windowSettings(window: WindowSettingsInit | undefined) {
  if (window === undefined || typeof window.strategy !== "string") return window as { strategy?: WindowStrategy } | undefined;
  const name = window.strategy.replace(/^WINDOW_STRATEGY_/, "") as keyof typeof WindowStrategy;
  const strategy = WindowStrategy[name];
  if (strategy === undefined) throw new ConnectError(`unknown window strategy ${window.strategy}`, Code.InvalidArgument);
  return { ...window, strategy };
}

/** The Node TLS options that `options` ask for; undefined when they name no TLS material. */
function tlsOptions(options: ConnectOptions): http2.SecureClientSessionOptions | undefined {
  const read = (what: string, path: string | undefined): Buffer | undefined => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (error) {
      throw new Error(`cannot read the ${what} ${path}: ${(error as Error).message}`);
    }
  };
  const ca = options.ca ?? read("CA file", options.caFile);
  const cert = options.cert ?? read("client certificate file", options.certFile);
  const key = options.key ?? read("client key file", options.keyFile);
  if ((cert === undefined) !== (key === undefined)) {
    throw new Error("a client certificate and its key go together (mTLS needs both)");
  }
  if (ca === undefined && cert === undefined && options.serverName === undefined) return undefined;
  const tls: http2.SecureClientSessionOptions = {};
  if (ca !== undefined) tls.ca = ca;
  if (cert !== undefined) tls.cert = cert;
  if (key !== undefined) tls.key = key;
  if (options.serverName !== undefined) tls.servername = options.serverName;
  return tls;
}

/** A contextd client. Call `close()` when done, so the process can exit. */
export class ContextdClient {
  private readonly sessionManager: Http2SessionManager;
  private readonly sessions: Client<typeof SessionService>;
  private readonly turns: Client<typeof InteractService>;
  private readonly tools: Client<typeof ToolService>;
  private readonly models: Client<typeof ModelService>;
  private readonly admin: Client<typeof AdminService>;
  private readonly timeoutMs: number | undefined;

  constructor(target: string = DEFAULT_TARGET, options: ConnectOptions = {}) {
    const tls = tlsOptions(options);
    const baseUrl = `${options.tls || tls ? "https" : "http"}://${target}`;
    this.sessionManager = new Http2SessionManager(baseUrl, undefined, { ...options.nodeOptions, ...tls });
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (options.token) headers["authorization"] = `Bearer ${options.token}`;
    const addHeaders: Interceptor = (next) => (request) => {
      for (const [name, value] of Object.entries(headers)) request.header.set(name, value);
      return next(request);
    };
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessionManager,
      interceptors: [addHeaders, ...(options.interceptors ?? [])],
    });
    this.sessions = createClient(SessionService, transport);
    this.turns = createClient(InteractService, transport);
    this.tools = createClient(ToolService, transport);
    this.models = createClient(ModelService, transport);
    this.admin = createClient(AdminService, transport);
    this.timeoutMs = options.timeoutMs;
  }

  private options(call: CallOptions): { timeoutMs: number | undefined; signal: AbortSignal | undefined } {
    return { timeoutMs: call.timeoutMs ?? this.timeoutMs, signal: call.signal };
  }

  /** Closes the connection. */
  close(): void {
    this.sessionManager.abort();
  }

  // Sessions

  /** Creates a session (an empty id lets the server choose one). */
  async createSession(sessionId = "", init: SessionInit = {}, call: CallOptions = {}): Promise<Session> {
    const request: MessageInitShape<typeof CreateSessionRequestSchema> = {
      sessionId,
      ...init,
      expireTime: init.expireTime ? timestampFromDate(init.expireTime) : undefined,
      window: windowSettings(init.window),
      serverTools: serverToolSelection(init.serverTools),
    };
    const response = await this.sessions.createSession(request, this.options(call));
    return toPlain(SessionSchema, required(response.session));
  }

  /** The session, with its context, state and pending tool calls. */
  async getSession(sessionId: string, call: CallOptions = {}): Promise<Session> {
    return toPlain(SessionSchema, required((await this.sessions.getSession({ sessionId }, this.options(call))).session));
  }

  /** One page of sessions, ordered by id. */
  async listSessions(options: { pageSize?: number; pageToken?: string } & CallOptions = {}): Promise<Page<Session>> {
    const { signal, timeoutMs, ...page } = options;
    const response = await this.sessions.listSessions(page, this.options({ signal, timeoutMs }));
    return { items: response.sessions.map((s) => toPlain(SessionSchema, s)), nextPageToken: response.nextPageToken };
  }

  /** Every session, page by page. */
  async *iterSessions(pageSize = 0): AsyncGenerator<Session> {
    let pageToken = "";
    do {
      const page = await this.listSessions({ pageSize, pageToken });
      yield* page.items;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Changes a session: `context` is merged as a JSON merge patch; the rest replace. */
  async updateSession(sessionId: string, update: SessionUpdate, call: CallOptions = {}): Promise<Session> {
    const request: MessageInitShape<typeof UpdateSessionRequestSchema> = {
      sessionId,
      context: update.context,
      systemPrompt: update.systemPrompt,
      model: update.model,
      maxContextTokens: update.maxContextTokens,
      labels: update.labels,
      removeLabels: update.removeLabels,
      tools: update.tools === undefined ? undefined : { tools: update.tools },
      etag: update.etag,
      expireTime: update.expireTime ? timestampFromDate(update.expireTime) : undefined,
      window: windowSettings(update.window),
      serverTools: serverToolSelection(update.serverTools),
      resetServerTools: update.resetServerTools,
    };
    return toPlain(SessionSchema, required((await this.sessions.updateSession(request, this.options(call))).session));
  }

  /**
   * Deletes a session; resolves to how many messages it had. With `etag`, only while the
   * session's etag is still that one (ABORTED otherwise).
   */
  async deleteSession(sessionId: string, call: CallOptions & { etag?: string } = {}): Promise<number> {
    const response = await this.sessions.deleteSession({ sessionId, etag: call.etag }, this.options(call));
    return Number(response.deletedMessages);
  }

  /** One page of the session's history, oldest first. */
  async listMessages(
    sessionId: string,
    options: { pageSize?: number; pageToken?: string } & CallOptions = {},
  ): Promise<Page<Message>> {
    const { signal, timeoutMs, ...page } = options;
    const response = await this.sessions.listMessages({ sessionId, ...page }, this.options({ signal, timeoutMs }));
    return { items: response.messages.map((m) => toPlain(MessageSchema, m)), nextPageToken: response.nextPageToken };
  }

  /**
   * Exactly what the model would see for `message` now. A summary the turn would write first
   * shows as a `CONTEXT_ENTRY_KIND_PENDING_SUMMARY` entry; with `summarize: true` it is written
   * now (a summarizer model call) and kept for the next turn unless the session changed
   * meanwhile (`summaryKept` says which).
   */
  async previewContext(
    sessionId: string,
    message = "",
    context?: JsonObject,
    options: CallOptions & { summarize?: boolean } = {},
  ): Promise<ContextPreview> {
    const { summarize = false, ...call } = options;
    return toPlain(
      PreviewContextResponseSchema,
      await this.sessions.previewContext({ sessionId, message, context, summarize }, this.options(call)),
    );
  }

  // Turns

  /**
   * Runs a turn. With `toolHandler`, client-side tool calls are answered by it and the turn is
   * continued until it finishes; without, a paused turn is returned (`needsToolResults`).
   */
  async interact(
    sessionId: string,
    message: string,
    input: TurnInput & { toolHandler?: ToolHandler } = {},
  ): Promise<Reply> {
    const options = { timeoutMs: this.timeoutMs, signal: input.signal };
    const send = async (request: Parameters<typeof this.turns.interact>[0]) =>
      toPlain(InteractResponseSchema, await this.turns.interact(request, options));
    let result = await send(
      {
        sessionId,
        message,
        context: input.context,
        toolResults: input.toolResults,
        idempotencyKey: input.idempotencyKey,
        abandonToolCalls: input.abandonToolCalls,
      },
    );
    while (input.toolHandler && needsToolResults(result)) {
      const toolResults = await runToolHandler(input.toolHandler, result.toolCalls);
      result = await send({ sessionId, toolResults });
    }
    return result;
  }

  /**
   * Runs a turn and yields its events: `started`, `delta`…, `toolCall` / `toolResult`, and
   * `completed` last. Breaking out of the loop cancels the call.
   */
  async *streamResponse(sessionId: string, message: string, input: TurnInput = {}): AsyncGenerator<StreamEvent> {
    const abort = new AbortController();
    const onAbort = () => abort.abort(input.signal?.reason);
    input.signal?.addEventListener("abort", onAbort);
    try {
      const stream = this.turns.streamResponse(
        {
        sessionId,
        message,
        context: input.context,
        toolResults: input.toolResults,
        idempotencyKey: input.idempotencyKey,
        abandonToolCalls: input.abandonToolCalls,
      },
        { signal: abort.signal },
      );
      for await (const response of stream) {
        if (response.event.case !== undefined) yield oneofToPlain(StreamResponseResponseSchema, "event", response.event) as StreamEvent;
      }
    } finally {
      input.signal?.removeEventListener("abort", onAbort);
      abort.abort();
    }
  }

  /**
   * Opens a Converse stream on the session (created with `init` when missing) and waits for
   * `opened`. `toolHandler` answers client-side tool calls automatically.
   */
  async converse(
    sessionId: string,
    init: SessionInit & { toolHandler?: ToolHandler; signal?: AbortSignal } = {},
  ): Promise<Conversation> {
    const { toolHandler, signal, ...open } = init;
    const conversation = new Conversation(this.turns, toolHandler, signal);
    await conversation.open({
      sessionId,
      ...open,
      expireTime: open.expireTime ? timestampFromDate(open.expireTime) : undefined,
      window: windowSettings(open.window),
      serverTools: serverToolSelection(open.serverTools),
    });
    return conversation;
  }

  // Models

  /** The models sessions may name, the configured provider backends and the default model. */
  async listModels(call: CallOptions = {}): Promise<ModelList> {
    return toPlain(ListModelsResponseSchema, await this.models.listModels({}, this.options(call)));
  }

  // Tools

  /** Server-side tools, plus the session's own tools when `sessionId` is given. */
  async listTools(sessionId = "", call: CallOptions = {}): Promise<ToolList> {
    return toPlain(ListToolsResponseSchema, await this.tools.listTools({ sessionId }, this.options(call)));
  }

  /** Runs a server-side tool directly; a tool that ran and failed has `isError`. */
  async callTool(name: string, args: JsonObject = {}, sessionId = "", call: CallOptions = {}): Promise<ToolOutput> {
    const response = await this.tools.callTool({ name, arguments: args, sessionId }, this.options(call));
    return {
      content: response.content,
      structuredContent: response.structuredContent ? toJson(ValueSchema, response.structuredContent) : undefined,
      isError: response.isError,
    };
  }

  // Keys and tenants (AdminService: an admin key, or a server with authentication off)

  /**
   * Makes an API key for `tenantId`. The response's `secret` is the key itself, shown only
   * here: pass it as the `token` option of a client. `key` is what `listKeys` will show of it.
   */
  async createKey(tenantId: string, init: KeyInit = {}): Promise<CreatedKey> {
    const { role, label, ttlMs, ...call } = init;
    const created = await this.admin.createKey(
      { tenantId, role: keyRole(role), label: label ?? "", ttl: ttlMs === undefined ? undefined : durationFromMs(ttlMs) },
      this.options(call),
    );
    return toPlain(CreateKeyResponseSchema, created);
  }

  /** Keys (never their secrets) of one tenant, or of all when `tenantId` is empty. */
  async listKeys(tenantId = "", call: CallOptions = {}): Promise<ApiKey[]> {
    return (await this.admin.listKeys({ tenantId }, this.options(call))).keys.map((k) => toPlain(ApiKeySchema, k));
  }

  /** Revokes a key by its id (as `listKeys` shows it); resolves to the revoked key. */
  async revokeKey(keyId: string, call: CallOptions = {}): Promise<ApiKey> {
    return toPlain(ApiKeySchema, required((await this.admin.revokeKey({ keyId }, this.options(call))).key));
  }

  /** Tenants with what they store: every one for an admin, a user key's own otherwise. */
  async listTenants(call: CallOptions = {}): Promise<TenantUsage[]> {
    return (await this.admin.listTenants({}, this.options(call))).tenants.map((t) => toPlain(TenantUsageSchema, t));
  }

  /**
   * Yields all of a tenant's data: each session (`record.case === "session"`), followed by its
   * history oldest first (`"message"`). Breaking out of the loop cancels the call.
   */
  async *exportTenant(tenantId: string, call: { signal?: AbortSignal } = {}): AsyncGenerator<ExportRecord> {
    const abort = new AbortController();
    const onAbort = () => abort.abort(call.signal?.reason);
    call.signal?.addEventListener("abort", onAbort);
    try {
      for await (const record of this.admin.exportTenant({ tenantId }, { signal: abort.signal })) {
        yield toPlain(ExportTenantResponseSchema, record);
      }
    } finally {
      call.signal?.removeEventListener("abort", onAbort);
      abort.abort();
    }
  }

  /** Deletes all of a tenant's sessions, histories and keys; resolves to the counts. */
  async deleteTenant(tenantId: string, call: CallOptions = {}): Promise<DeletedTenant> {
    return toPlain(DeleteTenantResponseSchema, await this.admin.deleteTenant({ tenantId }, this.options(call)));
  }
}

/** The KeyRole of a role name (or value). */
function keyRole(role: KeyInit["role"]): KeyRole {
  if (role === undefined || role === "user") return KeyRole.USER;
  if (role === "admin") return KeyRole.ADMIN;
  if (typeof role === "string") {
    const value = KeyRole[role.replace(/^KEY_ROLE_/, "") as keyof typeof KeyRole];
    if (value === undefined) throw new ConnectError(`unknown key role ${role}`, Code.InvalidArgument);
    return value;
  }
  return role;
}

/** A google.protobuf.Duration init of milliseconds. */
function durationFromMs(ms: number): { seconds: bigint; nanos: number } {
  if (!Number.isFinite(ms) || ms < 0) throw new ConnectError("ttlMs must be a non-negative number", Code.InvalidArgument);
  const whole = Math.floor(ms / 1000);
  return { seconds: BigInt(whole), nanos: Math.round((ms - whole * 1000) * 1e6) };
}

/**
 * One Converse stream: many turns on one session, one at a time. `send` yields a turn's events,
 * `ask` resolves to its result; with a tool handler, paused turns continue automatically.
 */
export class Conversation {
  /** The session as it was when the stream attached. */
  session!: Session;
  /** True when opening the stream created the session. */
  sessionCreated = false;
  private readonly requests = new AsyncQueue<ConverseFrame>();
  private readonly abort = new AbortController();
  private readonly responses: AsyncIterator<ConverseResponse>;
  private closed = false;
  /** A turn was started whose last event is not read yet. */
  private running = false;
  /** The session waits for tool results, as far as the events read so far tell. */
  private paused = false;
  /** The running turn is an abandon of the paused one (it takes no model step). */
  private abandoning = false;
  private turns = 0;

  constructor(
    client: Client<typeof InteractService>,
    private readonly toolHandler: ToolHandler | undefined,
    signal: AbortSignal | undefined,
  ) {
    signal?.addEventListener("abort", () => this.abort.abort(signal.reason));
    this.responses = client.converse(this.requests, { signal: this.abort.signal })[Symbol.asyncIterator]();
  }

  /** @internal Sends `open` and waits for `opened`. */
  async open(frame: MessageInitShape<typeof ConverseOpenSchema>): Promise<void> {
    this.requests.push({ frame: { case: "open", value: frame } });
    const first = await this.next();
    if (first.case === "opened") {
      this.session = required(first.value.session);
      this.sessionCreated = first.value.sessionCreated;
      this.paused = this.session.pendingToolCalls.length > 0;
      return;
    }
    this.abort.abort();
    if (first.case === "error") throw new ConnectError(first.value.message, first.value.code as Code);
    throw new ConnectError(`expected opened, got ${first.case}`, Code.Internal);
  }

  private async next(): Promise<ConverseEvent> {
    for (;;) {
      const { value, done } = await this.responses.next();
      if (done) throw new ConnectError("the server ended the stream", Code.Unavailable);
      if (value.event.case !== undefined) {
        return { ...(oneofToPlain(ConverseResponseSchema, "event", value.event) as object), turnId: value.turnId } as ConverseEvent;
      }
    }
  }

  private async *turn(turn: number): AsyncGenerator<ConverseEvent> {
    try {
      for (;;) {
        const event = await this.next();
        if (event.case === "completed") this.note(event.value);
        if (event.case === "error" && this.abandoning) this.paused = false;
        if (event.case === "error" || (event.case === "completed" && !(this.toolHandler && needsToolResults(event.value)))) {
          this.running = false;
          this.abandoning = false;
        }
        yield event;
        if (!this.running) return;
        if (event.case === "completed" && this.toolHandler) {
          const results = await runToolHandler(this.toolHandler, event.value.toolCalls);
          this.requests.push({ frame: { case: "toolResults", value: { results } } });
        }
      }
    } finally {
      // Left early (break, return, a throw): end the turn on the server.
      if (this.running && turn === this.turns && !this.closed) await this.abandon();
    }
  }

  /** Follows the session's pause: a cancelled continuation leaves it as it was. */
  private note(result: Reply): void {
    if (this.abandoning) this.paused = false;
    else if (result.finishReason !== "FINISH_REASON_CANCELLED") this.paused = needsToolResults(result) && !this.toolHandler;
  }

  /**
   * Cancels the running turn and reads the rest of it, so that the next turn's events are its
   * own. A turn that paused before the cancel reached it (its events unread) is abandoned by
   * the cancel; a turn whose pause was read is not running, and stays paused. An abandon
   * (which takes no model step) is read to its end instead of cancelled.
   */
  private async abandon(): Promise<void> {
    this.running = false;
    if (this.abandoning) {
      this.abandoning = false;
      this.paused = false;
      for (;;) {
        const event = await this.next();
        if (event.case === "completed" || event.case === "error") return;
      }
    }
    this.requests.push({ frame: { case: "cancel", value: {} } });
    for (;;) {
      const event = await this.next();
      if (event.case === "completed" && event.value.finishReason !== "FINISH_REASON_CANCELLED") this.paused = false;
      if (event.case === "completed" || event.case === "error") break;
    }
    // The cancel is answered by the `completed` above or, when the turn had ended before it
    // arrived, by a FAILED_PRECONDITION error still to come. An empty frame, answered in
    // order with INVALID_ARGUMENT, marks where those answers end.
    this.requests.push({ frame: { case: undefined } });
    for (;;) {
      const event = await this.next();
      if (event.case === "error" && event.value.code === Code.InvalidArgument && event.turnId === "") return;
    }
  }

  private async begin(frame: ConverseFrame): Promise<number> {
    if (this.running) await this.abandon();
    this.requests.push(frame);
    this.running = true;
    return ++this.turns;
  }

  /**
   * Sends a user message; yields the turn's events up to the final `completed` (or `error`).
   * Leaving the loop early cancels the turn (nothing of it is stored); so does sending the
   * next message before this turn's events are read.
   */
  async *send(message: string, context?: JsonObject, idempotencyKey?: string): AsyncGenerator<ConverseEvent> {
    const turn = await this.begin({
      frame: { case: "userMessage", value: { message, context, idempotencyKey } },
    });
    yield* this.turn(turn);
  }

  /** Continues a paused turn with results for its pending calls; yields its events. */
  async *sendToolResults(results: ToolResultInit[]): AsyncGenerator<ConverseEvent> {
    const turn = await this.begin({ frame: { case: "toolResults", value: { results } } });
    yield* this.turn(turn);
  }

  /**
   * Sends a user message and resolves to the turn's result; a failed frame rejects. With an
   * `idempotencyKey`, a message resent after a broken stream gets its first outcome.
   */
  async ask(message: string, context?: JsonObject, idempotencyKey?: string): Promise<Reply> {
    let result: Reply | undefined;
    for await (const event of this.send(message, context, idempotencyKey)) {
      if (event.case === "error") throw new ConnectError(event.value.message, event.value.code as Code);
      if (event.case === "completed") result = event.value;
    }
    return required(result);
  }

  /**
   * Cancels the running turn: it ends with FINISH_REASON_CANCELLED and nothing is stored. While
   * the session waits for tool results (a paused `completed` was read and not answered),
   * abandons the paused turn instead, as `abandonToolCalls` does; the next `send` reads the
   * abandon's events first.
   */
  cancel(): void {
    this.requests.push({ frame: { case: "cancel", value: {} } });
    if (!this.running && this.paused) {
      this.running = true;
      this.abandoning = true;
      this.turns++;
    }
  }

  /**
   * Abandons the turn paused for tool results: every pending call gets the error result
   * "cancelled by the client", stored with its call; the turn ends with
   * FINISH_REASON_CANCELLED without another model step and the session is idle again.
   * Resolves to that result; rejects with FAILED_PRECONDITION when nothing is paused.
   */
  async abandonToolCalls(): Promise<Reply> {
    const turn = await this.begin({ frame: { case: "cancel", value: {} } });
    this.abandoning = true;
    let result: Reply | undefined;
    for await (const event of this.turn(turn)) {
      if (event.case === "error") throw new ConnectError(event.value.message, event.value.code as Code);
      if (event.case === "completed") result = event.value;
    }
    return required(result);
  }

  /** Half-closes the stream and waits for the server to end it; rejects on a non-OK status. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.requests.end();
    for (;;) {
      const { done } = await this.responses.next();
      if (done) return;
    }
  }

  /** Ends the stream at once, without waiting. */
  abortNow(): void {
    this.closed = true;
    this.requests.end();
    this.abort.abort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function required<T>(value: T | undefined): T {
  if (value === undefined) throw new ConnectError("the server sent an empty response", Code.Internal);
  return value;
}

/** A selection of server-side tools for the wire; `undefined` leaves the field unset. */
function serverToolSelection(patterns: string[] | undefined): { patterns: string[] } | undefined {
  return patterns === undefined ? undefined : { patterns };
}
