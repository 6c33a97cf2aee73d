package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// node is one object of DuckDB's JSON syntax tree (json_serialize_sql). The
// tree is kept generic so that an edited copy can be handed back to
// json_deserialize_sql without losing fields this package does not know.
type node = map[string]any

func decodeTree(b []byte) (node, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // query_location is a uint64 that float64 would corrupt
	var n node
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("decode syntax tree: %w", err)
	}
	return n, nil
}

func str(n node, key string) string {
	s, _ := n[key].(string)
	return s
}

func obj(n node, key string) node {
	o, _ := n[key].(map[string]any)
	return o
}

func list(n node, key string) []any {
	l, _ := n[key].([]any)
	return l
}

func nodes(n node, key string) []node {
	var out []node
	for _, v := range list(n, key) {
		if o, ok := v.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

func strs(n node, key string) []string {
	var out []string
	for _, v := range list(n, key) {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// isExpr reports whether v is an expression node.
func isExpr(v any) (node, bool) {
	o, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	_, has := o["class"]
	return o, has
}

// children returns every expression directly below n, in any field.
func children(n node) []node {
	var out []node
	var visit func(v any)
	visit = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if _, ok := t["class"]; ok {
				out = append(out, t)
				return
			}
			for _, c := range t {
				visit(c)
			}
		case []any:
			for _, c := range t {
				visit(c)
			}
		}
	}
	for k, v := range n {
		if k == "class" || k == "type" {
			continue
		}
		visit(v)
	}
	return out
}

// canonical renders an expression without positions and aliases, so that two
// spellings of the same expression compare equal.
func canonical(n node) string {
	b, _ := json.Marshal(strip(n))
	return string(b)
}

func strip(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, c := range t {
			if k == "query_location" || k == "alias" {
				continue
			}
			out[k] = strip(c)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, c := range t {
			out[i] = strip(c)
		}
		return out
	case string:
		return strings.ToLower(t)
	}
	return v
}

// deepCopy copies a decoded JSON value.
func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, c := range t {
			out[k] = deepCopy(c)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, c := range t {
			out[i] = deepCopy(c)
		}
		return out
	}
	return v
}

// constant returns a numeric constant's value.
func constant(n node) (float64, bool) {
	if str(n, "class") != "CONSTANT" {
		return 0, false
	}
	v := obj(n, "value")
	if v == nil || v["is_null"] == true {
		return 0, false
	}
	typ := obj(v, "type")
	num, ok := v["value"].(json.Number)
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(num.String(), 64)
	if err != nil {
		return 0, false
	}
	if str(typ, "id") == "DECIMAL" {
		if info := obj(typ, "type_info"); info != nil {
			if scale, ok := info["scale"].(json.Number); ok {
				s, _ := scale.Int64()
				f /= math.Pow10(int(s))
			}
		}
	}
	return f, true
}

func columnRef(parts ...string) node {
	names := make([]any, len(parts))
	for i, p := range parts {
		names[i] = p
	}
	return node{"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "", "column_names": names}
}

func withAlias(n node, alias string) node {
	c := deepCopy(n).(map[string]any)
	c["alias"] = alias
	return c
}

// cacheKey renders a statement for the answer cache. See Query.Key.
func cacheKey(sel node) string {
	b, _ := json.Marshal(fold(sel))
	return string(b)
}

func fold(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, c := range t {
			switch k {
			case "query_location":
				continue
			case "alias", "function_name", "table_name", "schema_name", "catalog_name":
				if s, ok := c.(string); ok {
					out[k] = strings.ToLower(s)
					continue
				}
			case "column_names":
				var names []any
				for _, n := range list(t, k) {
					if s, ok := n.(string); ok {
						names = append(names, strings.ToLower(s))
					}
				}
				out[k] = names
				continue
			}
			out[k] = fold(c)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, c := range t {
			out[i] = fold(c)
		}
		return out
	}
	return v
}

// shapeKey is cacheKey with every constant blanked: two queries with the same
// shape and different keys differ only in their constants.
func shapeKey(sel node) string {
	b, _ := json.Marshal(blank(fold(sel)))
	return string(b)
}

func blank(v any) any {
	switch t := v.(type) {
	case map[string]any:
		if t["class"] == "CONSTANT" {
			return "?"
		}
		for k, c := range t {
			t[k] = blank(c)
		}
	case []any:
		for i, c := range t {
			t[i] = blank(c)
		}
	}
	return v
}
