package scenario

import (
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
)

// match checks expected ⊆ actual as the scenario format defines it and returns a description
// of the first difference, or "" when they match. Both sides are JSON values decoded with
// json.Decoder.UseNumber.
func match(expected, actual any, path string) string {
	switch exp := expected.(type) {
	case map[string]any:
		if x, ok := exp["$exact"]; ok && len(exp) == 1 {
			if !deepEqual(x, actual) {
				return fmt.Sprintf("%s: expected exactly %s, got %s", where(path), render(x), render(actual))
			}
			return ""
		}
		act, ok := actual.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: expected an object, got %s", where(path), render(actual))
		}
		for _, key := range sortedKeys(exp) {
			val, present := act[key]
			if !present {
				return fmt.Sprintf("%s: missing key %q", where(path), key)
			}
			if diff := match(exp[key], val, path+"."+key); diff != "" {
				return diff
			}
		}
		return ""
	case []any:
		act, ok := actual.([]any)
		if !ok || len(act) != len(exp) {
			return fmt.Sprintf("%s: expected an array of %d, got %s", where(path), len(exp), render(actual))
		}
		for i := range exp {
			if diff := match(exp[i], act[i], path+"."+strconv.Itoa(i)); diff != "" {
				return diff
			}
		}
		return ""
	case json.Number:
		if !numbersEqual(exp, actual) {
			return fmt.Sprintf("%s: expected %s, got %s", where(path), exp, render(actual))
		}
		return ""
	case string:
		if exp == "$nonempty" {
			if isEmpty(actual) {
				return fmt.Sprintf("%s: expected a non-empty value, got %s", where(path), render(actual))
			}
			return ""
		}
		if act, ok := actual.(string); !ok || act != exp {
			return fmt.Sprintf("%s: expected %q, got %s", where(path), exp, render(actual))
		}
		return ""
	default: // bool, nil
		if expected != actual {
			return fmt.Sprintf("%s: expected %s, got %s", where(path), render(expected), render(actual))
		}
		return ""
	}
}

func where(path string) string {
	if path == "" {
		return "at the top"
	}
	return "at " + strings.TrimPrefix(path, ".")
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// numbersEqual compares an expected number with an actual number or numeric string (int64
// values are strings in proto3 JSON), exactly.
func numbersEqual(exp json.Number, actual any) bool {
	var text string
	switch act := actual.(type) {
	case json.Number:
		text = act.String()
	case string:
		text = act
	default:
		return false
	}
	a, ok1 := new(big.Rat).SetString(exp.String())
	b, ok2 := new(big.Rat).SetString(text)
	return ok1 && ok2 && a.Cmp(b) == 0
}

// deepEqual is JSON equality; numbers compare by value, so 1 equals 1.0.
func deepEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !deepEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !deepEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case json.Number:
		y, ok := b.(json.Number)
		return ok && numbersEqual(x, y)
	default:
		return a == b
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func render(v any) string {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(raw)
}
