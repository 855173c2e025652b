package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/contextd/contextd/clients/go/internal/testserver"
)

// TestDemo runs the demo against a fresh contextd and checks every line it prints.
func TestDemo(t *testing.T) {
	server, err := testserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Stop()
	var out bytes.Buffer
	if err := run(context.Background(), server.Addr, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"[session_alpha] user: Hello, I am John.",
		`[session_alpha] context patch: {"user_id":"john_doe"}`,
		"[session_alpha] response: You said 'Hello, I am John.'. User john_doe is active.",
		`[session_alpha] updated context: {"user_id":"john_doe"}`,
		"",
		"[session_alpha] user: Tell me about climate change.",
		`[session_alpha] context patch: {"topic":"environment"}`,
		"[session_alpha] response: You said 'Tell me about climate change.'. User john_doe is active. Current topic: environment.",
		`[session_alpha] updated context: {"topic":"environment","user_id":"john_doe"}`,
		"",
		"[session_beta] user: Hi, I am Jane.",
		`[session_beta] context patch: {"location":"NYC","user_id":"jane_doe"}`,
		"[session_beta] response: You said 'Hi, I am Jane.'. User jane_doe is active. Context: location=NYC.",
		`[session_beta] updated context: {"location":"NYC","user_id":"jane_doe"}`,
		"",
		"[session_alpha] user: What are some solutions?",
		"[session_alpha] response: You said 'What are some solutions?'. User john_doe is active. Current topic: environment.",
		`[session_alpha] updated context: {"topic":"environment","user_id":"john_doe"}`,
		"",
		`[session_tools] user: /call get_weather {"city": "Paris"}`,
	}
	if len(lines) < len(want)+3 {
		t.Fatalf("demo printed too little:\n%s", out.String())
	}
	for i, w := range want {
		if lines[i] != w {
			t.Fatalf("line %d:\n got  %q\n want %q\nwhole output:\n%s", i+1, lines[i], w, out.String())
		}
	}
	rest := lines[len(want):]
	if !strings.HasPrefix(rest[0], "[session_tools] model asks for get_weather (call ") ||
		rest[1] != `[session_tools] client runs get_weather({"city":"Paris"}) -> 18°C and sunny in Paris` ||
		rest[2] != "[session_tools] response: Tool get_weather returned: 18°C and sunny in Paris" {
		t.Fatalf("tool round trip:\n%s", strings.Join(rest, "\n"))
	}
}
