// Command demo replays the classic Model Context Protocol demo against a running contextd:
// two sessions whose context grows turn by turn, then a tool round trip in which the model
// asks for a tool that this program runs.
//
//	go run ./examples/demo -target 127.0.0.1:61900
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/contextd/contextd/clients/go/contextd"
)

func main() {
	target := flag.String("target", "127.0.0.1:61900", "address of contextd")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, *target, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run is the whole demo, writing what happens to out.
func run(ctx context.Context, target string, out io.Writer) error {
	client, err := contextd.Dial(target)
	if err != nil {
		return err
	}
	defer client.Close()

	turns := []contextd.Turn{
		{SessionID: "session_alpha", Message: "Hello, I am John.", Context: map[string]any{"user_id": "john_doe"}},
		{SessionID: "session_alpha", Message: "Tell me about climate change.", Context: map[string]any{"topic": "environment"}},
		{SessionID: "session_beta", Message: "Hi, I am Jane.", Context: map[string]any{"user_id": "jane_doe", "location": "NYC"}},
		{SessionID: "session_alpha", Message: "What are some solutions?"},
	}
	for _, turn := range turns {
		reply, err := client.Interact(ctx, turn)
		if err != nil {
			return fmt.Errorf("%s: %w", turn.SessionID, err)
		}
		fmt.Fprintf(out, "[%s] user: %s\n", turn.SessionID, turn.Message)
		if turn.Context != nil {
			fmt.Fprintf(out, "[%s] context patch: %s\n", turn.SessionID, toJSON(turn.Context))
		}
		fmt.Fprintf(out, "[%s] response: %s\n", turn.SessionID, reply.Text)
		fmt.Fprintf(out, "[%s] updated context: %s\n\n", turn.SessionID, toJSON(reply.Context))
	}

	// A tool round trip: the session declares get_weather, the model (echo answers `/call`
	// lines with tool calls) asks for it, and the handler below answers on this side.
	weather := contextd.Tool{
		Name:        "get_weather",
		Description: "Current weather for a city",
		InputSchema: map[string]any{
			"type":       "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}},
			"required":   []string{"city"},
		},
	}
	handler := func(_ context.Context, call contextd.ToolCall) (string, error) {
		city, _ := call.Arguments["city"].(string)
		result := "18°C and sunny in " + city
		fmt.Fprintf(out, "[session_tools] client runs %s(%s) -> %s\n", call.Name, toJSON(call.Arguments), result)
		return result, nil
	}
	conv, err := client.Converse(ctx, contextd.SessionOptions{ID: "session_tools", Tools: []contextd.Tool{weather}}, contextd.WithToolHandler(handler))
	if err != nil {
		return fmt.Errorf("session_tools: %w", err)
	}
	message := `/call get_weather {"city": "Paris"}`
	fmt.Fprintf(out, "[session_tools] user: %s\n", message)
	for event, err := range conv.Send(message) {
		if err != nil {
			return fmt.Errorf("session_tools: %w", err)
		}
		switch e := event.(type) {
		case *contextd.ToolCallRequested:
			fmt.Fprintf(out, "[session_tools] model asks for %s (call %s)\n", e.Call.Name, e.Call.ID)
		case *contextd.Completed:
			if !e.Reply.NeedsToolResults() {
				fmt.Fprintf(out, "[session_tools] response: %s\n", e.Reply.Text)
			}
		}
	}
	return conv.Close()
}

func toJSON(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(raw)
}
