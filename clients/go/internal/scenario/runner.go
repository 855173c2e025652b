// Package scenario runs contextd's shared, language-neutral scenario files
// (clients/scenarios/*.json) against a live server through generic gRPC calls: each step names
// a full method, gives its request as proto3 JSON, and states the expected status, response,
// stream events and variables to save. The format is described in clients/scenarios/README.md.
package scenario

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	// The generated package registers contextd's descriptors, which the runner looks up by name.
	_ "github.com/contextd/contextd/clients/go/gen/contextd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// stepTimeout bounds one step so that a server that never answers fails the test instead of
// hanging it; it is not a performance assertion.
const stepTimeout = 60 * time.Second

// File is one scenario file.
type File struct {
	Name        string           `json:"name"`
	Description string           `json:"description"`
	Steps       []map[string]any `json:"steps"`
	// Path is where the file was read from.
	Path string `json:"-"`
}

// Load reads every *.json scenario in dir, sorted by file name.
func Load(dir string) ([]File, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	files := make([]File, 0, len(paths))
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var f File
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if f.Name == "" || len(f.Steps) == 0 {
			return nil, fmt.Errorf("%s: a scenario needs a name and at least one step", p)
		}
		f.Path = p
		files = append(files, f)
	}
	return files, nil
}

// Run executes the scenario's steps in order on conn and returns the first failure.
func Run(ctx context.Context, conn grpc.ClientConnInterface, f File) error {
	run := make([]byte, 4)
	if _, err := rand.Read(run); err != nil {
		return err
	}
	r := &runner{conn: conn, file: f, vars: map[string]string{"run": hex.EncodeToString(run)}}
	for i, raw := range f.Steps {
		// Converse frames are substituted one by one as they run, so that a frame can use a
		// variable saved by an earlier frame of the same step.
		frames := raw["frames"]
		rest := make(map[string]any, len(raw))
		for k, v := range raw {
			if k != "frames" {
				rest[k] = v
			}
		}
		step, err := substitute(rest, r.vars)
		if err != nil {
			return r.fail(i, "%v", err)
		}
		if frames != nil {
			step.(map[string]any)["frames"] = frames
		}
		if err := r.step(ctx, i, step.(map[string]any)); err != nil {
			return err
		}
	}
	return nil
}

type runner struct {
	conn grpc.ClientConnInterface
	file File
	vars map[string]string
	// frame names the Converse frame being run, for failure messages ("" outside one).
	frame string
}

// failure is a step that did not go as expected; its message names the scenario and step.
type failure struct{ msg string }

func (f *failure) Error() string { return f.msg }

func (r *runner) fail(step int, format string, args ...any) error {
	where := fmt.Sprintf("step %d", step)
	if r.frame != "" {
		where += ", " + r.frame
	}
	return &failure{fmt.Sprintf("scenario %s (%s), %s: %s", r.file.Name, filepath.Base(r.file.Path), where, fmt.Sprintf(format, args...))}
}

func (r *runner) mismatch(step int, what string, expected, actual any, diff string) error {
	return r.fail(step, "%s does not match: %s\n  expected: %s\n  actual:   %s", what, diff, render(expected), render(actual))
}

func (r *runner) step(ctx context.Context, i int, step map[string]any) error {
	name, _ := step["rpc"].(string)
	method, err := lookupMethod(name)
	if err != nil {
		return r.fail(i, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	switch {
	case method.IsStreamingClient() && method.IsStreamingServer():
		return r.bidi(ctx, i, name, method, step)
	case method.IsStreamingServer():
		return r.serverStream(ctx, i, name, method, step)
	case method.IsStreamingClient():
		return r.fail(i, "client-streaming methods are not part of the scenario format (%s)", name)
	default:
		return r.unary(ctx, i, name, method, step)
	}
}

func (r *runner) unary(ctx context.Context, i int, name string, method protoreflect.MethodDescriptor, step map[string]any) error {
	req, err := newMessage(method.Input(), step["request"])
	if err != nil {
		return r.fail(i, "request: %v", err)
	}
	resp, _ := newMessage(method.Output(), nil)
	callErr := r.conn.Invoke(ctx, "/"+name, req, resp)
	expect := object(step["expect"])
	if err := r.checkStatus(i, expect, callErr); err != nil {
		return err
	}
	if callErr != nil {
		return nil
	}
	actual := toJSON(resp)
	if want, ok := expect["response"]; ok {
		if diff := match(want, actual, ""); diff != "" {
			return r.mismatch(i, "response", want, actual, diff)
		}
	}
	return r.save(i, step["save"], actual)
}

func (r *runner) serverStream(ctx context.Context, i int, name string, method protoreflect.MethodDescriptor, step map[string]any) error {
	req, err := newMessage(method.Input(), step["request"])
	if err != nil {
		return r.fail(i, "request: %v", err)
	}
	stream, err := r.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/"+name)
	var events []any
	if err == nil {
		if err = stream.SendMsg(req); err == nil {
			err = stream.CloseSend()
		}
	}
	for err == nil {
		msg, _ := newMessage(method.Output(), nil)
		if err = stream.RecvMsg(msg); err == nil {
			events = append(events, toJSON(msg))
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	expect := object(step["expect"])
	if err := r.checkStatus(i, expect, err); err != nil {
		return err
	}
	if err := r.checkEvents(i, expect, events); err != nil {
		return err
	}
	if step["save"] != nil {
		if len(events) == 0 {
			return r.fail(i, "save: the stream sent no event")
		}
		return r.save(i, step["save"], events[len(events)-1])
	}
	return nil
}

func (r *runner) bidi(ctx context.Context, i int, name string, method protoreflect.MethodDescriptor, step map[string]any) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/"+name)
	if err != nil {
		return r.fail(i, "open %s: %v", name, err)
	}
	frames, _ := step["frames"].([]any)
	if len(frames) == 0 {
		return r.fail(i, "a %s step needs frames", name)
	}
	// ended is the stream's final status once a receive has returned an error.
	var ended error
	recv := func() (any, error) {
		if ended != nil {
			return nil, ended
		}
		msg, _ := newMessage(method.Output(), nil)
		if err := stream.RecvMsg(msg); err != nil {
			ended = err
			return nil, err
		}
		return toJSON(msg), nil
	}
	defer func() { r.frame = "" }()
	for j, raw := range frames {
		r.frame = fmt.Sprintf("frame %d", j)
		substituted, err := substitute(raw, r.vars)
		if err != nil {
			return r.fail(i, "%v", err)
		}
		frame := object(substituted)
		switch {
		case frame["send"] != nil:
			req, err := newMessage(method.Input(), frame["send"])
			if err != nil {
				return r.fail(i, "send: %v", err)
			}
			if err := stream.SendMsg(req); err != nil {
				_, rerr := recv()
				return r.fail(i, "send failed: %v (stream: %v)", err, rerr)
			}
		case frame["until"] != nil:
			until, _ := frame["until"].(string)
			var events []any
			for {
				msg, err := recv()
				if err != nil {
					return r.fail(i, "the stream ended (%s) before a %q event; events read: %s",
						describeStatus(err), until, render(eventNames(events)))
				}
				events = append(events, msg)
				if eventName(msg) == normalizeEvent(until) {
					break
				}
			}
			if err := r.checkEvents(i, frame, events); err != nil {
				return err
			}
			if err := r.save(i, frame["save"], events[len(events)-1]); err != nil {
				return err
			}
		case frame["close"] != nil:
			if err := stream.CloseSend(); err != nil {
				return r.fail(i, "close: %v", err)
			}
			var rest []any
			var err error
			for {
				var msg any
				if msg, err = recv(); err != nil {
					break
				}
				rest = append(rest, msg)
			}
			if len(rest) > 0 {
				return r.fail(i, "expected no more events after close, got %s", render(rest))
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if err := r.checkStatus(i, frame, err); err != nil {
				return err
			}
		default:
			return r.fail(i, "a frame needs send, until or close: %s", render(frame))
		}
	}
	return nil
}

// checkStatus compares a call's outcome with expect's "code" (default OK) and
// "messageContains".
func (r *runner) checkStatus(i int, expect map[string]any, err error) error {
	want := "OK"
	if c, ok := expect["code"].(string); ok {
		want = c
	}
	st := status.Convert(err)
	got := codeName(st.Code())
	if got != want {
		return r.fail(i, "status does not match\n  expected: %s\n  actual:   %s %q", want, got, st.Message())
	}
	if sub, ok := expect["messageContains"].(string); ok && !strings.Contains(st.Message(), sub) {
		return r.fail(i, "status message does not contain %q\n  actual: %s %q", sub, got, st.Message())
	}
	return nil
}

// checkEvents compares a run of stream messages with expect's "events", "text" and "last".
func (r *runner) checkEvents(i int, expect map[string]any, events []any) error {
	if want, ok := expect["events"]; ok {
		got := eventNames(events)
		wantNames, _ := want.([]any)
		normalized := make([]any, len(wantNames))
		for k, w := range wantNames {
			s, _ := w.(string)
			normalized[k] = normalizeEvent(s)
		}
		if render(normalized) != render(got) {
			return r.mismatch(i, "events", want, got, "different sequence")
		}
	}
	if want, ok := expect["text"]; ok {
		var text strings.Builder
		for _, e := range events {
			if d, ok := object(e)["delta"].(map[string]any); ok {
				s, _ := d["text"].(string)
				text.WriteString(s)
			}
		}
		if want != text.String() {
			return r.mismatch(i, "text", want, text.String(), "different text")
		}
	}
	if want, ok := expect["last"]; ok {
		if len(events) == 0 {
			return r.fail(i, "last: no event was received")
		}
		last := events[len(events)-1]
		if diff := match(want, last, ""); diff != "" {
			return r.mismatch(i, "last event", want, last, diff)
		}
	}
	return nil
}

// save stores the values at the given dotted paths of actual as variables.
func (r *runner) save(i int, spec any, actual any) error {
	for name, p := range object(spec) {
		path, _ := p.(string)
		v, err := lookupPath(actual, path)
		if err != nil {
			return r.fail(i, "save %s: %v in %s", name, err, render(actual))
		}
		switch x := v.(type) {
		case string:
			r.vars[name] = x
		case json.Number:
			r.vars[name] = x.String()
		default:
			return r.fail(i, "save %s: %s is %s, not a string or number", name, path, render(v))
		}
	}
	return nil
}

func lookupPath(v any, path string) (any, error) {
	for _, seg := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			next, ok := x[seg]
			if !ok {
				return nil, fmt.Errorf("no %q along %s", seg, path)
			}
			v = next
		case []any:
			k, err := strconv.Atoi(seg)
			if err != nil || k < 0 || k >= len(x) {
				return nil, fmt.Errorf("no index %q along %s", seg, path)
			}
			v = x[k]
		default:
			return nil, fmt.Errorf("%q along %s is not inside an object or array", seg, path)
		}
	}
	return v, nil
}

var variable = regexp.MustCompile(`\$\{([^}]*)\}`)

// substitute replaces ${name} in every string value of v (object keys are left as they are).
func substitute(v any, vars map[string]string) (any, error) {
	switch x := v.(type) {
	case string:
		var missing []string
		out := variable.ReplaceAllStringFunc(x, func(m string) string {
			name := m[2 : len(m)-1]
			val, ok := vars[name]
			if !ok {
				missing = append(missing, name)
			}
			return val
		})
		if len(missing) > 0 {
			return nil, fmt.Errorf("unknown variable ${%s} (known: %s)", missing[0], strings.Join(sortedVarNames(vars), ", "))
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			var err error
			if out[k], err = substitute(val, vars); err != nil {
				return nil, err
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for k, val := range x {
			var err error
			if out[k], err = substitute(val, vars); err != nil {
				return nil, err
			}
		}
		return out, nil
	default:
		return v, nil
	}
}

func sortedVarNames(vars map[string]string) []string {
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func lookupMethod(full string) (protoreflect.MethodDescriptor, error) {
	service, method, ok := strings.Cut(full, "/")
	if !ok {
		return nil, fmt.Errorf("rpc %q is not package.Service/Method", full)
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return nil, fmt.Errorf("unknown service %q", service)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%q is not a service", service)
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %q", service, method)
	}
	return md, nil
}

// newMessage makes a message of type desc, filled from its proto3 JSON when body is not nil.
func newMessage(desc protoreflect.MessageDescriptor, body any) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(desc.FullName())
	if err != nil {
		return nil, err
	}
	msg := mt.New().Interface()
	if body == nil {
		return msg, nil
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if err := protojson.Unmarshal(raw, msg); err != nil {
		return nil, fmt.Errorf("%s is not a valid %s: %v", raw, desc.FullName(), err)
	}
	return msg, nil
}

// toJSON renders a message as the format's canonical JSON: lowerCamelCase names, default
// values emitted (but no null for unset messages), decoded with numbers kept exact.
func toJSON(msg proto.Message) any {
	raw, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(msg)
	if err != nil {
		return map[string]any{"$unrenderable": err.Error()}
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return map[string]any{"$unrenderable": err.Error()}
	}
	return v
}

// eventName is the oneof field set in a rendered stream message (its one key besides
// turnId), in snake_case.
func eventName(msg any) string {
	for k := range object(msg) {
		if k != "turnId" {
			return normalizeEvent(k)
		}
	}
	return ""
}

// eventNames lists the events' names with runs of consecutive deltas collapsed into one.
func eventNames(events []any) []any {
	names := []any{}
	for _, e := range events {
		n := eventName(e)
		if n == "delta" && len(names) > 0 && names[len(names)-1] == "delta" {
			continue
		}
		names = append(names, n)
	}
	return names
}

// normalizeEvent accepts an event name as the proto field name (tool_call) or its JSON name
// (toolCall).
func normalizeEvent(name string) string {
	var b strings.Builder
	for _, c := range name {
		if c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}

func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "CODE_" + strconv.Itoa(int(c))
}

func describeStatus(err error) string {
	if errors.Is(err, io.EOF) {
		return "OK"
	}
	st := status.Convert(err)
	return fmt.Sprintf("%s %q", codeName(st.Code()), st.Message())
}
