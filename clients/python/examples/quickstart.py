"""The same small program in every client: a session, a turn, a stream, a Converse turn with a
client-side tool, and an error. Usage: python quickstart.py [HOST:PORT]"""

import sys
import uuid

from contextd import Client, NotFoundError, TextDelta, ToolDefinition

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:61900"
with Client(target) as client:
    sid = f"quickstart-{uuid.uuid4().hex[:8]}"
    client.create_session(sid, tools=[ToolDefinition("get_weather", "Current weather of a city")])
    reply = client.interact(sid, "Hello, I am John.", context={"user_id": "john"})
    print("interact:", reply.response)
    text = "".join(e.text for e in client.stream_response(sid, "Tell me more.") if isinstance(e, TextDelta))
    print("stream:", text)
    with client.converse(sid, tool_handler=lambda call: f"sunny in {call.arguments['city']}") as conv:
        print("converse:", conv.ask('/call get_weather {"city": "Paris"}').response)
    try:
        client.get_session("no-such-session")
    except NotFoundError as error:
        print("error:", error.code.name)
