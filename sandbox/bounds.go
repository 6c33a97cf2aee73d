package sandbox

import (
	"math"
	"strings"
)

// try wraps an expression in DuckDB's TRY: a row on which it fails (a
// logarithm of zero, a cast of a bad string, an overflow) gets NULL
// instead of failing the query. Every expression a researcher writes
// outside the aggregates' bare columns is wrapped, so that no error can
// depend on the values of the rows: an error would tell whether some row
// matches, which is a membership oracle.
func try(n node) node {
	if c := str(n, "class"); c == "COLUMN_REF" || c == "CONSTANT" {
		return n // cannot fail
	}
	return node{"class": "OPERATOR", "type": "OPERATOR_TRY", "alias": "", "children": []any{n}}
}

// mulBound multiplies two group bounds, 0 meaning unknown, saturating
// far above any limit.
func mulBound(a, b int64) int64 {
	if a == 0 || b == 0 {
		return 0
	}
	if float64(a)*float64(b) > math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return a * b
}

// partCaps bound the date parts that take few values whatever the date.
var partCaps = map[string]int64{
	"month": 12, "quarter": 4, "day": 31, "dayofmonth": 31, "dayofweek": 7, "weekday": 7, "isodow": 7,
	"dow": 7, "dayofyear": 366, "doy": 366, "week": 53, "weekofyear": 53,
}

// bound is how many distinct values a group key can take, NULL included,
// from the policy and the SQL alone, or 0 when nothing bounds it. A key is
// a deterministic function of the columns it reads, so it takes at most
// the product of their bounds (policy.Column.Distinct, plus NULL); some
// shapes have a smaller bound of their own: a date part (12 months), a CASE
// whose results are all constants.
func (a *analyzer) bound(g node) int64 {
	cols := int64(1)
	var visit func(n node)
	visit = func(n node) {
		if str(n, "class") == "COLUMN_REF" {
			c, _, err := a.resolve(strs(n, "column_names"), "GROUP BY")
			d := c.Distinct()
			if err != nil || d == 0 {
				cols = 0
				return
			}
			cols = mulBound(cols, d+1)
			return
		}
		for _, ch := range children(n) {
			visit(ch)
		}
	}
	visit(g)
	own := ownBound(g)
	switch {
	case own == 0:
		return cols
	case cols == 0:
		return own
	}
	return min(own, cols)
}

// ownBound is the bound of the key's shape alone (NULL included), or 0.
func ownBound(g node) int64 {
	switch str(g, "class") {
	case "FUNCTION":
		name := strings.ToLower(str(g, "function_name"))
		args := nodes(g, "children")
		if c, ok := partCaps[name]; ok && c > 0 {
			return c + 1
		}
		if (name == "date_part" || name == "datepart") && len(args) == 2 {
			if part, ok := obj(args[0], "value")["value"].(string); ok {
				if c := partCaps[strings.ToLower(part)]; c > 0 {
					return c + 1
				}
			}
		}
	case "CASE":
		n := int64(1) // the ELSE, or NULL without one
		for _, c := range nodes(g, "case_checks") {
			if str(obj(c, "then_expr"), "class") != "CONSTANT" {
				return 0
			}
			n++
		}
		if e, ok := isExpr(g["else_expr"]); ok && e != nil && str(e, "class") != "CONSTANT" {
			return 0
		}
		return n + 1 // a failed WHEN under TRY is NULL too
	}
	return 0
}
