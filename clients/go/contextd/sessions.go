package contextd

import (
	"context"
	"iter"
	"time"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SessionOptions describes a new session. Every field is optional.
type SessionOptions struct {
	// ID of the session: 1 to 128 characters of [A-Za-z0-9._:-]. Empty: the server picks one.
	ID           string
	SystemPrompt string
	Context      map[string]any
	// Model answering in the session; empty: the server default (echo).
	Model  string
	Tools  []Tool
	Labels map[string]string
	// MaxContextTokens is the window size; 0: the model's default.
	MaxContextTokens uint32
	// ExpireTime is when the session expires (in the future); zero: the server's idle TTL.
	ExpireTime time.Time
	// Window manages the context window; nil: sliding window.
	Window *contextdv1.WindowSettings
	// ServerTools, when not nil, names the server-side tools offered to the model: names or
	// "*" patterns such as "time__*" (an empty slice: none). Nil: the server's
	// engine.default_server_tools.
	ServerTools *[]string
}

// SessionUpdate changes a session. Nil fields stay as they are.
type SessionUpdate struct {
	// Context is an RFC 7386 merge patch: nested maps merge, a nil value deletes the key.
	Context      map[string]any
	SystemPrompt *string
	// Tools, when not nil, replaces the client-declared tools (an empty slice removes them).
	Tools            *[]Tool
	Model            *string
	MaxContextTokens *uint32
	// Labels are added or replaced; RemoveLabels are removed.
	Labels       map[string]string
	RemoveLabels []string
	// Etag, when not empty, applies the update only while the session's etag is still this
	// one (code Aborted otherwise).
	Etag string
	// ExpireTime, when not zero, is a new fixed expiry.
	ExpireTime time.Time
	// Window, when not nil, replaces the window settings.
	Window *contextdv1.WindowSettings
	// ServerTools, when not nil, replaces the server-side tools offered to the model (names
	// or "*" patterns; an empty slice: none).
	ServerTools *[]string
	// ResetServerTools forgets the session's own ServerTools, so it is offered the server's
	// engine.default_server_tools again (code InvalidArgument together with ServerTools).
	ResetServerTools bool
}

// MessagePage is one page of ListMessagesPage.
type MessagePage struct {
	Messages []Message
	// NextPageToken fetches the next page; empty on the last page.
	NextPageToken string
}

// SessionPage is one page of ListSessions.
type SessionPage struct {
	Sessions []*Session
	// NextPageToken fetches the next page; empty on the last page.
	NextPageToken string
}

// CreateSession creates a session; code AlreadyExists when the ID is taken.
func (c *Client) CreateSession(ctx context.Context, opts SessionOptions) (*Session, error) {
	sctx, err := toStruct(opts.Context)
	if err != nil {
		return nil, err
	}
	tools, err := toolsToWire(opts.Tools)
	if err != nil {
		return nil, err
	}
	resp, err := c.sessions.CreateSession(ctx, &contextdv1.CreateSessionRequest{
		SessionId:        opts.ID,
		SystemPrompt:     opts.SystemPrompt,
		Context:          sctx,
		Model:            opts.Model,
		Tools:            tools,
		Labels:           opts.Labels,
		MaxContextTokens: opts.MaxContextTokens,
		ExpireTime:       timestampOrNil(opts.ExpireTime),
		Window:           opts.Window,
		ServerTools:      selectionToWire(opts.ServerTools),
	})
	if err != nil {
		return nil, err
	}
	return sessionFromWire(resp.GetSession()), nil
}

// GetSession returns a session; code NotFound when it does not exist.
func (c *Client) GetSession(ctx context.Context, id string) (*Session, error) {
	resp, err := c.sessions.GetSession(ctx, &contextdv1.GetSessionRequest{SessionId: id})
	if err != nil {
		return nil, err
	}
	return sessionFromWire(resp.GetSession()), nil
}

// ListSessions returns one page of sessions ordered by ID. pageSize 0 is the server default;
// pageToken is empty for the first page.
func (c *Client) ListSessions(ctx context.Context, pageSize uint32, pageToken string) (*SessionPage, error) {
	resp, err := c.sessions.ListSessions(ctx, &contextdv1.ListSessionsRequest{PageSize: pageSize, PageToken: pageToken})
	if err != nil {
		return nil, err
	}
	page := &SessionPage{NextPageToken: resp.GetNextPageToken()}
	for _, s := range resp.GetSessions() {
		page.Sessions = append(page.Sessions, sessionFromWire(s))
	}
	return page, nil
}

// Sessions iterates over every session, fetching pages as it goes. An error ends the
// iteration.
func (c *Client) Sessions(ctx context.Context) iter.Seq2[*Session, error] {
	return func(yield func(*Session, error) bool) {
		token := ""
		for {
			page, err := c.ListSessions(ctx, 0, token)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, s := range page.Sessions {
				if !yield(s, nil) {
					return
				}
			}
			if page.NextPageToken == "" {
				return
			}
			token = page.NextPageToken
		}
	}
}

// UpdateSession changes a session and returns it as it is afterwards.
func (c *Client) UpdateSession(ctx context.Context, id string, update SessionUpdate) (*Session, error) {
	sctx, err := toStruct(update.Context)
	if err != nil {
		return nil, err
	}
	req := &contextdv1.UpdateSessionRequest{
		SessionId:        id,
		Context:          sctx,
		SystemPrompt:     update.SystemPrompt,
		Model:            update.Model,
		MaxContextTokens: update.MaxContextTokens,
		Labels:           update.Labels,
		RemoveLabels:     update.RemoveLabels,
		Etag:             update.Etag,
		ExpireTime:       timestampOrNil(update.ExpireTime),
		Window:           update.Window,
		ServerTools:      selectionToWire(update.ServerTools),
		ResetServerTools: update.ResetServerTools,
	}
	if update.Tools != nil {
		tools, err := toolsToWire(*update.Tools)
		if err != nil {
			return nil, err
		}
		req.Tools = &contextdv1.ToolDefinitionList{Tools: tools}
	}
	resp, err := c.sessions.UpdateSession(ctx, req)
	if err != nil {
		return nil, err
	}
	return sessionFromWire(resp.GetSession()), nil
}

// DeleteSession deletes a session with its history and returns how many messages went with
// it; code NotFound when it does not exist.
func (c *Client) DeleteSession(ctx context.Context, id string) (uint64, error) {
	return c.DeleteSessionIf(ctx, id, "")
}

// DeleteSessionIf deletes a session only while its etag is still etag (code Aborted when it
// changed since it was read); an empty etag deletes unconditionally. It returns how many
// messages were deleted.
func (c *Client) DeleteSessionIf(ctx context.Context, id, etag string) (uint64, error) {
	resp, err := c.sessions.DeleteSession(ctx, &contextdv1.DeleteSessionRequest{SessionId: id, Etag: etag})
	if err != nil {
		return 0, err
	}
	return resp.GetDeletedMessages(), nil
}

// Messages iterates over a session's whole history, oldest first, fetching pages as it goes.
func (c *Client) Messages(ctx context.Context, id string) iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		token := ""
		for {
			resp, err := c.sessions.ListMessages(ctx, &contextdv1.ListMessagesRequest{SessionId: id, PageToken: token})
			if err != nil {
				yield(Message{}, err)
				return
			}
			for _, m := range resp.GetMessages() {
				if !yield(messageFromWire(m), nil) {
					return
				}
			}
			if resp.GetNextPageToken() == "" {
				return
			}
			token = resp.GetNextPageToken()
		}
	}
}

// ListMessagesPage returns one page of a session's history, oldest first. pageSize 0 is the
// server default; pageToken is empty for the first page.
func (c *Client) ListMessagesPage(ctx context.Context, id string, pageSize uint32, pageToken string) (*MessagePage, error) {
	resp, err := c.sessions.ListMessages(ctx, &contextdv1.ListMessagesRequest{SessionId: id, PageSize: pageSize, PageToken: pageToken})
	if err != nil {
		return nil, err
	}
	page := &MessagePage{NextPageToken: resp.GetNextPageToken()}
	for _, m := range resp.GetMessages() {
		page.Messages = append(page.Messages, messageFromWire(m))
	}
	return page, nil
}

// ListMessages returns a session's whole history, oldest first.
func (c *Client) ListMessages(ctx context.Context, id string) ([]Message, error) {
	var out []Message
	for m, err := range c.Messages(ctx, id) {
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// PreviewContext shows the window the model would see if message (with the patch of
// WithContextPatch) were sent now. It changes nothing — a summary the turn would write first
// shows as a CONTEXT_ENTRY_KIND_PENDING_SUMMARY entry — unless WithSummarize asks it to write
// that summary now. WithIdempotencyKey means nothing to it and is refused.
func (c *Client) PreviewContext(ctx context.Context, id, message string, opts ...MessageOption) (*contextdv1.PreviewContextResponse, error) {
	cfg := messageOptions(opts)
	if cfg.idempotencyKey != "" {
		return nil, status.Error(codes.InvalidArgument, "PreviewContext runs no turn: leave out WithIdempotencyKey")
	}
	sctx, err := toStruct(cfg.patch)
	if err != nil {
		return nil, err
	}
	return c.sessions.PreviewContext(ctx, &contextdv1.PreviewContextRequest{SessionId: id, Message: message, Context: sctx, Summarize: cfg.summarize})
}

// selectionToWire turns an optional list of tool names or patterns into the wire message
// (nil stays unset).
func selectionToWire(patterns *[]string) *contextdv1.ServerToolSelection {
	if patterns == nil {
		return nil
	}
	return &contextdv1.ServerToolSelection{Patterns: append([]string{}, (*patterns)...)}
}
