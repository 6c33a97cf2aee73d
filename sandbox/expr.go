package sandbox

import (
	"slices"
	"strings"

	"github.com/hospital/gateway/policy"
)

// scalarFunctions are the functions allowed inside expressions: arithmetic,
// comparison helpers, strings and dates. Anything else (random, settings,
// file and catalog functions) is refused.
var scalarFunctions = map[string]bool{
	"+": true, "-": true, "*": true, "/": true, "//": true, "%": true, "^": true, "**": true,
	"~~": true, "!~~": true, "~~*": true, "!~~*": true, "||": true,
	"abs": true, "round": true, "floor": true, "ceil": true, "ceiling": true, "sqrt": true,
	"ln": true, "log": true, "log10": true, "log2": true, "exp": true, "pow": true, "power": true,
	"sign": true, "greatest": true, "least": true, "coalesce": true, "ifnull": true, "nullif": true,
	"lower": true, "upper": true, "lcase": true, "ucase": true, "substr": true, "substring": true,
	"left": true, "right": true, "length": true, "trim": true, "ltrim": true, "rtrim": true,
	"prefix": true, "suffix": true, "starts_with": true, "ends_with": true, "contains": true,
	"replace": true, "concat": true, "year": true, "month": true, "day": true, "quarter": true,
	"week": true, "weekday": true, "dayofweek": true, "dayofmonth": true, "dayofyear": true,
	"isodow": true, "date_part": true, "datepart": true, "date_trunc": true, "datetrunc": true,
	"extract": true, "date_diff": true, "datediff": true, "date_sub": true, "datesub": true,
	"make_date": true, "strftime": true, "epoch": true,
}

// Limits on what one row may cost, so that no patient's row can make a
// query measurably slower than another's (see the privacy package doc).
const (
	maxExprNodes      = 1000
	maxStringConstant = 256
)

// growing are the functions whose result can be longer than their
// arguments together; none may take another one's result, so no expression
// grows a string more than once.
var growing = map[string]bool{"replace": true, "concat": true, "||": true, "strftime": true}

// resolve finds the table and policy of a column reference.
func (a *analyzer) resolve(names []string, where string) (policy.Column, int, error) {
	var col string
	var qual []string
	switch len(names) {
	case 1:
		col = names[0]
	case 2, 3, 4:
		col = names[len(names)-1]
		qual = names[:len(names)-1]
	default:
		return policy.Column{}, -1, reject("column reference %s is not understood", strings.Join(names, "."))
	}
	match := -1
	var found policy.Column
	for i, r := range a.refs {
		if len(qual) > 0 {
			last := qual[len(qual)-1]
			if !strings.EqualFold(last, r.alias) && !strings.EqualFold(last, r.src.Table.Name) {
				continue
			}
		}
		c, ok := r.src.Table.Column(col)
		if !ok {
			continue
		}
		if match >= 0 && c.Role == policy.Unit && found.Role == policy.Unit {
			continue // joined on the unit, the units are the same column
		}
		if match >= 0 {
			return policy.Column{}, -1, reject("column %s in %s is ambiguous; qualify it with its table alias", col, where)
		}
		match, found = i, c
	}
	if match < 0 {
		return policy.Column{}, -1, reject("column %s in %s does not exist in the tables of this query", strings.Join(names, "."), where)
	}
	if cols := a.refs[match].src.Columns; cols != nil && !cols[strings.ToLower(found.Name)] && found.Role != policy.Unit {
		return policy.Column{}, -1, reject("column %s is outside the columns of your grant; request access to it", found.Name)
	}
	key := a.refs[match].src.Dataset + "." + a.refs[match].src.Table.Name + "." + strings.ToLower(found.Name)
	if !a.seen[key] {
		if a.seen == nil {
			a.seen = map[string]bool{}
		}
		a.seen[key] = true
		a.columns = append(a.columns, found)
	}
	return found, match, nil
}

// expr checks an expression used outside aggregates. Besides the roles of
// the columns and the allowed functions, it bounds what the expression can
// cost on one row: at most maxExprNodes nodes in the whole query, string
// constants of at most maxStringConstant characters, and no string-growing
// function over another one's result (a nested replace grows a string
// exponentially, so that one patient's row could take seconds).
func (a *analyzer) expr(n node, where string) error {
	if a.exprNodes++; a.exprNodes > maxExprNodes {
		return reject("the query has more than %d expression nodes; simplify it", maxExprNodes)
	}
	switch cls := str(n, "class"); cls {
	case "COLUMN_REF":
		col, _, err := a.resolve(strs(n, "column_names"), where)
		if err != nil {
			return err
		}
		switch col.Role {
		case policy.Identifier:
			return reject("column %s is an identifier and may not appear in %s; remove it", col.Name, where)
		case policy.Unit:
			return reject("column %s is the privacy unit; it may only join tables or be counted with COUNT(DISTINCT %s), remove it from %s", col.Name, col.Name, where)
		case policy.SpecialGroup:
			a.special = true
		}
		return nil
	case "CONSTANT":
		if v, ok := obj(n, "value")["value"].(string); ok && len(v) > maxStringConstant {
			return reject("a string constant in %s is %d characters; the limit is %d", where, len(v), maxStringConstant)
		}
		return nil
	case "FUNCTION":
		name := strings.ToLower(str(n, "function_name"))
		if growing[name] {
			if a.growth > 0 {
				return reject("%s over the result of another string-growing function (replace, concat, ||, strftime) is not allowed in %s", name, where)
			}
			a.growth++
			defer func() { a.growth-- }()
		}
		if _, isAgg := aggregateNames[name]; isAgg || slices.Contains(rowRevealing, name) {
			return reject("aggregate %s may only stand alone as an output column, not inside %s", name, where)
		}
		if !scalarFunctions[name] {
			return reject("function %s is not allowed in %s; allowed are arithmetic, string and date functions", name, where)
		}
		if f, ok := isExpr(n["filter"]); ok && f != nil {
			return reject("FILTER is only meaningful on aggregates")
		}
	case "COMPARISON", "CONJUNCTION", "BETWEEN", "CAST", "CASE", "OPERATOR":
		if t := str(n, "type"); strings.HasPrefix(t, "OPERATOR_TRY") || t == "ARRAY_EXTRACT" {
			return reject("operator %s is not allowed in %s", t, where)
		}
	case "SUBQUERY":
		return reject("subqueries are not allowed (found in %s); write the query as one SELECT with joins", where)
	case "WINDOW":
		return reject("window functions (%s OVER ...) are not allowed", strings.ToLower(str(n, "function_name")))
	case "STAR":
		return reject("* is not allowed in %s; name the columns (or use COUNT(*))", where)
	case "PARAMETER":
		return reject("query parameters are not supported; write the values into the query")
	default:
		return reject("%s expressions are not allowed in %s", strings.ToLower(cls), where)
	}
	for _, c := range children(n) {
		if err := a.expr(c, where); err != nil {
			return err
		}
	}
	return nil
}
