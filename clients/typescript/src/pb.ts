/**
 * Every generated module of contextd.v1 in one namespace (`pb` of the package root): the
 * messages as protobuf-es makes them, for code that wants them rather than the wrapper's plain
 * results (with `toBinary`, `toJson`, or a client of its own).
 */
export * from "./gen/contextd/v1/common_pb.js";
export * from "./gen/contextd/v1/interact_pb.js";
export * from "./gen/contextd/v1/session_pb.js";
export * from "./gen/contextd/v1/tool_pb.js";
export * from "./gen/contextd/v1/model_pb.js";
export * from "./gen/contextd/v1/admin_pb.js";
