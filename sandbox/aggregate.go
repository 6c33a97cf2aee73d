package sandbox

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hospital/gateway/policy"
)

var aggregateNames = map[string]AggKind{
	"count_star": Count, "count": Count,
	"sum": Sum, "avg": Avg, "mean": Avg,
	"var_samp": VarSamp, "variance": VarSamp, "var_pop": VarPop,
	"stddev": StddevSamp, "stddev_samp": StddevSamp, "stddev_pop": StddevPop,
	"median": Quantile, "quantile_cont": Quantile, "quantile_disc": Quantile, "quantile": Quantile,
}

// rowRevealing are aggregates that return raw values or rows; they get a
// message of their own because researchers reach for them often.
var rowRevealing = []string{
	"list", "array_agg", "string_agg", "group_concat", "listagg", "first", "last",
	"any_value", "arbitrary", "arg_max", "arg_min", "argmax", "argmin", "max_by", "min_by",
	"histogram", "mode", "min", "max", "bitstring_agg", "bit_and", "bit_or", "bit_xor",
	"approx_top_k", "reservoir_quantile", "approx_quantile", "json_group_array", "json_group_object",
	"unnest", "range", "generate_series",
}

func isAggregateCall(n node) bool {
	if str(n, "class") != "FUNCTION" {
		return false
	}
	name := strings.ToLower(str(n, "function_name"))
	_, ok := aggregateNames[name]
	return ok || slices.Contains(rowRevealing, name)
}

// aggregate checks one aggregate output column and returns its argument.
func (a *analyzer) aggregate(item node) (Agg, node, error) {
	if str(item, "class") == "WINDOW" {
		return Agg{}, nil, reject("window functions (%s OVER ...) are not allowed", strings.ToLower(str(item, "function_name")))
	}
	if str(item, "class") != "FUNCTION" {
		if err := a.expr(item, "the select list"); err != nil {
			return Agg{}, nil, err
		}
		return Agg{}, nil, reject("output column %s is neither an aggregate nor a GROUP BY key; add it to GROUP BY or aggregate it", outputName(item, 0))
	}
	name := strings.ToLower(str(item, "function_name"))
	if slices.Contains(rowRevealing, name) {
		return Agg{}, nil, reject("aggregate %s returns raw values or rows and is not allowed; use COUNT, SUM, AVG, VAR, STDDEV, MEDIAN or QUANTILE_CONT", name)
	}
	kind, ok := aggregateNames[name]
	if !ok {
		if scalarFunctions[name] {
			return Agg{}, nil, reject("output expression %s(...) is not a GROUP BY key; wrap only single aggregates in the select list and compute with their answers yourself", name)
		}
		return Agg{}, nil, reject("function %s is not allowed; use COUNT, SUM, AVG, VAR, STDDEV, MEDIAN or QUANTILE_CONT", name)
	}
	if f, ok := isExpr(item["filter"]); ok && f != nil {
		return Agg{}, nil, reject("FILTER on %s is not supported; put the condition in WHERE", name)
	}
	if orders := nodes(obj(item, "order_bys"), "orders"); len(orders) > 0 {
		return Agg{}, nil, reject("ORDER BY inside %s is not allowed", name)
	}
	args := nodes(item, "children")
	agg := Agg{Kind: kind}
	if name == "count_star" {
		agg.Star = true
		return agg, nil, nil
	}
	if len(args) == 0 {
		return Agg{}, nil, reject("%s needs a column", name)
	}
	arg := args[0]
	if kind == Count && item["distinct"] == true {
		if str(arg, "class") == "COLUMN_REF" {
			col, _, err := a.resolve(strs(arg, "column_names"), name)
			if err != nil {
				return Agg{}, nil, err
			}
			if col.Role == policy.Unit {
				agg.Kind = CountUnits
				agg.Column = col.Name
				return agg, nil, nil
			}
		}
		return Agg{}, nil, reject("COUNT(DISTINCT ...) is only allowed on the privacy unit; distinct values of other columns can single out people")
	}
	if item["distinct"] == true {
		return Agg{}, nil, reject("DISTINCT inside %s is not allowed", name)
	}
	if kind == Count {
		if err := a.expr(arg, name); err != nil {
			return Agg{}, nil, err
		}
		return agg, arg, nil
	}
	if str(arg, "class") != "COLUMN_REF" {
		return Agg{}, nil, reject("%s takes a bare numeric column with declared bounds, not an expression", name)
	}
	col, ref, err := a.resolve(strs(arg, "column_names"), name)
	if err != nil {
		return Agg{}, nil, err
	}
	if err := a.expr(arg, name); err != nil {
		return Agg{}, nil, err
	}
	if ref >= 0 {
		if t := strings.ToUpper(a.refs[ref].src.Types[strings.ToLower(col.Name)]); t == "INTEGER" || t == "BIGINT" {
			agg.IntType = t
		}
	}
	if !col.Bounded() {
		return Agg{}, nil, reject("column %s has no declared bounds, so %s cannot be protected; ask the data steward to declare min and max", col.Name, name)
	}
	agg.Column, agg.Min, agg.Max = col.Name, *col.Min, *col.Max
	agg.DomainMin, agg.DomainMax, _ = col.Domain()
	switch name {
	case "median":
		agg.Q = 0.5
	case "quantile_cont", "quantile_disc", "quantile":
		agg.Disc = name != "quantile_cont"
		if len(args) != 2 {
			return Agg{}, nil, reject("%s takes a column and one quantile, as in %s(age, 0.9)", name, name)
		}
		qv, ok := constant(args[1])
		if !ok || qv < 0 || qv > 1 {
			return Agg{}, nil, reject("the quantile of %s must be a number between 0 and 1", name)
		}
		agg.Q = qv
	default:
		if len(args) != 1 {
			return Agg{}, nil, reject("%s takes one column", name)
		}
	}
	return agg, arg, nil
}

// outputName is the column's alias, or a readable name of the expression.
func outputName(item node, i int) string {
	if al := str(item, "alias"); al != "" {
		return al
	}
	switch str(item, "class") {
	case "COLUMN_REF":
		names := strs(item, "column_names")
		return names[len(names)-1]
	case "FUNCTION":
		name := strings.ToLower(str(item, "function_name"))
		if name == "count_star" {
			return "count_star()"
		}
		var args []string
		for _, c := range nodes(item, "children") {
			if names := strs(c, "column_names"); len(names) > 0 {
				args = append(args, names[len(names)-1])
			} else if v, ok := constant(c); ok {
				args = append(args, fmt.Sprint(v))
			}
		}
		prefix := ""
		if item["distinct"] == true {
			prefix = "DISTINCT "
		}
		return name + "(" + prefix + strings.Join(args, ", ") + ")"
	}
	return fmt.Sprintf("col%d", i+1)
}
