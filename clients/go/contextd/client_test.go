package contextd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd/contextd/clients/go/contextd"
	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func dial(t *testing.T) *contextd.Client {
	t.Helper()
	c, err := contextd.Dial(server.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// id makes a session id unique to this test.
func id(t *testing.T, name string) string {
	return fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(t.Name(), "/", "."), name, time.Now().UnixNano())
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v carries no gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), code)
	}
}

var weatherTool = contextd.Tool{
	Name:        "get_weather",
	Description: "Current weather of a city",
	InputSchema: map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
}

func TestSessionLifecycle(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	created, err := c.CreateSession(ctx, contextd.SessionOptions{
		ID:      sid,
		Context: map[string]any{"user": map[string]any{"name": "Ann", "city": "Oslo"}, "tags": []string{"a", "b"}},
		Tools:   []contextd.Tool{weatherTool},
		Labels:  map[string]string{"team": "blue"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.ID != sid || created.Model != "echo" || created.Labels["team"] != "blue" || len(created.Tools) != 1 {
		t.Fatalf("created %+v", created)
	}
	if got := created.Context["tags"]; fmt.Sprint(got) != "[a b]" {
		t.Fatalf("context tags %v", got)
	}
	_, err = c.CreateSession(ctx, contextd.SessionOptions{ID: sid})
	wantCode(t, err, codes.AlreadyExists)

	updated, err := c.UpdateSession(ctx, sid, contextd.SessionUpdate{
		Context:      map[string]any{"user": map[string]any{"city": nil, "lang": "no"}},
		SystemPrompt: new("Be brief."),
		Labels:       map[string]string{"env": "test"},
		RemoveLabels: []string{"team"},
	})
	if err != nil {
		t.Fatal(err)
	}
	wantUser := map[string]any{"name": "Ann", "lang": "no"}
	if fmt.Sprint(updated.Context["user"]) != fmt.Sprint(wantUser) {
		t.Fatalf("merged user %v, want %v", updated.Context["user"], wantUser)
	}
	if updated.SystemPrompt != "Be brief." || updated.Labels["env"] != "test" || updated.Labels["team"] != "" {
		t.Fatalf("updated %+v", updated)
	}

	reply, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if reply.SessionCreated || reply.FinishReason != contextdv1.FinishReason_FINISH_REASON_STOP {
		t.Fatalf("reply %+v", reply)
	}
	got, err := c.GetSession(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if got.MessageCount != 2 || got.Usage.InputTokens == 0 {
		t.Fatalf("after one turn: %+v", got)
	}
	messages, err := c.ListMessages(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if len(messages) != 2 || messages[0].Role != contextdv1.MessageRole_MESSAGE_ROLE_USER || messages[0].Content != "hi" ||
		messages[1].Role != contextdv1.MessageRole_MESSAGE_ROLE_ASSISTANT || messages[1].Content != reply.Text {
		t.Fatalf("messages %+v", messages)
	}

	found := false
	for s, err := range c.Sessions(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		found = found || s.ID == sid
	}
	if !found {
		t.Fatal("Sessions did not list the session")
	}

	deleted, err := c.DeleteSession(ctx, sid)
	if err != nil || deleted != 2 {
		t.Fatalf("delete: %d, %v", deleted, err)
	}
	_, err = c.GetSession(ctx, sid)
	wantCode(t, err, codes.NotFound)
	_, err = c.ListMessages(ctx, sid)
	wantCode(t, err, codes.NotFound)
}

func TestListSessionsPages(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	prefix := id(t, "p")
	for i := range 5 {
		if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: fmt.Sprintf("%s-%d", prefix, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	token := ""
	for {
		page, err := c.ListSessions(ctx, 2, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Sessions) > 2 {
			t.Fatalf("page of %d with page size 2", len(page.Sessions))
		}
		for _, s := range page.Sessions {
			if strings.HasPrefix(s.ID, prefix) {
				seen = append(seen, s.ID)
			}
		}
		if page.NextPageToken == "" {
			break
		}
		token = page.NextPageToken
	}
	if len(seen) != 5 {
		t.Fatalf("saw %v", seen)
	}
}

func TestInteractMergesContext(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "alpha")
	first, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "Hello, I am John.", Context: map[string]any{"user_id": "john_doe"}})
	if err != nil {
		t.Fatal(err)
	}
	if first.Text != "You said 'Hello, I am John.'. User john_doe is active." || !first.SessionCreated || first.TurnID == "" {
		t.Fatalf("first reply %+v", first)
	}
	second, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "Tell me about climate change.", Context: map[string]any{"topic": "environment"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"user_id": "john_doe", "topic": "environment"}
	if fmt.Sprint(second.Context) != fmt.Sprint(want) || second.SessionCreated {
		t.Fatalf("context after merge %v, want %v", second.Context, want)
	}
	if !strings.Contains(second.Text, "Current topic: environment.") {
		t.Fatalf("reply %q", second.Text)
	}
}

func TestStreamResponseEvents(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	var kinds []string
	var text strings.Builder
	var reply *contextd.Reply
	for event, err := range c.StreamResponse(ctx, contextd.Turn{SessionID: sid, Message: "one two three", Context: map[string]any{"topic": "x"}}) {
		if err != nil {
			t.Fatal(err)
		}
		switch e := event.(type) {
		case *contextd.Started:
			kinds = append(kinds, "started")
			if e.SessionID != sid || !e.SessionCreated {
				t.Fatalf("started %+v", e)
			}
		case *contextd.Delta:
			if len(kinds) == 0 || kinds[len(kinds)-1] != "delta" {
				kinds = append(kinds, "delta")
			}
			text.WriteString(e.Text)
		case *contextd.Completed:
			kinds = append(kinds, "completed")
			reply = e.Reply
		}
	}
	if strings.Join(kinds, ",") != "started,delta,completed" {
		t.Fatalf("events %v", kinds)
	}
	if reply == nil || text.String() != reply.Text || reply.Text != "You said 'one two three'. Current topic: x." {
		t.Fatalf("deltas %q, reply %+v", text.String(), reply)
	}
}

func TestStreamResponseServerTool(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	var ran *contextd.ServerToolRan
	reply, err := contextd.Collect(func(yield func(contextd.Event, error) bool) {
		for event, err := range c.StreamResponse(ctx, contextd.Turn{SessionID: sid, Message: `/call context_set {"patch": {"mood": "good"}}`}) {
			if r, ok := event.(*contextd.ServerToolRan); ok {
				ran = r
			}
			if !yield(event, err) {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if ran == nil || ran.Call.Name != "context_set" || ran.Result.IsError {
		t.Fatalf("server tool event %+v", ran)
	}
	if reply.Context["mood"] != "good" {
		t.Fatalf("context %v", reply.Context)
	}
}

func TestStreamResponseStopEarlyCancelsTheTurn(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	if _, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "first"}); err != nil {
		t.Fatal(err)
	}
	for event, err := range c.StreamResponse(ctx, contextd.Turn{SessionID: sid, Message: "/delay 200 a b c d e f g h"}) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := event.(*contextd.Delta); ok {
			break
		}
	}
	// The abandoned turn is not stored. Turns on a session run one at a time, so this one
	// starts only after the abandoned one is gone.
	if _, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "third"}); err != nil {
		t.Fatal(err)
	}
	messages, err := c.ListMessages(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, m := range messages {
		if m.Role == contextdv1.MessageRole_MESSAGE_ROLE_USER {
			users = append(users, m.Content)
		}
	}
	if strings.Join(users, ",") != "first,third" {
		t.Fatalf("stored user messages %v", users)
	}
}

func TestInteractToolRoundTrip(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weatherTool}}); err != nil {
		t.Fatal(err)
	}
	paused, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: `/call get_weather {"city": "Paris"}`})
	if err != nil {
		t.Fatal(err)
	}
	if !paused.NeedsToolResults() || len(paused.ToolCalls) != 1 || paused.ToolCalls[0].Arguments["city"] != "Paris" {
		t.Fatalf("paused %+v", paused)
	}
	s, err := c.GetSession(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if !s.AwaitingToolResults() || len(s.PendingToolCalls) != 1 {
		t.Fatalf("session %+v", s)
	}
	_, err = c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "something else"})
	wantCode(t, err, codes.FailedPrecondition)
	done, err := c.Interact(ctx, contextd.Turn{SessionID: sid, ToolResults: []contextd.ToolResult{{CallID: paused.ToolCalls[0].ID, Content: "sunny"}}})
	if err != nil {
		t.Fatal(err)
	}
	if done.Text != "Tool get_weather returned: sunny" || done.TurnID != paused.TurnID {
		t.Fatalf("continued %+v (paused turn %s)", done, paused.TurnID)
	}
}

func TestConverseToolHandler(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	var mu sync.Mutex
	var calls []contextd.ToolCall
	handler := func(_ context.Context, call contextd.ToolCall) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call)
		city, _ := call.Arguments["city"].(string)
		if city == "Atlantis" {
			return "", errors.New("no such city")
		}
		return "sunny in " + city, nil
	}
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: id(t, "c"), Tools: []contextd.Tool{weatherTool}, Context: map[string]any{"user_id": "ann"}}, contextd.WithToolHandler(handler))
	if err != nil {
		t.Fatal(err)
	}
	if !conv.Created() || conv.Session().Context["user_id"] != "ann" {
		t.Fatalf("opened %+v", conv.Session())
	}
	reply, err := conv.Say(`/call get_weather {"city": "Paris"}`)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "Tool get_weather returned: sunny in Paris" || reply.FinishReason != contextdv1.FinishReason_FINISH_REASON_STOP {
		t.Fatalf("reply %+v", reply)
	}
	// Two calls in one step, one failing: both answered in one tool_results frame.
	reply, err = conv.Say("/call get_weather {\"city\": \"Rome\"}\n/call get_weather {\"city\": \"Atlantis\"}", contextd.WithContextPatch(map[string]any{"topic": "travel"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reply.Text, "Tool get_weather returned: sunny in Rome") || !strings.Contains(reply.Text, "failed: no such city") {
		t.Fatalf("parallel reply %q", reply.Text)
	}
	if reply.Context["topic"] != "travel" {
		t.Fatalf("context %v", reply.Context)
	}
	if len(calls) != 3 {
		t.Fatalf("handler saw %d calls", len(calls))
	}
	if err := conv.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConverseManualToolResults(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: id(t, "c"), Tools: []contextd.Tool{weatherTool}})
	if err != nil {
		t.Fatal(err)
	}
	defer conv.Close()
	var requested []contextd.ToolCall
	var paused *contextd.Reply
	for event, err := range conv.Send(`/call get_weather {"city": "Oslo"}`) {
		if err != nil {
			t.Fatal(err)
		}
		switch e := event.(type) {
		case *contextd.ToolCallRequested:
			requested = append(requested, e.Call)
		case *contextd.Completed:
			paused = e.Reply
		}
	}
	if len(requested) != 1 || paused == nil || !paused.NeedsToolResults() {
		t.Fatalf("requested %+v, paused %+v", requested, paused)
	}
	// A new message while results are pending is refused with an error event; the stream
	// stays usable.
	_, err = conv.Say("hello?")
	wantCode(t, err, codes.FailedPrecondition)
	var turnErr *contextd.TurnError
	if !errors.As(err, &turnErr) || !strings.Contains(turnErr.Message, requested[0].ID) {
		t.Fatalf("error %v does not name the pending call", err)
	}
	reply, err := contextd.Collect(conv.SendToolResults([]contextd.ToolResult{{CallID: requested[0].ID, Content: "snow"}}))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Text != "Tool get_weather returned: snow" {
		t.Fatalf("reply %q", reply.Text)
	}
}

func TestConverseCancel(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "c")
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid})
	if err != nil {
		t.Fatal(err)
	}
	// Cancelling with no turn running changes nothing, and its answer does not leak into the
	// next turn.
	if err := conv.Cancel(); err != nil {
		t.Fatal(err)
	}
	if reply, err := conv.Say("ping"); err != nil || reply.Text != "You said 'ping'." {
		t.Fatalf("after idle cancel: %+v, %v", reply, err)
	}
	var final *contextd.Reply
	for event, err := range conv.Send("/delay 200 a b c d e f g h i j") {
		if err != nil {
			t.Fatal(err)
		}
		switch e := event.(type) {
		case *contextd.Delta:
			if err := conv.Cancel(); err != nil {
				t.Fatal(err)
			}
		case *contextd.Completed:
			final = e.Reply
		}
	}
	if final == nil || final.FinishReason != contextdv1.FinishReason_FINISH_REASON_CANCELLED {
		t.Fatalf("final %+v", final)
	}
	if reply, err := conv.Say("pong"); err != nil || reply.Text != "You said 'pong'." {
		t.Fatalf("after cancel: %+v, %v", reply, err)
	}
	if err := conv.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSession(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if s.MessageCount != 4 {
		t.Fatalf("%d messages stored; the cancelled turn must leave none", s.MessageCount)
	}
}

func TestTools(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weatherTool}, Context: map[string]any{"a": 1}}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListTools(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Server {
		names = append(names, tool.Name)
	}
	if strings.Join(names, ",") != "context_get,context_set,history_search" || len(list.Session) != 1 || list.Session[0].Name != "get_weather" {
		t.Fatalf("tools %v, session tools %+v", names, list.Session)
	}
	if hint := list.Server[0].Annotations["readOnlyHint"]; hint != true {
		t.Fatalf("context_get's readOnlyHint %v", hint)
	}
	hinted := contextd.Tool{Name: "find", Annotations: map[string]any{"readOnlyHint": true}}
	if _, err := c.UpdateSession(ctx, sid, contextd.SessionUpdate{Tools: &[]contextd.Tool{hinted}}); err != nil {
		t.Fatal(err)
	}
	if list, err := c.ListTools(ctx, sid); err != nil || list.Session[0].Annotations["readOnlyHint"] != true {
		t.Fatalf("declared annotations %+v, %v", list, err)
	}
	if _, err := c.UpdateSession(ctx, sid, contextd.SessionUpdate{Tools: &[]contextd.Tool{weatherTool}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.CallTool(ctx, "context_set", map[string]any{"patch": map[string]any{"b": "two"}}, contextd.WithSession(sid))
	if err != nil {
		t.Fatal(err)
	}
	if out.IsError || fmt.Sprint(out.Structured) != fmt.Sprint(map[string]any{"a": 1.0, "b": "two"}) {
		t.Fatalf("context_set %+v", out)
	}
	out, err = c.CallTool(ctx, "context_get", map[string]any{"key": "missing"}, contextd.WithSession(sid))
	if err != nil {
		t.Fatal(err)
	}
	if !out.IsError || out.Content == "" {
		t.Fatalf("context_get of a missing key %+v", out)
	}
	_, err = c.CallTool(ctx, "no_such_tool", nil, contextd.WithSession(sid))
	wantCode(t, err, codes.NotFound)
}

func TestServerToolSelection(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "select")
	patterns := []string{"context_*"}
	created, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weatherTool}, ServerTools: &patterns})
	if err != nil {
		t.Fatal(err)
	}
	if created.ServerTools == nil || strings.Join(*created.ServerTools, ",") != "context_*" {
		t.Fatalf("server tools %v", created.ServerTools)
	}
	list, err := c.ListTools(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(list.Offered, ",") != "context_get,context_set,get_weather" {
		t.Fatalf("offered %v", list.Offered)
	}
	none := []string{}
	updated, err := c.UpdateSession(ctx, sid, contextd.SessionUpdate{ServerTools: &none})
	if err != nil {
		t.Fatal(err)
	}
	if updated.ServerTools == nil || len(*updated.ServerTools) != 0 {
		t.Fatalf("server tools after update %v", updated.ServerTools)
	}
	unknown := []string{"time__*"}
	_, err = c.UpdateSession(ctx, sid, contextd.SessionUpdate{ServerTools: &unknown})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.UpdateSession(ctx, sid, contextd.SessionUpdate{ServerTools: &patterns, ResetServerTools: true})
	wantCode(t, err, codes.InvalidArgument)
	reset, err := c.UpdateSession(ctx, sid, contextd.SessionUpdate{ResetServerTools: true})
	if err != nil {
		t.Fatal(err)
	}
	if reset.ServerTools != nil {
		t.Fatalf("server tools after reset %v, want unset", *reset.ServerTools)
	}
	list, err = c.ListTools(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(list.Offered, ",") != "context_get,context_set,history_search,get_weather" {
		t.Fatalf("offered after reset %v", list.Offered)
	}
	history := []string{"history_search"}
	cv, err := c.Converse(ctx, contextd.SessionOptions{ID: id(t, "select-open"), ServerTools: &history})
	if err != nil {
		t.Fatal(err)
	}
	if s := cv.Session().ServerTools; s == nil || strings.Join(*s, ",") != "history_search" {
		t.Fatalf("opened with server tools %v", s)
	}
	_ = cv.Close()
	out, err := c.CallTool(ctx, "context_get", map[string]any{"city": "Paris"}, contextd.WithSession(sid))
	if err != nil {
		t.Fatal(err)
	}
	if !out.IsError || !strings.Contains(out.Content, "city") {
		t.Fatalf("schema violation %+v", out)
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	_, err := c.GetSession(ctx, id(t, "missing"))
	wantCode(t, err, codes.NotFound)
	_, err = c.Interact(ctx, contextd.Turn{SessionID: "bad id with spaces", Message: "hi"})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.Interact(ctx, contextd.Turn{SessionID: id(t, "s"), Message: ""})
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.CreateSession(ctx, contextd.SessionOptions{ID: id(t, "s"), Model: "no-such-model"})
	wantCode(t, err, codes.InvalidArgument)
	// A context that is not JSON is refused before anything is sent.
	_, err = c.Interact(ctx, contextd.Turn{SessionID: id(t, "s"), Message: "hi", Context: map[string]any{"f": func() {}}})
	wantCode(t, err, codes.InvalidArgument)
	// Errors inside a stream carry their code too.
	for _, err := range c.StreamResponse(ctx, contextd.Turn{SessionID: id(t, "s")}) {
		if err != nil {
			wantCode(t, err, codes.InvalidArgument)
		}
	}
	_, err = contextd.Collect(c.StreamResponse(ctx, contextd.Turn{SessionID: id(t, "s")}))
	wantCode(t, err, codes.InvalidArgument)
	// A deadline that passes during a turn.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.Interact(short, contextd.Turn{SessionID: id(t, "s"), Message: "/delay 2000 slow"})
	wantCode(t, err, codes.DeadlineExceeded)
}

func TestUnreachableServerIsUnavailable(t *testing.T) {
	c, err := contextd.Dial("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.GetSession(context.Background(), "x")
	wantCode(t, err, codes.Unavailable)
}

func TestConverseLeavingATurnEarlyCancelsIt(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid})
	if err != nil {
		t.Fatal(err)
	}
	slow := "/delay 1000 w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"
	for event, err := range conv.Send(slow) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := event.(*contextd.Delta); ok {
			break
		}
	}
	for _, word := range []string{"one", "two"} {
		if reply, err := conv.Say(word); err != nil || reply.Text != "You said '"+word+"'." {
			t.Fatalf("after leaving a turn: %+v, %v", reply, err)
		}
	}
	if err := conv.Close(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.ListMessages(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 || msgs[0].Content != "one" {
		t.Fatalf("%d messages stored (%+v); the left turn must leave none", len(msgs), msgs)
	}
}

func TestWindowExpiryModelsAndInteractToolHandler(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	expires := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	window := &contextdv1.WindowSettings{Strategy: contextdv1.WindowStrategy_WINDOW_STRATEGY_SUMMARIZE, SummarizeThresholdPercent: 50}
	s, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, ExpireTime: expires, Window: window, Tools: []contextd.Tool{weatherTool}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.ExpireTime.Equal(expires) || s.Window.GetStrategy() != window.Strategy || s.Summary != nil {
		t.Fatalf("created %+v", s)
	}
	later := expires.Add(time.Hour)
	s, err = c.UpdateSession(ctx, sid, contextd.SessionUpdate{ExpireTime: later, Window: &contextdv1.WindowSettings{Strategy: contextdv1.WindowStrategy_WINDOW_STRATEGY_DISABLED}})
	if err != nil || !s.ExpireTime.Equal(later) || s.Window.GetStrategy() != contextdv1.WindowStrategy_WINDOW_STRATEGY_DISABLED {
		t.Fatalf("updated %+v, %v", s, err)
	}
	models, err := c.ListModels(ctx)
	if err != nil || models.GetDefaultModel() != "echo" {
		t.Fatalf("models %+v, %v", models, err)
	}
	reply, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: `/call get_weather {"city": "Rome"}`},
		contextd.WithToolHandler(func(_ context.Context, call contextd.ToolCall) (string, error) {
			return "warm in " + call.Arguments["city"].(string), nil
		}))
	if err != nil || reply.Text != "Tool get_weather returned: warm in Rome" {
		t.Fatalf("reply %+v, %v", reply, err)
	}
	page, err := c.ListMessagesPage(ctx, sid, 2, "")
	if err != nil || len(page.Messages) != 2 || page.NextPageToken == "" {
		t.Fatalf("page %+v, %v", page, err)
	}
}

func TestIdempotencyKeysMakeTurnsSafeToRepeat(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "idem")
	turn := contextd.Turn{SessionID: sid, Message: "only once", IdempotencyKey: sid + "-key"}
	first, err := c.Interact(ctx, turn)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Interact(ctx, turn)
	if err != nil || again.TurnID != first.TurnID || again.Text != first.Text {
		t.Fatalf("repeat: %+v, %v; first %+v", again, err, first)
	}
	streamed, err := contextd.Collect(c.StreamResponse(ctx, turn))
	if err != nil || streamed.TurnID != first.TurnID {
		t.Fatalf("streamed repeat: %+v, %v", streamed, err)
	}
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid})
	if err != nil {
		t.Fatal(err)
	}
	conversed, err := contextd.Collect(conv.Send("only once", contextd.WithIdempotencyKey(turn.IdempotencyKey)))
	if err != nil || conversed.TurnID != first.TurnID {
		t.Fatalf("Converse repeat: %+v, %v", conversed, err)
	}
	if err := conv.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = c.Interact(ctx, contextd.Turn{SessionID: sid, Message: "another request", IdempotencyKey: turn.IdempotencyKey})
	wantCode(t, err, codes.InvalidArgument)
	s, err := c.GetSession(ctx, sid)
	if err != nil || s.MessageCount != 2 {
		t.Fatalf("%+v, %v: a repeat must store nothing", s, err)
	}
}

func TestAbandonToolCalls(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "abandon")
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weatherTool}}); err != nil {
		t.Fatal(err)
	}
	cancelled := contextdv1.FinishReason_FINISH_REASON_CANCELLED
	paused, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: `/call get_weather {"city": "Oslo"}`})
	if err != nil || !paused.NeedsToolResults() {
		t.Fatalf("paused %+v, %v", paused, err)
	}
	done, err := c.Interact(ctx, contextd.Turn{SessionID: sid, AbandonToolCalls: true})
	if err != nil || done.FinishReason != cancelled || done.TurnID != paused.TurnID || done.Text != "" {
		t.Fatalf("abandoned %+v, %v", done, err)
	}
	_, err = c.Interact(ctx, contextd.Turn{SessionID: sid, AbandonToolCalls: true})
	wantCode(t, err, codes.InvalidArgument)

	if _, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: `/call get_weather {"city": "Rome"}`}); err != nil {
		t.Fatal(err)
	}
	streamed, err := contextd.Collect(c.StreamResponse(ctx, contextd.Turn{SessionID: sid, AbandonToolCalls: true}))
	if err != nil || streamed.FinishReason != cancelled {
		t.Fatalf("streamed abandon %+v, %v", streamed, err)
	}

	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid})
	if err != nil {
		t.Fatal(err)
	}
	if reply, err := conv.Say(`/call get_weather {"city": "Lima"}`); err != nil || !reply.NeedsToolResults() {
		t.Fatalf("paused on the stream %+v, %v", reply, err)
	}
	if reply, err := conv.AbandonToolCalls(); err != nil || reply.FinishReason != cancelled {
		t.Fatalf("conversation abandon %+v, %v", reply, err)
	}
	if reply, err := conv.Say("next"); err != nil || reply.Text != "You said 'next'." {
		t.Fatalf("after the abandon %+v, %v", reply, err)
	}
	// Cancel while paused abandons too, and the next turn's reply is its own.
	if reply, err := conv.Say(`/call get_weather {"city": "Kyiv"}`); err != nil || !reply.NeedsToolResults() {
		t.Fatalf("paused again %+v, %v", reply, err)
	}
	if err := conv.Cancel(); err != nil {
		t.Fatal(err)
	}
	if reply, err := conv.Say("and now"); err != nil || reply.Text != "You said 'and now'." {
		t.Fatalf("after cancel while paused %+v, %v", reply, err)
	}
	_, err = conv.AbandonToolCalls()
	wantCode(t, err, codes.FailedPrecondition)
	if err := conv.Close(); err != nil {
		t.Fatal(err)
	}
	messages, err := c.ListMessages(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	var abandoned int
	for _, m := range messages {
		if m.Role == contextdv1.MessageRole_MESSAGE_ROLE_TOOL {
			if m.Content != "cancelled by the client" || !m.IsError {
				t.Fatalf("tool result %+v", m)
			}
			abandoned++
		}
	}
	if abandoned != 4 {
		t.Fatalf("%d abandoned results in %+v", abandoned, messages)
	}
}

func TestPreviewContextTakesThePatchAsAnOption(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "preview")
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, Context: map[string]any{"user_id": "ann"}}); err != nil {
		t.Fatal(err)
	}
	contextEntry := func(opts ...contextd.MessageOption) string {
		t.Helper()
		preview, err := c.PreviewContext(ctx, sid, "next", opts...)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range preview.GetEntries() {
			if e.GetKind() == contextdv1.ContextEntryKind_CONTEXT_ENTRY_KIND_CONTEXT {
				return e.GetContent()
			}
		}
		t.Fatalf("no context entry in %v", preview.GetEntries())
		return ""
	}
	if got := contextEntry(); !strings.Contains(got, `{"user_id":"ann"}`) {
		t.Fatalf("without a patch: %q", got)
	}
	if got := contextEntry(contextd.WithContextPatch(map[string]any{"topic": "x"})); !strings.Contains(got, `{"topic":"x","user_id":"ann"}`) {
		t.Fatalf("with a patch: %q", got)
	}
	// Previewing changes nothing.
	if s, err := c.GetSession(ctx, sid); err != nil || fmt.Sprint(s.Context) != fmt.Sprint(map[string]any{"user_id": "ann"}) {
		t.Fatalf("session after preview %+v, %v", s, err)
	}
	_, err := c.PreviewContext(ctx, sid, "next", contextd.WithIdempotencyKey("k"))
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an idempotency key: %v, want InvalidArgument", err)
	}
}

func TestPreviewContextWithSummarizeWritesThePendingSummary(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "fold")
	window := &contextdv1.WindowSettings{Strategy: contextdv1.WindowStrategy_WINDOW_STRATEGY_SUMMARIZE}
	if _, err := c.CreateSession(ctx, contextd.SessionOptions{ID: sid, MaxContextTokens: 300, Window: window}); err != nil {
		t.Fatal(err)
	}
	const message = "the quick brown fox jumps over the lazy dog, and counts another turn"
	pending := func(p *contextdv1.PreviewContextResponse) bool {
		for _, e := range p.GetEntries() {
			if e.GetKind() == contextdv1.ContextEntryKind_CONTEXT_ENTRY_KIND_PENDING_SUMMARY {
				return true
			}
		}
		return false
	}
	for turns := 0; ; turns++ {
		preview, err := c.PreviewContext(ctx, sid, message)
		if err != nil {
			t.Fatal(err)
		}
		if pending(preview) {
			break
		}
		if turns == 60 {
			t.Fatal("the window never reached its threshold")
		}
		if _, err := c.Interact(ctx, contextd.Turn{SessionID: sid, Message: message}); err != nil {
			t.Fatal(err)
		}
	}
	written, err := c.PreviewContext(ctx, sid, message, contextd.WithSummarize())
	if err != nil {
		t.Fatal(err)
	}
	if !written.GetSummaryKept() || pending(written) {
		t.Fatalf("summarize: %v", written)
	}
	s, err := c.GetSession(ctx, sid)
	if err != nil || s.Summary == nil || s.Summary.Text == "" {
		t.Fatalf("session after summarize %+v, %v", s, err)
	}
	// Only PreviewContext takes the option.
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: id(t, "fold-conv")})
	if err != nil {
		t.Fatal(err)
	}
	defer conv.Close()
	for _, err := range conv.Send("hi", contextd.WithSummarize()) {
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Send with WithSummarize: %v, want InvalidArgument", err)
		}
		break
	}
}

// An abandon refused with FAILED_PRECONDITION (an error outside any turn, so with an empty turn
// id, like the answer to a stray cancel) must neither be taken for a stray cancel's answer nor
// leave one unread: the next turn's reply is its own.
func TestAFailedAbandonDoesNotConfuseLeavingATurnEarly(t *testing.T) {
	ctx := context.Background()
	c := dial(t)
	sid := id(t, "s")
	weather := contextd.Tool{Name: "get_weather", Description: "Current weather of a city", InputSchema: map[string]any{"type": "object"}}
	conv, err := c.Converse(ctx, contextd.SessionOptions{ID: sid, Tools: []contextd.Tool{weather}})
	if err != nil {
		t.Fatal(err)
	}
	defer conv.Close()
	leaveAt := func(message string, stop func(contextd.Event) bool) {
		t.Helper()
		for event, err := range conv.Send(message) {
			if err != nil {
				t.Fatal(err)
			}
			if stop(event) {
				break
			}
		}
	}
	isStarted := func(e contextd.Event) bool { _, ok := e.(*contextd.Started); return ok }
	isDelta := func(e contextd.Event) bool { _, ok := e.(*contextd.Delta); return ok }
	// A fast turn left at its start: the cancel finds it running or already over (then it is
	// answered outside any turn). Several rounds meet both cases on most machines.
	for round := range 5 {
		leaveAt("a b c", isStarted)
		_, err := conv.AbandonToolCalls()
		var turnErr *contextd.TurnError
		if !errors.As(err, &turnErr) || turnErr.Code != codes.FailedPrecondition || turnErr.TurnID != "" {
			t.Fatalf("round %d: abandon with nothing paused: %v, want FAILED_PRECONDITION outside a turn", round, err)
		}
		want := fmt.Sprintf("You said 'next %d'.", round)
		if reply, err := conv.Say(fmt.Sprintf("next %d", round)); err != nil || reply.Text != want {
			t.Fatalf("round %d: %+v, %v; want %q", round, reply, err, want)
		}
	}
	// The paused turn abandoned elsewhere: this stream's Cancel still believes it paused, and
	// its abandon is refused outside any turn; a turn left early after it reads only its own.
	if reply, err := conv.Say(`/call get_weather {"city": "Oslo"}`); err != nil || !reply.NeedsToolResults() {
		t.Fatalf("pause: %+v, %v", reply, err)
	}
	if _, err := c.Interact(ctx, contextd.Turn{SessionID: sid, AbandonToolCalls: true}); err != nil {
		t.Fatal(err)
	}
	if err := conv.Cancel(); err != nil {
		t.Fatal(err)
	}
	leaveAt("/delay 1000 w0 w1 w2 w3 w4 w5 w6 w7 w8 w9", isDelta)
	if reply, err := conv.Say("after"); err != nil || reply.Text != "You said 'after'." {
		t.Fatalf("after the refused abandon: %+v, %v", reply, err)
	}
}
