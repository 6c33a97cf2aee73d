package sandbox

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// guardWhere wraps each conjunct of a WHERE clause in TRY (see try), except
// the conjuncts that cannot fail on any row (cannotFail). Wrapping the
// whole clause would hide its conjuncts from DuckDB's optimizer: it could
// neither push a conjunct on one table below a join nor use a plain
// comparison as a filter of the scan (at 10M rows, a filtered join took
// 2.3 times as long with the clause wrapped whole). A row passes the clause
// exactly when every conjunct is true without an error either way, so the
// answer is the same.
func (a *analyzer) guardWhere(w node) node {
	parts := conjuncts(w)
	out := make([]any, 0, len(parts))
	for _, c := range parts {
		if a.cannotFail(c) {
			out = append(out, c)
		} else {
			out = append(out, try(c))
		}
	}
	if len(out) == 1 {
		return out[0].(node)
	}
	return node{"class": "CONJUNCTION", "type": "CONJUNCTION_AND", "alias": "", "children": out}
}

// conjuncts splits nested ANDs into their parts.
func conjuncts(n node) []node {
	if str(n, "class") != "CONJUNCTION" || str(n, "type") != "CONJUNCTION_AND" {
		return []node{n}
	}
	var out []node
	for _, c := range children(n) {
		out = append(out, conjuncts(c)...)
	}
	return out
}

// A kind is what a value can be compared with without a cast that can
// fail: numbers with numbers, strings with strings, dates with dates,
// timestamps with timestamps (DuckDB casts a date column to a timestamp
// row by row, which fails past the timestamp's range), booleans with
// booleans. "" is unknown.
type kind string

const (
	kNumber    kind = "number"
	kString    kind = "string"
	kDate      kind = "date"
	kTimestamp kind = "timestamp"
	kBool      kind = "bool"
)

// cannotFail reports whether a predicate can fail on no row: a boolean
// column; a comparison, BETWEEN or IN list of a column with constants of
// its kind (or of two columns of one kind); IS [NOT] NULL of a column; and
// AND, OR and NOT of those. Anything else (arithmetic, functions, casts of
// columns, a string compared with a number, which DuckDB casts row by row)
// is kept under TRY. Column kinds come from the engine's types of the
// loaded table (Source.Types), never from a policy.
func (a *analyzer) cannotFail(n node) bool {
	switch str(n, "class") {
	case "COLUMN_REF":
		return a.kindOf(n) == kBool
	case "CONJUNCTION":
		for _, c := range children(n) {
			if !a.cannotFail(c) {
				return false
			}
		}
		return true
	case "OPERATOR":
		switch str(n, "type") {
		case "OPERATOR_NOT":
			cs := children(n)
			return len(cs) == 1 && a.cannotFail(cs[0])
		case "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL":
			cs := children(n)
			return len(cs) == 1 && str(cs[0], "class") == "COLUMN_REF"
		case "COMPARE_IN", "COMPARE_NOT_IN":
			return a.sameKind(children(n))
		}
		return false
	case "COMPARISON":
		switch str(n, "type") {
		case "COMPARE_EQUAL", "COMPARE_NOTEQUAL", "COMPARE_LESSTHAN", "COMPARE_GREATERTHAN",
			"COMPARE_LESSTHANOREQUALTO", "COMPARE_GREATERTHANOREQUALTO",
			"COMPARE_DISTINCT_FROM", "COMPARE_NOT_DISTINCT_FROM":
			return a.sameKind([]node{obj(n, "left"), obj(n, "right")})
		}
		return false
	case "BETWEEN":
		return a.sameKind([]node{obj(n, "input"), obj(n, "lower"), obj(n, "upper")})
	}
	return false
}

// sameKind reports whether every operand is a column or a constant, at
// least one a column, all of one known kind.
func (a *analyzer) sameKind(ops []node) bool {
	var k kind
	column := false
	for _, o := range ops {
		if o == nil {
			return false
		}
		ok := a.kindOf(o)
		if ok == "" || (k != "" && ok != k) {
			return false
		}
		k = ok
		column = column || str(o, "class") == "COLUMN_REF"
	}
	return column
}

var (
	dateText      = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	timestampText = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$`)
)

// kindOf is the kind of a column or constant operand, "" when it is
// anything else or not known.
func (a *analyzer) kindOf(n node) kind {
	switch str(n, "class") {
	case "COLUMN_REF":
		c, i, err := a.resolve(strs(n, "column_names"), "WHERE")
		if err != nil || i < 0 {
			return ""
		}
		return columnKind(a.refs[i].src.Types[strings.ToLower(c.Name)])
	case "CONSTANT":
		v := obj(n, "value")
		if v == nil || v["is_null"] == true {
			return ""
		}
		switch str(obj(v, "type"), "id") {
		case "INTEGER", "BIGINT", "HUGEINT", "DOUBLE":
			return kNumber
		case "DECIMAL":
			// Wide decimals could make DuckDB pick a common type that a
			// column's values overflow.
			if w, ok := obj(obj(v, "type"), "type_info")["width"].(json.Number); ok {
				if width, err := w.Int64(); err == nil && width > 0 && width <= 18 {
					return kNumber
				}
			}
			return ""
		case "VARCHAR":
			return kString
		case "BOOLEAN":
			return kBool
		}
	case "CAST":
		// DATE '2023-01-01' is a cast of a string constant. Only the plain
		// forms are accepted: DuckDB reads them as the same day or second
		// for certain, so the cast cannot fail on any row.
		cs := children(n)
		if tc, _ := n["try_cast"].(bool); len(cs) != 1 || str(cs[0], "class") != "CONSTANT" || tc {
			return ""
		}
		v := obj(cs[0], "value")
		text, _ := v["value"].(string)
		if str(obj(v, "type"), "id") != "VARCHAR" {
			return ""
		}
		switch str(obj(n, "cast_type"), "id") {
		case "DATE":
			if _, err := time.Parse("2006-01-02", text); err == nil && dateText.MatchString(text) {
				return kDate
			}
		case "TIMESTAMP":
			if _, err := time.Parse("2006-01-02 15:04:05", strings.Replace(text, "T", " ", 1)); err == nil && timestampText.MatchString(text) {
				return kTimestamp
			}
		}
	}
	return ""
}

// columnKind is the kind of a column of DuckDB type t. Left out: unsigned
// integers (compared with a negative constant, DuckDB may cast them to a
// signed type they overflow), HUGEINT and decimals wider than 18 digits
// (the common type with a constant's scale can be too narrow for the
// column's values, and DuckDB casts the column row by row). Every number
// kind left has at most 19 digits, and constants at most 18, so a common
// decimal type fits in DuckDB's 38.
func columnKind(t string) kind {
	t = strings.ToUpper(strings.TrimSpace(t))
	switch {
	case t == "TINYINT" || t == "SMALLINT" || t == "INTEGER" || t == "BIGINT" ||
		t == "INT" || t == "INT2" || t == "INT4" || t == "INT8" ||
		t == "FLOAT" || t == "REAL" || t == "DOUBLE":
		return kNumber
	case strings.HasPrefix(t, "DECIMAL"):
		var w, sc int
		if n, _ := fmt.Sscanf(t, "DECIMAL(%d,%d)", &w, &sc); n == 2 && w <= 18 {
			return kNumber
		}
	case t == "VARCHAR" || t == "TEXT" || t == "STRING":
		return kString
	case t == "DATE":
		return kDate
	case t == "TIMESTAMP":
		return kTimestamp
	case t == "BOOLEAN" || t == "BOOL":
		return kBool
	}
	return ""
}
