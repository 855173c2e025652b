package scenario

import (
	"bytes"
	"encoding/json"
	"testing"
)

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMatch pins the matching rules of the scenario format, both ways.
func TestMatch(t *testing.T) {
	cases := []struct {
		expected, actual string
		ok               bool
	}{
		{`{"a": 1}`, `{"a": 1, "b": 2}`, true},
		{`{"a": 1}`, `{"b": 1}`, false},
		{`{"n": 27}`, `{"n": "27"}`, true},
		{`{"n": 27}`, `{"n": "28"}`, false},
		{`{"n": 1}`, `{"n": 1.0}`, true},
		{`[1, 2]`, `[1, 2, 3]`, false},
		{`[{"a": 1}]`, `[{"a": 1, "b": 0}]`, true},
		{`{"id": "$nonempty"}`, `{"id": "t-1"}`, true},
		{`{"id": "$nonempty"}`, `{"id": ""}`, false},
		{`{"id": "$nonempty"}`, `{}`, false},
		{`{"c": {"$exact": {"a": 1}}}`, `{"c": {"a": 1}}`, true},
		{`{"c": {"$exact": {"a": 1}}}`, `{"c": {"a": 1, "b": 2}}`, false},
		{`{"s": "x"}`, `{"s": "y"}`, false},
		{`{"b": false}`, `{"b": false}`, true},
		{`{"v": null}`, `{"v": null}`, true},
		{`{"v": null}`, `{"v": 0}`, false},
	}
	for _, c := range cases {
		diff := match(decode(t, c.expected), decode(t, c.actual), "")
		if (diff == "") != c.ok {
			t.Errorf("match(%s, %s) = %q, want ok=%v", c.expected, c.actual, diff, c.ok)
		}
	}
}

// TestSubstitute checks that unknown variables are refused and known ones replaced.
func TestSubstitute(t *testing.T) {
	vars := map[string]string{"run": "abc"}
	got, err := substitute(decode(t, `{"id": "s-${run}", "list": ["${run}"]}`), vars)
	if err != nil {
		t.Fatal(err)
	}
	if render(got) != `{"id":"s-abc","list":["abc"]}` {
		t.Errorf("got %s", render(got))
	}
	got, err = substitute(decode(t, `{"${run}": "${run}"}`), vars)
	if err != nil || render(got) != `{"${run}":"abc"}` {
		t.Errorf("keys must stay as they are: got %s, %v", render(got), err)
	}
	if _, err := substitute(decode(t, `{"id": "${nope}"}`), vars); err == nil {
		t.Error("unknown variable accepted")
	}
}
