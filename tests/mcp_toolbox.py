"""A small MCP server for contextd's MCP client tests, written with the official Python SDK
(PyPI `mcp` 2.3.0), served over stdio (the default) or Streamable HTTP (`--http PORT`).

Its tools exercise what the real servers in the tests do not:

- `add_tool{name}` adds a tool `name` (which answers its own name) and sends
  `notifications/tools/list_changed`, so a client must list the tools again to see it;
- `echo_header{name}` answers the value of the HTTP request header `name` it received (empty
  over stdio), so a test can see which headers reached the server;
- `pid{}` answers this process's id, so a test can tell processes apart;
- `keep_me{}` and `drop_me{}` do nothing but exist, for allow/deny filtering;
- `environment{name}` answers the environment variable `name` (empty when unset) and
  `working_directory{}` the directory it runs in, so a test can see `env` and `cwd` applied;
- `wait_for_cancel{marker}` writes `waiting` to the file `marker`, waits (ten minutes) until
  the client cancels it with `notifications/cancelled`, then writes `cancelled` there, so a
  test can see that the call started and that the cancellation reached the server.

`--extra-tool NAME` adds a tool `NAME` at start (it answers its own name), so a test can give
two servers tools whose contextd names collide.

At start it writes one line to stderr, `toolbox starting on <transport>`, so a test can find it
in the client's log.
"""

import argparse
import os
import sys
from pathlib import Path

import anyio

from mcp.server.mcpserver import Context, MCPServer

toolbox = MCPServer("toolbox")


@toolbox.tool()
async def add_tool(name: str, ctx: Context) -> str:
    """Adds a tool called `name` and tells the client the tool list changed."""

    def added() -> str:
        return name

    toolbox.add_tool(added, name=name, description=f"added at run time as {name}")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@toolbox.tool()
def echo_header(name: str, ctx: Context) -> str:
    """Answers the value of the HTTP request header `name` (empty when absent or on stdio)."""
    headers = ctx.headers or {}
    return headers.get(name.lower(), "")


@toolbox.tool()
def pid() -> str:
    """Answers this server's process id."""
    return str(os.getpid())


@toolbox.tool()
def keep_me() -> str:
    """Does nothing; exists to be allowed."""
    return "kept"


@toolbox.tool()
def drop_me() -> str:
    """Does nothing; exists to be denied."""
    return "dropped"


@toolbox.tool()
def environment(name: str) -> str:
    """Answers the environment variable `name` (empty when unset)."""
    return os.environ.get(name, "")


@toolbox.tool()
def working_directory() -> str:
    """Answers the directory this server runs in."""
    return os.getcwd()


@toolbox.tool()
async def wait_for_cancel(marker: str) -> str:
    """Writes `waiting` to the file `marker`, waits until the call is cancelled, then writes
    `cancelled` there."""
    Path(marker).write_text("waiting")
    try:
        await anyio.sleep(600)
    except anyio.get_cancelled_exc_class():
        Path(marker).write_text("cancelled")
        raise
    return "never cancelled"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve Streamable HTTP on PORT")
    parser.add_argument("--extra-tool", metavar="NAME", help="also offer a tool called NAME")
    args = parser.parse_args()
    if args.extra_tool:
        extra = args.extra_tool
        toolbox.add_tool(lambda: extra, name=extra, description=f"added at start as {extra}")
    print(f"toolbox starting on {'stdio' if args.http is None else 'http'}", file=sys.stderr, flush=True)
    if args.http is None:
        toolbox.run()
    else:
        toolbox.run("streamable-http", host="127.0.0.1", port=args.http)
