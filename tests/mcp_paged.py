"""An MCP server for contextd's MCP client tests that lists its tools in pages, written with the
official Python SDK's low-level server (PyPI `mcp` 2.3.0) over stdio.

It offers `TOOLS` tools `page_tool_0` … `page_tool_{TOOLS-1}`, `PAGE` per `tools/list` answer,
each page but the last with a `nextCursor`, so a client sees them all only by following the
cursors. Each tool answers its own name.
"""

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

TOOLS = 7
PAGE = 3
NAMES = [f"page_tool_{n}" for n in range(TOOLS)]


async def list_tools(ctx: object, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    start = int(params.cursor) if params is not None and params.cursor else 0
    page = NAMES[start : start + PAGE]
    more = start + PAGE < TOOLS
    return types.ListToolsResult(
        tools=[
            types.Tool(name=name, description=f"tool {name}", input_schema={"type": "object"})
            for name in page
        ],
        next_cursor=str(start + PAGE) if more else None,
    )


async def call_tool(ctx: object, params: types.CallToolRequestParams) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])


server = Server("paged", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
