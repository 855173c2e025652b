"""The Python peer: contextd's Interact semantics on grpcio with an in-memory dict.

This is the server a team would write in an afternoon instead of running contextd: the
standard synchronous grpcio server with a thread pool (as in grpc.io's examples), sessions in
a dict behind one lock, the context merged as an RFC 7386 merge patch, history appended, and
the same reply text as contextd's echo model. It has no context window, tokenizer, tool loop
or durability: it is the floor of what such a service does.

Stubs are generated from proto/ into gen/ by bench/run.sh (grpcio-tools bundles protoc).
Prints "python peer listening on ADDR" once serving.
"""

import argparse
import json
import os
import sys
import threading
import uuid
from concurrent import futures

import grpc
from google.protobuf import json_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from contextd.v1 import common_pb2, interact_pb2, interact_pb2_grpc  # noqa: E402


def merge_patch(target, patch):
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = {}
                target[key] = current
            merge_patch(current, value)
        else:
            target[key] = value


def plain(value):
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def describe(message, context):
    """The echo model's reply: the message and what the context says."""
    reply = f"You said '{message}'."
    user = context.get("user_id")
    if isinstance(user, str):
        reply += f" User {user} is active."
    if "topic" in context:
        reply += f" Current topic: {plain(context['topic'])}."
    others = sorted(
        (k, v)
        for k, v in context.items()
        if k != "topic" and not (k == "user_id" and isinstance(v, str))
    )
    if others:
        reply += " Context: " + ", ".join(f"{k}={plain(v)}" for k, v in others) + "."
    return reply


class InteractService(interact_pb2_grpc.InteractServiceServicer):
    def __init__(self):
        self.sessions = {}
        self.lock = threading.Lock()

    def Interact(self, request, context):
        if not request.session_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id is required")
        if not request.message:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message is empty")
        patch = json_format.MessageToDict(request.context) if request.HasField("context") else {}
        with self.lock:
            created = request.session_id not in self.sessions
            session = self.sessions.setdefault(
                request.session_id, {"context": {}, "history": []}
            )
            merge_patch(session["context"], patch)
            reply = describe(request.message, session["context"])
            session["history"].append(("user", request.message))
            session["history"].append(("assistant", reply))
            updated = dict(session["context"])
        response = interact_pb2.InteractResponse(
            session_id=request.session_id,
            response=reply,
            finish_reason=common_pb2.FINISH_REASON_STOP,
            # Words stand in for tokens: no tokenizer in an afternoon's version.
            usage=common_pb2.Usage(
                input_tokens=len(request.message.split()),
                output_tokens=len(reply.split()),
                context_tokens=len(request.message.split()),
            ),
            session_created=created,
            turn_id=f"t-{uuid.uuid4().hex}",
        )
        response.updated_context.update(updated)
        return response


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=10)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers))
    interact_pb2_grpc.add_InteractServiceServicer_to_server(InteractService(), server)
    port = server.add_insecure_port(args.listen)
    server.start()
    host = args.listen.rsplit(":", 1)[0]
    print(f"python peer listening on {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
