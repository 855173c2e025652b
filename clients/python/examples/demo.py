"""The classic contextd demo, then a client-side tool round trip.

    python examples/demo.py [TARGET]        # TARGET defaults to 127.0.0.1:61900
"""

from __future__ import annotations

import json
import sys
import uuid

from contextd import Client, ToolCall, ToolDefinition, TurnCompleted


def get_weather(call: ToolCall) -> str:
    """The client-side tool: contextd asks, this process answers."""
    city = call.arguments.get("city", "?")
    return f"sunny, 21 C in {city}"


def main(target: str) -> None:
    run = uuid.uuid4().hex[:8]
    alpha, beta = f"session_alpha-{run}", f"session_beta-{run}"
    with Client(target) as client:
        for session, message, context in [
            (alpha, "Hello, I am John.", {"user_id": "john_doe"}),
            (alpha, "Tell me about climate change.", {"topic": "environment"}),
            (beta, "Hi, I am Jane.", {"user_id": "jane_doe", "location": "NYC"}),
            (alpha, "What are some solutions?", None),
        ]:
            reply = client.interact(session, message, context=context)
            print(f"[{session}] > {message}")
            print(f"[{session}] < {reply.response}")
            print(f"[{session}]   context: {json.dumps(reply.updated_context, sort_keys=True)}")
        print(f"[{alpha}] messages: {client.get_session(alpha).message_count}")

        tools = [ToolDefinition("get_weather", "Current weather for a city.", {"type": "object"})]
        session = f"tools-{run}"
        with client.converse(session, tools=tools, tool_handler=get_weather) as conversation:
            print(f"[{session}] > /call get_weather {{\"city\": \"Paris\"}}")
            for event in conversation.send('/call get_weather {"city": "Paris"}'):
                if isinstance(event, TurnCompleted) and event.result.needs_tool_results:
                    for call in event.result.tool_calls:
                        print(f"[{session}]   tool call {call.name}({json.dumps(call.arguments)})")
                elif isinstance(event, TurnCompleted):
                    print(f"[{session}] < {event.result.response}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:61900")
