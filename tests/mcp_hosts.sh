#!/usr/bin/env bash
# contextd's `/mcp` against MCP tools nobody here wrote, pinned: the MCP conformance suite's
# server scenarios and the MCP Inspector's CLI, against a live contextd on a free loopback
# port. Needs npx (Node.js) and python3; CONTEXTD_BIN (default: target/debug/contextd).
#
# Conformance scenarios run here are every server scenario that a server without the suite's
# own fixtures can pass. The others call fixtures by name (tools `test_simple_text`,
# `test_image_content`, `test_error_handling`, …, resources `test://static-text`, prompts
# `test_simple_prompt`, …) that only the suite's reference server has, or need features
# contextd does not offer (sampling, elicitation, logging notifications, subscriptions,
# resource templates); README "contextd as an MCP server" lists them with the reason.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CONTEXTD_BIN:-$root/target/debug/contextd}"
CONFORMANCE="@modelcontextprotocol/conformance@0.1.13" # 0.1.14+ crash on Node 20
INSPECTOR="@modelcontextprotocol/inspector@1.0.3"
SCENARIOS=(server-initialize ping tools-list resources-list prompts-list completion-complete dns-rebinding-protection)

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

mkfifo "$work/out"
"$bin" serve --listen 127.0.0.1:0 --store memory >"$work/out" 2>"$work/log" &
server_pid=$!
# The first line naming the address is the readiness signal; the rest is drained.
addr=""
while IFS= read -r line; do
  case "$line" in
    "contextd listening on "*) addr="${line#contextd listening on }"; break ;;
  esac
done <"$work/out"
if [ -z "$addr" ]; then
  echo "contextd exited before listening:" >&2
  cat "$work/log" >&2
  exit 1
fi
cat <"$work/out" >/dev/null &
url="http://$addr/mcp"
echo "contextd at $url"

passed=0
failed=0
check() { # name, command...
  local name=$1
  shift
  if "$@" >"$work/step" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    tail -40 "$work/step"
  fi
}

for scenario in "${SCENARIOS[@]}"; do
  check "conformance $scenario" npx --yes "$CONFORMANCE" server --url "$url" --scenario "$scenario"
done

inspector() { npx --yes "$INSPECTOR" --cli "$url" --transport http "$@" 2>/dev/null; }

# The Inspector lists the tools, calls contextd_interact, and reads the session it created.
lists_tools() {
  inspector --method tools/list | python3 -c '
import json, sys
names = [t["name"] for t in json.load(sys.stdin)["tools"]]
assert "contextd_interact" in names and "context_get" in names, names'
}
calls_a_tool() {
  inspector --method tools/call --tool-name contextd_interact \
    --tool-arg session_id=inspector-1 --tool-arg "message=What is 2+2?" | python3 -c '
import json, sys
result = json.load(sys.stdin)
assert result["isError"] is False, result
assert "What is 2+2?" in result["content"][0]["text"], result
assert result["structuredContent"]["session_id"] == "inspector-1", result'
  inspector --method resources/read --uri contextd://sessions/inspector-1 | python3 -c '
import json, sys
document = json.loads(json.load(sys.stdin)["contents"][0]["text"])
assert [m["role"] for m in document["history"]] == ["user", "assistant"], document'
}
check "inspector tools/list" lists_tools
check "inspector tools/call and resources/read" calls_a_tool

echo "mcp hosts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
