// Command quickstart is the same small program in every client: a session, a turn, a stream, a
// Converse turn with a client-side tool, and an error. Usage: quickstart [HOST:PORT]
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/contextd/contextd/clients/go/contextd"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	target := "127.0.0.1:61900"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	ctx := context.Background()
	c, err := contextd.Dial(target)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sid := "quickstart-" + rand.Text()[:8]
	weather := contextd.Tool{Name: "get_weather", Description: "Current weather of a city"}
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weather}}); err != nil {
		log.Fatal(err)
	}
	reply, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "Hello, I am John.", Context: map[string]any{"user_id": "john"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("interact:", reply.Text)
	var text strings.Builder
	for event, err := range c.StreamResponse(ctx, contextd.Turn{SessionID: sid, Message: "Tell me more."}) {
		if err != nil {
			log.Fatal(err)
		}
		if delta, ok := event.(*contextd.Delta); ok {
			text.WriteString(delta.Text)
		}
	}
	fmt.Println("stream:", text.String())
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid}, contextd.WithToolHandler(func(_ context.Context, call contextd.ToolCall) (string, error) {
		return fmt.Sprintf("sunny in %v", call.Arguments["city"]), nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	answer, err := conv.Say(`/call get_weather {"city": "Paris"}`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("converse:", answer.Text)
	if err := conv.Close(); err != nil {
		log.Fatal(err)
	}
	if _, err := c.GetSession(ctx, "no-such-session"); status.Code(err) == codes.NotFound {
		fmt.Println("error: NOT_FOUND")
	}
}
