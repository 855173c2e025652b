"""Turns protoc-gen-openapi's openapi.yaml into contextd's openapi.json.

The generator reads the google.api.http rules and proto comments; this adds what they cannot
say: the error body every JSON door answers with (AIP-193, not google.rpc.Status), the
Server-Sent Events framing of the streaming route, the classic routes that are not RPC
mappings, and the default server address. Usage: finish.py IN.yaml OUT.json
"""

import json
import sys

import yaml

ERROR_SCHEMA = {
    "type": "object",
    "description": "Google's JSON error format (AIP-193), the same on every JSON door.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "integer",
                    "format": "int32",
                    "description": "The HTTP status (the google.rpc.Code mapping: 400, 401, 403, "
                    "404, 409, 429, 499, 500, 501, 503, 504; 413 and 415 for bodies).",
                },
                "status": {
                    "type": "string",
                    "description": "The google.rpc.Code name, such as NOT_FOUND.",
                },
                "message": {
                    "type": "string",
                    "description": "What went wrong and what to fix.",
                },
                "details": {
                    "type": "array",
                    "description": "google.rpc detail messages, such as google.rpc.BadRequest "
                    "with the field violations.",
                    "items": {"$ref": "#/components/schemas/GoogleProtobufAny"},
                },
            },
        }
    },
}

SSE_DESCRIPTION = (
    "Server-Sent Events, one per StreamResponseResponse: `event:` is the name of the oneof "
    "field that is set (`started`, `delta`, `toolCall`, `toolResult`, `completed`) and `data:` "
    "is the whole StreamResponseResponse as one line of proto3 JSON. `started` comes first and "
    "`completed` last. A failure before the first event is an ordinary HTTP error response; a "
    "failure after it is `event: error` whose data is the AIP-193 error object, and the stream "
    "ends. While the model is slow a `: keep-alive` comment is sent every "
    "`http.sse_keep_alive_ms` (15 s). A client that disconnects cancels the turn: nothing of it "
    "is stored."
)

ERROR_RESPONSE = {
    "description": "Default error response",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

HEALTH = {
    "get": {
        "tags": ["Health"],
        "description": "Whether the server takes requests: 200 with status SERVING, or 503 with "
        "NOT_SERVING while it shuts down.",
        "responses": {
            "200": {
                "description": "Serving",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"status": {"type": "string", "enum": ["SERVING"]}},
                        }
                    }
                },
            },
            "503": {"description": "Shutting down (status NOT_SERVING)"},
        },
    }
}


def retarget(node):
    """Points every google.rpc.Status reference at the AIP-193 error schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and value == "#/components/schemas/Status":
                node[key] = "#/components/schemas/Error"
            else:
                retarget(value)
    elif isinstance(node, list):
        for item in node:
            retarget(item)


def main(source, target):
    with open(source, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    schemas = doc["components"]["schemas"]
    schemas.pop("Status", None)
    schemas["Error"] = ERROR_SCHEMA
    retarget(doc)
    doc["info"]["description"] = (
        "The HTTP/JSON routes of contextd, a context service for LLM agents. Each route is the "
        "gRPC method of the same name, transcoded from and to proto3 JSON: lowerCamel names "
        "(original names accepted too), 64-bit integers as strings, enums as names."
    )
    doc["info"]["version"] = "v1"
    doc["servers"] = [{"url": "http://127.0.0.1:61900", "description": "contextd's default address"}]

    paths = doc["paths"]
    stream = paths["/v1/sessions/{sessionId}:stream"]["post"]
    ok = stream["responses"]["200"]
    ok["description"] = SSE_DESCRIPTION
    ok["content"] = {"text/event-stream": ok["content"]["application/json"]}

    interact = paths["/v1/sessions/{sessionId}:interact"]["post"]
    paths["/api/mcp/interact"] = {
        "post": {
            "tags": ["InteractService"],
            "description": "The classic guide's Interact: the body is an InteractRequest "
            '(`{"sessionId", "message", "context"}`) and the reply the InteractResponse '
            '(`{"sessionId", "response", "updatedContext", ...}`), as on '
            "`POST /v1/sessions/{sessionId}:interact`.",
            "operationId": "Classic_Interact",
            "requestBody": interact["requestBody"],
            "responses": interact["responses"],
        }
    }
    paths["/health"] = HEALTH
    paths["/healthz"] = HEALTH
    for path in paths.values():
        for operation in path.values():
            operation["responses"]["default"] = ERROR_RESPONSE

    with open(target, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
