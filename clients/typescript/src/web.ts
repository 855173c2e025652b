/**
 * The browser entry of the contextd client (`@contextd/client/web`): the four services over
 * connect-web, with the gRPC-Web or the Connect protocol (a browser cannot speak gRPC), and
 * `Converse` over contextd's WebSocket (a browser cannot send a request stream). The Node entry
 * (`@contextd/client`) stays on gRPC over HTTP/2.
 *
 * ```ts
 * import { connectWeb, ConverseSocket } from "@contextd/client/web";
 * const client = connectWeb("https://contextd.example.com", { protocol: "grpc-web" });
 * const reply = await client.interact.interact({ sessionId: "s1", message: "Hello" });
 * ```
 *
 * A page of another origin needs that origin in contextd's `http.cors_origins`.
 */
import { create, fromJson, toJson, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import {
  ConverseRequestSchema,
  ConverseResponseSchema,
  InteractService,
  type ConverseOpenSchema,
  type ConverseResponse,
} from "./gen/contextd/v1/interact_pb.js";
import { ModelService } from "./gen/contextd/v1/model_pb.js";
import { SessionService } from "./gen/contextd/v1/session_pb.js";
import { ToolService } from "./gen/contextd/v1/tool_pb.js";
import { AsyncQueue } from "./queue.js";

export { Code, ConnectError } from "@connectrpc/connect";
export { FinishReason } from "./gen/contextd/v1/common_pb.js";
export type { ConverseResponse } from "./gen/contextd/v1/interact_pb.js";

/** How a page reaches contextd. */
export interface WebOptions {
  /** `"connect"` (default; JSON, readable in the browser's network panel) or `"grpc-web"`. */
  protocol?: "connect" | "grpc-web";
  /** Send protobuf instead of JSON (Connect only; gRPC-Web is always protobuf). */
  binary?: boolean;
}

/** The contextd services, each a connect-es client. */
export interface WebClient {
  readonly interact: Client<typeof InteractService>;
  readonly sessions: Client<typeof SessionService>;
  readonly tools: Client<typeof ToolService>;
  readonly models: Client<typeof ModelService>;
}

/** Clients of contextd at `baseUrl` (`http(s)://host:port`) over connect-web. */
export function connectWeb(baseUrl: string, options: WebOptions = {}): WebClient {
  const transport: Transport =
    options.protocol === "grpc-web"
      ? createGrpcWebTransport({ baseUrl })
      : createConnectTransport({ baseUrl, useBinaryFormat: options.binary ?? false });
  return {
    interact: createClient(InteractService, transport),
    sessions: createClient(SessionService, transport),
    tools: createClient(ToolService, transport),
    models: createClient(ModelService, transport),
  };
}

/** One `ConverseRequest` frame, as its init shape. */
export type ConverseFrame = MessageInitShape<typeof ConverseRequestSchema>;

/** The part of the WebSocket API this client uses (a browser's `WebSocket`). */
interface Socket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/**
 * A Converse stream over contextd's WebSocket (`/v1/sessions/{id}:converse`), in text frames of
 * proto3 JSON. Iterate it for the events; it ends when the socket closes, and rejects with a
 * `ConnectError` when the server closes on an error (close code 4000 + the status code).
 */
export class ConverseSocket implements AsyncIterable<ConverseResponse> {
  private readonly events = new AsyncQueue<ConverseResponse | ConnectError>();

  private constructor(private readonly socket: Socket) {
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      this.events.push(fromJson(ConverseResponseSchema, JSON.parse(event.data), { ignoreUnknownFields: true }));
    };
    socket.onclose = (event) => {
      if (event.code >= 4000 && event.code < 4100) {
        this.events.push(new ConnectError(event.reason, (event.code - 4000) as Code));
      }
      this.events.end();
    };
  }

  /** Opens a socket and sends the `open` frame (its session is the path's). */
  static open(
    baseUrl: string,
    sessionId: string,
    open: MessageInitShape<typeof ConverseOpenSchema> = {},
  ): Promise<ConverseSocket> {
    const url = `${baseUrl.replace(/^http/, "ws")}/v1/sessions/${encodeURIComponent(sessionId)}:converse`;
    const Constructor = (globalThis as unknown as { WebSocket: new (url: string) => Socket }).WebSocket;
    const socket = new Constructor(url);
    return new Promise((resolve, reject) => {
      socket.onerror = () => reject(new ConnectError(`cannot open a WebSocket to ${url}`, Code.Unavailable));
      socket.onopen = () => {
        const conversation = new ConverseSocket(socket);
        conversation.send({ frame: { case: "open", value: { ...open, sessionId } } });
        resolve(conversation);
      };
    });
  }

  /** Sends one frame: `userMessage`, `toolResults` or `cancel`. */
  send(frame: ConverseFrame): void {
    this.socket.send(JSON.stringify(toJson(ConverseRequestSchema, create(ConverseRequestSchema, frame))));
  }

  /** Closes the socket (1000); the server answers what it can and closes too. */
  close(): void {
    this.socket.close(1000);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ConverseResponse> {
    for await (const item of this.events) {
      if (item instanceof ConnectError) throw item;
      yield item;
    }
  }
}
