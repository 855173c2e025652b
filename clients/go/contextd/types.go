package contextd

import (
	"encoding/json"
	"time"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Tool declares a tool that the client runs itself when the model asks for it (or, in
// ListTools results, a tool the server runs).
type Tool struct {
	// Name is 1 to 64 characters of [A-Za-z0-9_-], unique within a session.
	Name string
	// Description tells the model when to call the tool.
	Description string
	// InputSchema is the JSON Schema of the arguments; nil means any object.
	InputSchema map[string]any
}

// ToolCall is the model's request to run one tool.
type ToolCall struct {
	// ID names the call; a ToolResult answers it with the same ID.
	ID string
	// Name is the tool to run.
	Name string
	// Arguments is the JSON object the model passed.
	Arguments map[string]any
}

// ToolResult answers one ToolCall.
type ToolResult struct {
	// CallID is the ToolCall.ID this result answers.
	CallID string
	// Content is what the tool returned, as text for the model.
	Content string
	// IsError marks a tool that ran and failed; Content says why.
	IsError bool
}

// Usage counts tokens.
type Usage struct {
	InputTokens   uint64
	OutputTokens  uint64
	ContextTokens uint64
}

// Session is a conversation kept by contextd.
type Session struct {
	ID               string
	SystemPrompt     string
	Context          map[string]any
	Model            string
	Tools            []Tool
	Labels           map[string]string
	CreateTime       time.Time
	UpdateTime       time.Time
	MessageCount     uint64
	State            contextdv1.SessionState
	PendingToolCalls []ToolCall
	Usage            Usage
	MaxContextTokens uint32
}

// AwaitingToolResults tells whether the session waits for results of PendingToolCalls.
func (s *Session) AwaitingToolResults() bool {
	return s.State == contextdv1.SessionState_SESSION_STATE_AWAITING_TOOL_RESULTS
}

// Message is one entry of a session's history.
type Message struct {
	Index      uint64
	Role       contextdv1.MessageRole
	Content    string
	ToolCalls  []ToolCall
	ToolCallID string
	ToolName   string
	IsError    bool
	CreateTime time.Time
	TokenCount uint32
	TurnID     string
}

// Reply is the outcome of a turn.
type Reply struct {
	SessionID string
	// Text is the assistant's reply.
	Text string
	// Context is the session's context after the turn.
	Context      map[string]any
	FinishReason contextdv1.FinishReason
	// ToolCalls are the client-side tools to run when FinishReason is
	// FINISH_REASON_TOOL_CALLS.
	ToolCalls      []ToolCall
	Usage          Usage
	SessionCreated bool
	TurnID         string
}

// NeedsToolResults tells whether the turn paused for the client-side tools in ToolCalls.
func (r *Reply) NeedsToolResults() bool {
	return r.FinishReason == contextdv1.FinishReason_FINISH_REASON_TOOL_CALLS
}

// toStruct converts a Go map to a protobuf Struct through encoding/json, so that any value
// encoding/json accepts (nested maps, typed slices, structs with json tags) can be context.
// A nil map is "not set".
func toStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "context is not encodable as JSON: %v", err)
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "context is not a JSON object: %v", err)
	}
	return s, nil
}

// fromStruct converts a Struct to a map; never nil, so that an empty context reads as {}.
func fromStruct(s *structpb.Struct) map[string]any {
	if s == nil {
		return map[string]any{}
	}
	return s.AsMap()
}

func toolsToWire(tools []Tool) ([]*contextdv1.ToolDefinition, error) {
	out := make([]*contextdv1.ToolDefinition, 0, len(tools))
	for _, t := range tools {
		schema, err := toStruct(t.InputSchema)
		if err != nil {
			return nil, err
		}
		out = append(out, &contextdv1.ToolDefinition{Name: t.Name, Description: t.Description, InputSchema: schema})
	}
	return out, nil
}

func toolsFromWire(tools []*contextdv1.ToolDefinition) []Tool {
	out := make([]Tool, 0, len(tools))
	for _, t := range tools {
		out = append(out, Tool{Name: t.GetName(), Description: t.GetDescription(), InputSchema: fromStruct(t.GetInputSchema())})
	}
	return out
}

func toolCallFromWire(c *contextdv1.ToolCall) ToolCall {
	return ToolCall{ID: c.GetToolCallId(), Name: c.GetName(), Arguments: fromStruct(c.GetArguments())}
}

func toolCallsFromWire(calls []*contextdv1.ToolCall) []ToolCall {
	out := make([]ToolCall, 0, len(calls))
	for _, c := range calls {
		out = append(out, toolCallFromWire(c))
	}
	return out
}

func toolResultsToWire(results []ToolResult) []*contextdv1.ToolResult {
	out := make([]*contextdv1.ToolResult, 0, len(results))
	for _, r := range results {
		out = append(out, &contextdv1.ToolResult{ToolCallId: r.CallID, Content: r.Content, IsError: r.IsError})
	}
	return out
}

func toolResultFromWire(r *contextdv1.ToolResult) ToolResult {
	return ToolResult{CallID: r.GetToolCallId(), Content: r.GetContent(), IsError: r.GetIsError()}
}

func usageFromWire(u *contextdv1.Usage) Usage {
	return Usage{InputTokens: u.GetInputTokens(), OutputTokens: u.GetOutputTokens(), ContextTokens: u.GetContextTokens()}
}

func sessionFromWire(s *contextdv1.Session) *Session {
	labels := s.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	return &Session{
		ID:               s.GetSessionId(),
		SystemPrompt:     s.GetSystemPrompt(),
		Context:          fromStruct(s.GetContext()),
		Model:            s.GetModel(),
		Tools:            toolsFromWire(s.GetTools()),
		Labels:           labels,
		CreateTime:       s.GetCreateTime().AsTime(),
		UpdateTime:       s.GetUpdateTime().AsTime(),
		MessageCount:     s.GetMessageCount(),
		State:            s.GetState(),
		PendingToolCalls: toolCallsFromWire(s.GetPendingToolCalls()),
		Usage:            usageFromWire(s.GetUsage()),
		MaxContextTokens: s.GetMaxContextTokens(),
	}
}

func messageFromWire(m *contextdv1.Message) Message {
	return Message{
		Index:      m.GetIndex(),
		Role:       m.GetRole(),
		Content:    m.GetContent(),
		ToolCalls:  toolCallsFromWire(m.GetToolCalls()),
		ToolCallID: m.GetToolCallId(),
		ToolName:   m.GetToolName(),
		IsError:    m.GetIsError(),
		CreateTime: m.GetCreateTime().AsTime(),
		TokenCount: m.GetTokenCount(),
		TurnID:     m.GetTurnId(),
	}
}

func replyFromWire(r *contextdv1.InteractResponse) *Reply {
	return &Reply{
		SessionID:      r.GetSessionId(),
		Text:           r.GetResponse(),
		Context:        fromStruct(r.GetUpdatedContext()),
		FinishReason:   r.GetFinishReason(),
		ToolCalls:      toolCallsFromWire(r.GetToolCalls()),
		Usage:          usageFromWire(r.GetUsage()),
		SessionCreated: r.GetSessionCreated(),
		TurnID:         r.GetTurnId(),
	}
}
