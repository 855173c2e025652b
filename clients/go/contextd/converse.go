package contextd

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync"

	contextdv1 "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ToolHandler runs one client-side tool call for a Conversation and returns the text the
// model reads. A returned error becomes a result with IsError set and the error's text as
// content: the model sees the failure, the turn goes on.
type ToolHandler func(ctx context.Context, call ToolCall) (string, error)

// Conversation is one Converse stream attached to a session: many turns, one at a time.
// Send (and Say, SendToolResults, Close) must not run concurrently with each other; Cancel may
// be called from any goroutine while a turn runs.
type Conversation struct {
	ctx     context.Context
	cancel  context.CancelFunc
	stream  grpc.BidiStreamingClient[contextdv1.ConverseRequest, contextdv1.ConverseResponse]
	handler ToolHandler
	session *Session
	created bool

	// sendMu serialises frames: grpc-go allows one SendMsg at a time, and Cancel comes from
	// other goroutines. pendingCancels counts cancel frames whose answer has not been read:
	// each is answered either by a turn completing as cancelled or, when the turn had already
	// ended, by an error event outside any turn, which is not the caller's business.
	sendMu         sync.Mutex
	pendingCancels int
	// paused tells whether the session waits for tool results, as far as the events read so
	// far tell; running, that a turn's events are being read; abandoning, that a Cancel while
	// paused (and no turn running) started an abandon whose events are not read yet (the next
	// turn reads them first). All three are guarded by sendMu.
	paused     bool
	running    bool
	abandoning bool
}

// Converse opens a Converse stream on the session open.ID (created with the other fields of
// open when it does not exist) and waits for the server to attach it. With WithToolHandler(h),
// h answers every client-side tool call of the conversation's turns automatically; without it
// such turns pause for SendToolResults. The stream lives until Close or until ctx ends.
func (c *Client) Converse(ctx context.Context, open SessionOptions, opts ...TurnOption) (*Conversation, error) {
	var cfg turnConfig
	for _, o := range opts {
		o(&cfg)
	}
	handler := cfg.handler
	sctx, err := toStruct(open.Context)
	if err != nil {
		return nil, err
	}
	tools, err := toolsToWire(open.Tools)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.turns.Converse(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	cv := &Conversation{ctx: ctx, cancel: cancel, stream: stream, handler: handler}
	err = cv.send(&contextdv1.ConverseRequest{Frame: &contextdv1.ConverseRequest_Open{Open: &contextdv1.ConverseOpen{
		SessionId:        open.ID,
		SystemPrompt:     open.SystemPrompt,
		Context:          sctx,
		Model:            open.Model,
		Tools:            tools,
		Labels:           open.Labels,
		MaxContextTokens: open.MaxContextTokens,
		ExpireTime:       timestampOrNil(open.ExpireTime),
		Window:           open.Window,
		ServerTools:      selectionToWire(open.ServerTools),
	}}})
	if err == nil {
		err = cv.awaitOpened()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return cv, nil
}

func (cv *Conversation) awaitOpened() error {
	for {
		msg, err := cv.recv()
		if err != nil {
			return err
		}
		switch e := msg.GetEvent().(type) {
		case *contextdv1.ConverseResponse_Opened:
			cv.session = sessionFromWire(e.Opened.GetSession())
			cv.created = e.Opened.GetSessionCreated()
			cv.paused = cv.session.AwaitingToolResults()
			return nil
		case *contextdv1.ConverseResponse_Error:
			return turnErrorFromWire(msg)
		}
	}
}

// Session is the session as it was when the stream was attached.
func (cv *Conversation) Session() *Session { return cv.session }

// Created tells whether opening the stream created the session.
func (cv *Conversation) Created() bool { return cv.created }

// Send starts a turn with a user message (WithContextPatch, WithIdempotencyKey) and yields its
// events until the turn is over: the iteration ends after the final *Completed, or with a
// *TurnError when the server refused the message. With a ToolHandler, client-side tool calls
// are answered automatically and the turn continues (the *ToolCallRequested events and the
// pausing *Completed are still yielded); without one, the iteration ends at the *Completed
// whose Reply.NeedsToolResults() is true, and SendToolResults continues the turn. Stopping the
// loop early cancels the running turn.
func (cv *Conversation) Send(message string, opts ...MessageOption) iter.Seq2[Event, error] {
	cfg := messageOptions(opts)
	return func(yield func(Event, error) bool) {
		if cfg.summarize {
			yield(nil, status.Error(codes.InvalidArgument, "WithSummarize applies to PreviewContext only"))
			return
		}
		sctx, err := toStruct(cfg.patch)
		if err != nil {
			yield(nil, err)
			return
		}
		if err := cv.finishAbandon(); err != nil {
			yield(nil, err)
			return
		}
		err = cv.startTurn(&contextdv1.ConverseRequest{Frame: &contextdv1.ConverseRequest_UserMessage{
			UserMessage: &contextdv1.ConverseUserMessage{
				Message:        message,
				Context:        sctx,
				IdempotencyKey: cfg.idempotencyKey,
			},
		}})
		if err != nil {
			yield(nil, err)
			return
		}
		cv.runTurn(yield)
	}
}

// Say sends a user message and returns the turn's final Reply (tool calls answered by the
// handler, if any).
func (cv *Conversation) Say(message string, opts ...MessageOption) (*Reply, error) {
	return Collect(cv.Send(message, opts...))
}

// SendToolResults continues a paused turn with results for every pending call, yielding the
// rest of the turn's events as Send does.
func (cv *Conversation) SendToolResults(results []ToolResult) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		if err := cv.finishAbandon(); err != nil {
			yield(nil, err)
			return
		}
		if err := cv.startTurn(resultsFrame(results)); err != nil {
			yield(nil, err)
			return
		}
		cv.runTurn(yield)
	}
}

// Cancel cancels the running turn: it ends with a Completed whose FinishReason is
// FINISH_REASON_CANCELLED, and nothing of it is stored. While the session waits for tool
// results (a pausing Completed was read and not answered), it abandons the paused turn
// instead, as AbandonToolCalls does; the next Send or SendToolResults reads the abandon's
// events first. Cancelling when no turn runs or waits does nothing.
func (cv *Conversation) Cancel() error {
	cv.sendMu.Lock()
	defer cv.sendMu.Unlock()
	if cv.paused && !cv.running {
		// Answered by the abandon's own events (or an error), which finishAbandon reads.
		cv.paused = false
		cv.abandoning = true
	} else {
		cv.pendingCancels++
	}
	return cv.sendLocked(cancelFrame())
}

// AbandonToolCalls abandons the turn paused for tool results: every pending call gets the
// error result "cancelled by the client", stored with its call; the turn ends with
// FINISH_REASON_CANCELLED without another model step and the session is idle again. It
// returns that Reply; a *TurnError with FAILED_PRECONDITION when nothing is paused.
func (cv *Conversation) AbandonToolCalls() (*Reply, error) {
	if err := cv.finishAbandon(); err != nil {
		return nil, err
	}
	if err := cv.startTurn(cancelFrame()); err != nil {
		return nil, err
	}
	reply, err := Collect(func(yield func(Event, error) bool) { cv.runTurn(yield) })
	// Abandoned, or refused because nothing was paused: either way nothing waits now.
	cv.notePause(nil, true)
	return reply, err
}

// startTurn sends the frame that starts a turn, marking the turn as running until runTurn
// has read its end.
func (cv *Conversation) startTurn(frame *contextdv1.ConverseRequest) error {
	cv.sendMu.Lock()
	defer cv.sendMu.Unlock()
	cv.running = true
	err := cv.sendLocked(frame)
	if err != nil {
		cv.running = false
	}
	return err
}

func cancelFrame() *contextdv1.ConverseRequest {
	return &contextdv1.ConverseRequest{Frame: &contextdv1.ConverseRequest_Cancel{Cancel: &contextdv1.ConverseCancel{}}}
}

// finishAbandon reads the events of an abandon started by Cancel, if one is unread.
func (cv *Conversation) finishAbandon() error {
	cv.sendMu.Lock()
	abandoning := cv.abandoning
	cv.abandoning = false
	cv.sendMu.Unlock()
	if !abandoning {
		return nil
	}
	return cv.readToEndOfTurn()
}

// readToEndOfTurn reads up to and including the next Completed or error event.
func (cv *Conversation) readToEndOfTurn() error {
	for {
		msg, err := cv.recv()
		if err != nil {
			return err
		}
		switch msg.GetEvent().(type) {
		case *contextdv1.ConverseResponse_Completed, *contextdv1.ConverseResponse_Error:
			return nil
		}
	}
}

// notePause follows the session's pause from a turn's reply: a cancelled continuation leaves
// the session as it was, and an abandon ends with FINISH_REASON_CANCELLED too.
func (cv *Conversation) notePause(reply *Reply, abandon bool) {
	cv.sendMu.Lock()
	defer cv.sendMu.Unlock()
	switch {
	case abandon:
		cv.paused = false
	case reply.FinishReason != contextdv1.FinishReason_FINISH_REASON_CANCELLED:
		cv.paused = reply.NeedsToolResults() && cv.handler == nil
	}
}

// Close ends the stream: it half-closes, lets the server finish, and returns the stream's
// final status (nil when it ended OK).
func (cv *Conversation) Close() error {
	defer cv.cancel()
	cv.sendMu.Lock()
	err := cv.stream.CloseSend()
	cv.sendMu.Unlock()
	if err != nil {
		return err
	}
	for {
		if _, err := cv.recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (cv *Conversation) runTurn(yield func(Event, error) bool) {
	defer func() {
		cv.sendMu.Lock()
		cv.running = false
		cv.sendMu.Unlock()
	}()
	for {
		msg, err := cv.recv()
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Unavailable, "the server ended the Converse stream during a turn")
		}
		if err != nil {
			yield(nil, err)
			return
		}
		var event Event
		switch e := msg.GetEvent().(type) {
		case *contextdv1.ConverseResponse_Error:
			yield(nil, turnErrorFromWire(msg))
			return
		case *contextdv1.ConverseResponse_Completed:
			reply := replyFromWire(e.Completed)
			cv.notePause(reply, false)
			if !yield(&Completed{Reply: reply}, nil) {
				return
			}
			if !reply.NeedsToolResults() || cv.handler == nil {
				return
			}
			if err := cv.sendResults(cv.runTools(reply.ToolCalls)); err != nil {
				yield(nil, err)
				return
			}
			continue
		case *contextdv1.ConverseResponse_Started:
			event = startedFromWire(e.Started)
		case *contextdv1.ConverseResponse_Delta:
			event = &Delta{Text: e.Delta.GetText()}
		case *contextdv1.ConverseResponse_ToolCall:
			event = &ToolCallRequested{Call: toolCallFromWire(e.ToolCall)}
		case *contextdv1.ConverseResponse_ToolResult:
			event = serverToolRanFromWire(e.ToolResult)
		default:
			continue
		}
		if !yield(event, nil) {
			cv.abandonTurn()
			return
		}
	}
}

// abandonTurn cancels the running turn and reads what is left of it, so the next turn starts
// on a clean stream. A turn that paused before the cancel reached it is abandoned by the
// cancel: that abandon's events are read too.
func (cv *Conversation) abandonTurn() {
	cv.sendMu.Lock()
	cv.pendingCancels++
	err := cv.sendLocked(cancelFrame())
	cv.sendMu.Unlock()
	if err != nil {
		return
	}
	for {
		msg, err := cv.recv()
		if err != nil {
			return
		}
		switch e := msg.GetEvent().(type) {
		case *contextdv1.ConverseResponse_Completed:
			if replyFromWire(e.Completed).NeedsToolResults() {
				cv.notePause(nil, true)
				_ = cv.readToEndOfTurn()
			}
			return
		case *contextdv1.ConverseResponse_Error:
			return
		}
	}
}

func (cv *Conversation) runTools(calls []ToolCall) []ToolResult {
	return runToolHandler(cv.ctx, cv.handler, calls)
}

// runToolHandler answers each call with handler; an error becomes an is_error result.
func runToolHandler(ctx context.Context, handler ToolHandler, calls []ToolCall) []ToolResult {
	results := make([]ToolResult, 0, len(calls))
	for _, call := range calls {
		content, err := handler(ctx, call)
		if err != nil {
			results = append(results, ToolResult{CallID: call.ID, Content: err.Error(), IsError: true})
			continue
		}
		results = append(results, ToolResult{CallID: call.ID, Content: content})
	}
	return results
}

func (cv *Conversation) sendResults(results []ToolResult) error {
	return cv.send(resultsFrame(results))
}

func resultsFrame(results []ToolResult) *contextdv1.ConverseRequest {
	return &contextdv1.ConverseRequest{Frame: &contextdv1.ConverseRequest_ToolResults{
		ToolResults: &contextdv1.ConverseToolResults{Results: toolResultsToWire(results)},
	}}
}

func (cv *Conversation) send(req *contextdv1.ConverseRequest) error {
	cv.sendMu.Lock()
	defer cv.sendMu.Unlock()
	return cv.sendLocked(req)
}

func (cv *Conversation) sendLocked(req *contextdv1.ConverseRequest) error {
	err := cv.stream.Send(req)
	if errors.Is(err, io.EOF) {
		// The server ended the stream; its status comes with the next receive.
		for {
			if _, rerr := cv.stream.Recv(); rerr != nil {
				if errors.Is(rerr, io.EOF) {
					return status.Error(codes.Unavailable, "the server ended the Converse stream")
				}
				return rerr
			}
		}
	}
	return err
}

// recv returns the next server frame, leaving out the answers to cancels that found no turn
// running.
func (cv *Conversation) recv() (*contextdv1.ConverseResponse, error) {
	for {
		msg, err := cv.stream.Recv()
		if err != nil {
			return nil, err
		}
		cv.sendMu.Lock()
		pending := cv.pendingCancels > 0
		switch e := msg.GetEvent().(type) {
		case *contextdv1.ConverseResponse_Completed:
			if pending && e.Completed.GetFinishReason() == contextdv1.FinishReason_FINISH_REASON_CANCELLED {
				cv.pendingCancels--
			}
		case *contextdv1.ConverseResponse_Error:
			if pending && msg.GetTurnId() == "" && codes.Code(e.Error.GetCode()) == codes.FailedPrecondition {
				cv.pendingCancels--
				cv.sendMu.Unlock()
				continue
			}
		}
		cv.sendMu.Unlock()
		return msg, nil
	}
}

func turnErrorFromWire(msg *contextdv1.ConverseResponse) *TurnError {
	e := msg.GetError()
	return &TurnError{TurnID: msg.GetTurnId(), Code: codes.Code(e.GetCode()), Message: e.GetMessage()}
}
