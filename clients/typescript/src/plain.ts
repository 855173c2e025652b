/**
 * The wrapper's own result types: the generated messages made plain. Enums are their proto
 * names as strings (`"FINISH_REASON_STOP"`, as in the proto and its JSON mapping), 64-bit
 * counts are `number` (exact up to 2^53, far beyond any count contextd keeps), timestamps are
 * `Date`, durations milliseconds, and the `$typeName` bookkeeping of protobuf-es is gone. One
 * type-level mapping (`Plain`) and one runtime walk over the message descriptors (`toPlain`)
 * keep both in step with the proto, so a new field needs no code here.
 */
import type { DescEnum, DescField, DescMessage, DescOneof, MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";

import type {
  FinishReason,
  MessageRole,
  SessionState,
  WindowStrategy,
} from "./gen/contextd/v1/common_pb.js";
import type { ContextEntryKind } from "./gen/contextd/v1/session_pb.js";
import type { KeyRole } from "./gen/contextd/v1/admin_pb.js";

/** A `FinishReason` by name: why a turn ended. */
export type FinishReasonName = `FINISH_REASON_${keyof typeof FinishReason}`;
/** A `MessageRole` by name. */
export type MessageRoleName = `MESSAGE_ROLE_${keyof typeof MessageRole}`;
/** A `SessionState` by name. */
export type SessionStateName = `SESSION_STATE_${keyof typeof SessionState}`;
/** A `WindowStrategy` by name. */
export type WindowStrategyName = `WINDOW_STRATEGY_${keyof typeof WindowStrategy}`;
/** A `ContextEntryKind` by name. */
export type ContextEntryKindName = `CONTEXT_ENTRY_KIND_${keyof typeof ContextEntryKind}`;
/** A `KeyRole` by name. */
export type KeyRoleName = `KEY_ROLE_${keyof typeof KeyRole}`;

/**
 * The name type of an enum type. A numeric TypeScript enum accepts any `number`, so a plain
 * `number` passes every test below: it is the one type that passes the first two, and stays.
 */
type EnumName<T> = [T] extends [FinishReason]
  ? [T] extends [MessageRole]
    ? T
    : FinishReasonName
  : [T] extends [MessageRole]
    ? MessageRoleName
    : [T] extends [SessionState]
      ? SessionStateName
      : [T] extends [WindowStrategy]
        ? WindowStrategyName
        : [T] extends [ContextEntryKind]
          ? ContextEntryKindName
          : [T] extends [KeyRole]
            ? KeyRoleName
            : T;

/** A generated message, or part of one, as the wrapper returns it (see the module doc). */
export type Plain<T> = T extends bigint
  ? number
  : T extends number
    ? EnumName<T>
    : T extends Timestamp
      ? Date
      : T extends Duration
        ? number
        : T extends readonly (infer U)[]
          ? Plain<U>[]
          : T extends { $typeName: string }
            ? { [K in keyof T as K extends "$typeName" | "$unknown" ? never : K]: Plain<T[K]> }
            : T extends { case: infer C; value: infer V }
              ? { case: C; value: Plain<V> }
              : T;

/** The proto name of an enum value; a value this client does not know reads as its number. */
function enumName(desc: DescEnum, value: number): string {
  return desc.value[value]?.name ?? String(value);
}

function scalar(value: unknown): unknown {
  return typeof value === "bigint" ? Number(value) : value;
}

// Struct, Value and ListValue are JSON already in protobuf-es messages; wrappers are unwrapped.
const AS_IS = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"]);

function message(desc: DescMessage, value: unknown): unknown {
  if (value === undefined || value === null || typeof value !== "object" || AS_IS.has(desc.typeName)) return scalar(value);
  if (desc.typeName === "google.protobuf.Timestamp") return timestampDate(value as Timestamp);
  if (desc.typeName === "google.protobuf.Duration") {
    const d = value as Duration;
    return Number(d.seconds) * 1000 + d.nanos / 1e6;
  }
  const source = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const member of desc.members) {
    out[member.localName] = member.kind === "oneof" ? oneof(member, source[member.localName]) : field(member, source[member.localName]);
  }
  return out;
}

function oneof(desc: DescOneof, value: unknown): unknown {
  const chosen = value as { case: string | undefined; value?: unknown };
  const member = desc.fields.find((f) => f.localName === chosen.case);
  return member === undefined ? { case: undefined } : { case: chosen.case, value: field(member, chosen.value) };
}

function field(desc: DescField, value: unknown): unknown {
  switch (desc.fieldKind) {
    case "scalar":
      return scalar(value);
    case "enum":
      return value === undefined ? undefined : enumName(desc.enum, value as number);
    case "message":
      return message(desc.message, value);
    case "list":
      return (value as unknown[]).map((item) =>
        desc.listKind === "message" ? message(desc.message, item) : desc.listKind === "enum" ? enumName(desc.enum, item as number) : scalar(item),
      );
    case "map": {
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
        out[key] = desc.mapKind === "message" ? message(desc.message, item) : desc.mapKind === "enum" ? enumName(desc.enum, item as number) : scalar(item);
      }
      return out;
    }
  }
}

/** A generated message of `schema` made plain. */
export function toPlain<Desc extends DescMessage>(schema: Desc, value: MessageShape<Desc>): Plain<MessageShape<Desc>> {
  return message(schema, value) as Plain<MessageShape<Desc>>;
}

/** The chosen member of a oneof of a `schema` message made plain (`{ case, value }`). */
export function oneofToPlain<Desc extends DescMessage, O>(schema: Desc, name: string, value: O): Plain<O> {
  const desc = schema.oneofs.find((o) => o.localName === name);
  if (desc === undefined) throw new Error(`${schema.typeName} has no oneof ${name}`);
  return oneof(desc, value) as Plain<O>;
}
