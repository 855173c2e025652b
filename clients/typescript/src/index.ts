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
 * Results are the wrapper's own plain types (`Reply`, `Session`, `Message`, …): enums by their
 * proto names (`"FINISH_REASON_STOP"`), counts as `number`, timestamps as `Date`. The generated
 * messages are under `pb` (`pb.InteractResponse`, `pb.InteractResponseSchema`, …); the enums
 * are exported here too, as inputs may use them. Failures reject with `ConnectError`, whose
 * `code` is the gRPC status code.
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
  ApiKey,
  CallOptions,
  ContextPreview,
  CreatedKey,
  DeletedTenant,
  ExportRecord,
  Message,
  ModelList,
  Reply,
  Session,
  TenantUsage,
  ToolCall,
  ToolDefinition,
  ToolList,
  Usage,
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
export type {
  ContextEntryKindName,
  FinishReasonName,
  KeyRoleName,
  MessageRoleName,
  Plain,
  SessionStateName,
  WindowStrategyName,
} from "./plain.js";
export { FinishReason, MessageRole, SessionState, WindowStrategy } from "./gen/contextd/v1/common_pb.js";
export { ContextEntryKind } from "./gen/contextd/v1/session_pb.js";
export { KeyRole } from "./gen/contextd/v1/admin_pb.js";
/** The generated messages, schemas and service descriptors of contextd.v1, as protoc-gen-es makes them. */
export * as pb from "./pb.js";

/** A client for contextd at `target` (host:port). */
export function connect(target: string = DEFAULT_TARGET, options: ConnectOptions = {}): ContextdClient {
  return new ContextdClient(target, options);
}
