package contextd

import (
	"context"
	"errors"
	"io"
	"iter"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Turn is what a client sends to run (or continue) a turn.
type Turn struct {
	// SessionID is required; the session is created when it does not exist yet.
	SessionID string
	// Message is the user's text; it may be empty only when ToolResults are sent.
	Message string
	// Context is an RFC 7386 merge patch applied to the session's context before the turn.
	Context map[string]any
	// ToolResults answer every call a paused turn waits for.
	ToolResults []ToolResult
	// IdempotencyKey makes the turn safe to repeat: a repeat with the same key on the session,
	// within the server's limits.idempotency_window, gets the first attempt's outcome instead
	// of a second turn. Use a fresh key (a UUID) per new message, the same one for its retries.
	IdempotencyKey string
	// AbandonToolCalls abandons the turn paused for client-side tools instead (with no Message
	// and no ToolResults): every pending call gets the error result "cancelled by the client",
	// the turn ends with FINISH_REASON_CANCELLED without another model step, and the session
	// is idle again. INVALID_ARGUMENT when nothing is pending.
	AbandonToolCalls bool
}

// Event is one event of a streamed turn: *Started, *Delta, *ToolCallRequested, *ServerToolRan
// or *Completed. Use a type switch; kinds a newer server adds are skipped.
type Event interface {
	isEvent()
}

// Started says a turn began.
type Started struct {
	TurnID         string
	SessionID      string
	SessionCreated bool
}

// Delta is the next piece of the assistant's text.
type Delta struct {
	Text string
}

// ToolCallRequested says the model asked for a client-side tool; the turn pauses after
// Completed until the client sends a result.
type ToolCallRequested struct {
	Call ToolCall
}

// ServerToolRan says a server-side tool ran during the turn.
type ServerToolRan struct {
	Call   ToolCall
	Result ToolResult
}

// Completed ends a turn.
type Completed struct {
	Reply *Reply
}

func (*Started) isEvent()           {}
func (*Delta) isEvent()             {}
func (*ToolCallRequested) isEvent() {}
func (*ServerToolRan) isEvent()     {}
func (*Completed) isEvent()         {}

// TurnError is a Converse frame the server refused (bad input, a failed turn). The stream
// stays usable. It carries the gRPC code: status.FromError and status.Code work on it.
type TurnError struct {
	TurnID  string
	Code    codes.Code
	Message string
}

func (e *TurnError) Error() string {
	return "contextd: " + e.Code.String() + ": " + e.Message
}

// GRPCStatus makes status.FromError and status.Code report the server's code.
func (e *TurnError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// MessageOption sets an optional part of a user message: of Conversation.Send and Say, and of
// PreviewContext.
type MessageOption func(*messageConfig)

type messageConfig struct {
	patch          map[string]any
	idempotencyKey string
	summarize      bool
}

func messageOptions(opts []MessageOption) messageConfig {
	var cfg messageConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	return cfg
}

// WithContextPatch merges patch into the session's context (a JSON merge patch: a nil value
// deletes its key) before the message is answered, as Turn.Context does for Interact.
func WithContextPatch(patch map[string]any) MessageOption {
	return func(c *messageConfig) { c.patch = patch }
}

// WithIdempotencyKey makes the message safe to resend: resent on a new stream after the old
// one broke, it gets its first outcome instead of a second turn (see Turn.IdempotencyKey).
func WithIdempotencyKey(key string) MessageOption {
	return func(c *messageConfig) { c.idempotencyKey = key }
}

// WithSummarize makes PreviewContext write the summary a summarize session's next turn would
// write first (a summarizer model call) instead of showing it as a pending entry; the summary
// is kept for that turn unless the session changes meanwhile (SummaryKept says which). Only
// PreviewContext takes it.
func WithSummarize() MessageOption {
	return func(c *messageConfig) { c.summarize = true }
}

// TurnOption sets an optional behaviour of Interact and Converse.
type TurnOption func(*turnConfig)

type turnConfig struct{ handler ToolHandler }

// WithToolHandler answers the turn's client-side tool calls with handler and continues the
// turn until it finishes (Python's and TypeScript's tool_handler / toolHandler). A handler
// error is sent to the model as an is_error result.
func WithToolHandler(handler ToolHandler) TurnOption {
	return func(c *turnConfig) { c.handler = handler }
}

// Interact runs one turn and returns its outcome. Without WithToolHandler a turn that pauses
// for client-side tools is returned as it is (NeedsToolResults).
func (c *Client) Interact(ctx context.Context, turn Turn, opts ...TurnOption) (*Reply, error) {
	var cfg turnConfig
	for _, opt := range opts {
		opt(&cfg)
	}
	reply, err := c.interactOnce(ctx, turn)
	for err == nil && cfg.handler != nil && reply.NeedsToolResults() {
		results := runToolHandler(ctx, cfg.handler, reply.ToolCalls)
		reply, err = c.interactOnce(ctx, Turn{SessionID: turn.SessionID, ToolResults: results})
	}
	return reply, err
}

func (c *Client) interactOnce(ctx context.Context, turn Turn) (*Reply, error) {
	sctx, err := toStruct(turn.Context)
	if err != nil {
		return nil, err
	}
	resp, err := c.turns.Interact(ctx, &contextdv1.InteractRequest{
		SessionId:        turn.SessionID,
		Message:          turn.Message,
		Context:          sctx,
		ToolResults:      toolResultsToWire(turn.ToolResults),
		IdempotencyKey:   turn.IdempotencyKey,
		AbandonToolCalls: turn.AbandonToolCalls,
	})
	if err != nil {
		return nil, err
	}
	return replyFromWire(resp), nil
}

// StreamResponse runs one turn and yields its events as they arrive: *Started, *Delta pieces,
// *ToolCallRequested and *ServerToolRan, and *Completed last. A failure ends the iteration
// with a non-nil error; stopping the loop early cancels the call.
func (c *Client) StreamResponse(ctx context.Context, turn Turn) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		sctx, err := toStruct(turn.Context)
		if err != nil {
			yield(nil, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.turns.StreamResponse(ctx, &contextdv1.StreamResponseRequest{
			SessionId:        turn.SessionID,
			Message:          turn.Message,
			Context:          sctx,
			ToolResults:      toolResultsToWire(turn.ToolResults),
			IdempotencyKey:   turn.IdempotencyKey,
			AbandonToolCalls: turn.AbandonToolCalls,
		})
		if err != nil {
			yield(nil, err)
			return
		}
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			event := streamEventFromWire(msg)
			if event == nil {
				continue
			}
			if !yield(event, nil) {
				return
			}
		}
	}
}

// Collect drains a stream of events into the turn's Reply (the Completed event), returning
// the first error.
func Collect(events iter.Seq2[Event, error]) (*Reply, error) {
	var reply *Reply
	for event, err := range events {
		if err != nil {
			return nil, err
		}
		if done, ok := event.(*Completed); ok {
			reply = done.Reply
		}
	}
	if reply == nil {
		return nil, status.Error(codes.Internal, "the stream ended without a completed event")
	}
	return reply, nil
}

func streamEventFromWire(msg *contextdv1.StreamResponseResponse) Event {
	switch e := msg.GetEvent().(type) {
	case *contextdv1.StreamResponseResponse_Started:
		return startedFromWire(e.Started)
	case *contextdv1.StreamResponseResponse_Delta:
		return &Delta{Text: e.Delta.GetText()}
	case *contextdv1.StreamResponseResponse_ToolCall:
		return &ToolCallRequested{Call: toolCallFromWire(e.ToolCall)}
	case *contextdv1.StreamResponseResponse_ToolResult:
		return serverToolRanFromWire(e.ToolResult)
	case *contextdv1.StreamResponseResponse_Completed:
		return &Completed{Reply: replyFromWire(e.Completed)}
	default:
		return nil
	}
}

func startedFromWire(s *contextdv1.TurnStarted) *Started {
	return &Started{TurnID: s.GetTurnId(), SessionID: s.GetSessionId(), SessionCreated: s.GetSessionCreated()}
}

func serverToolRanFromWire(r *contextdv1.ToolResultEvent) *ServerToolRan {
	return &ServerToolRan{Call: toolCallFromWire(r.GetToolCall()), Result: toolResultFromWire(r.GetResult())}
}
