package contextd

import (
	"context"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
)

// ToolList is what ListTools returns.
type ToolList struct {
	// Server are the tools contextd runs itself (context_get, context_set, history_search).
	Server []Tool
	// Session are the client-declared tools of the session asked about, if any.
	Session []Tool
	// Offered names every tool the session asked about offers its model (selected
	// server-side tools, then its own), in the order the model sees them.
	Offered []string
}

// ToolOutput is what a server-side tool returned.
type ToolOutput struct {
	// Content is the result as text.
	Content string
	// Structured is the result as JSON (map, slice, string, float64, bool or nil).
	Structured any
	// IsError marks a tool that ran and failed; Content says why.
	IsError bool
}

// ListTools lists the server-side tools and, when sessionID is not empty, that session's
// client-declared tools.
func (c *Client) ListTools(ctx context.Context, sessionID string) (*ToolList, error) {
	resp, err := c.tools.ListTools(ctx, &contextdv1.ListToolsRequest{SessionId: sessionID})
	if err != nil {
		return nil, err
	}
	return &ToolList{
		Server:  toolsFromWire(resp.GetTools()),
		Session: toolsFromWire(resp.GetSessionTools()),
		Offered: resp.GetOfferedTools(),
	}, nil
}

// CallOption sets an optional field of CallTool.
type CallOption func(*contextdv1.CallToolRequest)

// WithSession names the session a tool works on (required by context_get, context_set and
// history_search).
func WithSession(id string) CallOption {
	return func(r *contextdv1.CallToolRequest) { r.SessionId = id }
}

// CallTool runs a server-side tool with arguments (nil: {}), on the session WithSession names.
// The order (name, arguments, session) is the same in every contextd client. A tool that
// fails returns IsError; only malformed calls are errors.
func (c *Client) CallTool(ctx context.Context, name string, arguments map[string]any, opts ...CallOption) (*ToolOutput, error) {
	args, err := toStruct(arguments)
	if err != nil {
		return nil, err
	}
	req := &contextdv1.CallToolRequest{Name: name, Arguments: args}
	for _, opt := range opts {
		opt(req)
	}
	resp, err := c.tools.CallTool(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &ToolOutput{Content: resp.GetContent(), IsError: resp.GetIsError()}
	if resp.GetStructuredContent() != nil {
		out.Structured = resp.GetStructuredContent().AsInterface()
	}
	return out, nil
}

// ListModels lists the models sessions may name, the configured provider backends and the
// default model (the generated message).
func (c *Client) ListModels(ctx context.Context) (*contextdv1.ListModelsResponse, error) {
	return c.models.ListModels(ctx, &contextdv1.ListModelsRequest{})
}
