/**
 * TypeScript client for contextd, the gRPC service that keeps LLM conversations.
 *
 * ```ts
 * import { connect } from "@contextd/client";
 * const client = connect("127.0.0.1:61900");
 * const reply = await client.interact("alpha", "Hello, I am John.", { context: { user_id: "john_doe" } });
 * console.log(reply.response, reply.updatedContext);
 * client.close();
 * ```
 *
 * Failures reject with `ConnectError`, whose `code` is the gRPC status code.
 */
import { ContextdClient, DEFAULT_TARGET, type ConnectOptions } from "./client.js";

export {
  ContextdClient,
  Conversation,
  DEFAULT_TARGET,
  needsToolResults,
  runToolHandler,
} from "./client.js";
export type {
  CallOptions,
  ConnectOptions,
  ConverseEvent,
  KeyInit,
  Page,
  SessionInit,
  SessionUpdate,
  StreamEvent,
  ToolHandler,
  ToolOutput,
  ToolResultInit,
  ToolSpec,
  TurnInput,
  WindowSettingsInit,
} from "./client.js";
export { Code, ConnectError } from "@connectrpc/connect";
export type { JsonObject, JsonValue } from "@bufbuild/protobuf";
export { timestampDate } from "@bufbuild/protobuf/wkt";
export * from "./gen/contextd/v1/common_pb.js";
export * from "./gen/contextd/v1/interact_pb.js";
export * from "./gen/contextd/v1/session_pb.js";
export * from "./gen/contextd/v1/tool_pb.js";
export * from "./gen/contextd/v1/model_pb.js";
export * from "./gen/contextd/v1/admin_pb.js";

/** A client for contextd at `target` (host:port). */
export function connect(target: string = DEFAULT_TARGET, options: ConnectOptions = {}): ContextdClient {
  return new ContextdClient(target, options);
}
