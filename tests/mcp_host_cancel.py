"""An MCP host that gives up on a tool call, with the official Python SDK (PyPI `mcp` 2.3.0):
it calls contextd's `contextd_interact` with a turn that would take a minute (the echo
model's `/delay`), abandons it after a read timeout (the SDK then sends
`notifications/cancelled`), and at once sends another message to the same session, which can
only run once the abandoned turn stopped. Prints one JSON line with what it saw.

Usage: mcp_host_cancel.py URL SESSION_ID
"""

import json
import sys
import time

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, session_id: str) -> None:
    seen = {}
    async with streamable_http_client(url) as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            try:
                await session.call_tool(
                    "contextd_interact",
                    {"session_id": session_id, "message": "/delay 60000 too late"},
                    read_timeout_seconds=2,
                )
                seen["abandoned"] = False
            except Exception as error:  # the SDK's timeout error: the host gave up
                seen["abandoned"] = True
                seen["abandon_error"] = type(error).__name__
            started = time.monotonic()
            result = await session.call_tool(
                "contextd_interact",
                {"session_id": session_id, "message": "after"},
                read_timeout_seconds=30,
            )
            seen["second_seconds"] = time.monotonic() - started
            seen["second_text"] = result.content[0].text
    print(json.dumps(seen))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
