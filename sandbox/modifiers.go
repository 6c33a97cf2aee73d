package sandbox

import (
	"slices"
	"strings"

	"github.com/hospital/gateway/policy"
)

// groupKeys returns the GROUP BY expressions, resolving positions and aliases.
func (a *analyzer) groupKeys(sel node, selectList []node) ([]node, error) {
	if sets := list(sel, "group_sets"); len(sets) > 1 {
		return nil, reject("GROUPING SETS, ROLLUP and CUBE are not allowed; send one query per grouping")
	}
	if str(sel, "aggregate_handling") == "FORCE_AGGREGATES" { // GROUP BY ALL
		var keys []node
		for _, item := range selectList {
			if !isAggregateCall(item) {
				keys = append(keys, item)
			}
		}
		return keys, nil
	}
	var keys []node
	for _, g := range nodes(sel, "group_expressions") {
		if pos, ok := constant(g); ok {
			i := int(pos)
			if float64(i) != pos || i < 1 || i > len(selectList) {
				return nil, reject("GROUP BY %v does not name an output column", pos)
			}
			keys = append(keys, selectList[i-1])
			continue
		}
		if names := strs(g, "column_names"); str(g, "class") == "COLUMN_REF" && len(names) == 1 {
			if item := byAlias(selectList, names[0]); item != nil && !isAggregateCall(item) {
				keys = append(keys, item)
				continue
			}
		}
		keys = append(keys, g)
	}
	return keys, nil
}

func byAlias(selectList []node, name string) node {
	for _, item := range selectList {
		if strings.EqualFold(str(item, "alias"), name) {
			return item
		}
	}
	return nil
}

func (a *analyzer) describeGroup(g node) Group {
	var out Group
	out.PerUnit = true
	var visit func(n node)
	visit = func(n node) {
		if str(n, "class") == "COLUMN_REF" {
			if _, i, err := a.resolve(strs(n, "column_names"), "GROUP BY"); err == nil && !a.refs[i].src.Table.OneRowPerUnit {
				out.PerUnit = false
			}
			return
		}
		for _, c := range children(n) {
			visit(c)
		}
	}
	visit(g)
	out.Bound = a.bound(g)
	if str(g, "class") == "COLUMN_REF" {
		if col, _, err := a.resolve(strs(g, "column_names"), "GROUP BY"); err == nil && len(col.Public) > 0 {
			out.Public = col.Public
			out.Bound = int64(len(col.Public)) + 1
		}
	}
	return out
}

// codeOf is the code column of group key g (a bare column with a public
// list, described as grp) when the engine built it from the list the
// policy holds now.
func (a *analyzer) codeOf(g node, grp Group) (node, bool) {
	if grp.Public == nil || str(g, "class") != "COLUMN_REF" {
		return nil, false
	}
	col, i, err := a.resolve(strs(g, "column_names"), "GROUP BY")
	if err != nil || i < 0 || !slices.Equal(a.refs[i].src.Codes[strings.ToLower(col.Name)], grp.Public) {
		return nil, false
	}
	return columnRef(a.refs[i].alias, policy.CodeColumn(col.Name, grp.Public)), true
}

// modifiers accepts ORDER BY on output columns and constant LIMIT/OFFSET,
// which the gateway applies to the protected answer.
func (a *analyzer) modifiers(sel node, selectList []node, q *Query) error {
	for _, m := range nodes(sel, "modifiers") {
		switch str(m, "type") {
		case "DISTINCT_MODIFIER":
			return reject("SELECT DISTINCT is not allowed; use GROUP BY with an aggregate")
		case "ORDER_MODIFIER":
			for _, o := range nodes(m, "orders") {
				idx, err := orderTarget(obj(o, "expression"), selectList, q)
				if err != nil {
					return err
				}
				q.Order = append(q.Order, Order{Output: idx, Desc: str(o, "type") == "DESCENDING"})
			}
		case "LIMIT_MODIFIER":
			if l, ok := isExpr(m["limit"]); ok {
				v, ok := constant(l)
				if !ok || v < 0 {
					return reject("LIMIT must be a non-negative number")
				}
				q.Limit = int(v)
			}
			if o, ok := isExpr(m["offset"]); ok {
				v, ok := constant(o)
				if !ok || v < 0 {
					return reject("OFFSET must be a non-negative number")
				}
				q.Offset = int(v)
			}
		default:
			return reject("%s is not allowed", strings.ToLower(str(m, "type")))
		}
	}
	return nil
}

func orderTarget(e node, selectList []node, q *Query) (int, error) {
	if pos, ok := constant(e); ok {
		i := int(pos)
		if float64(i) != pos || i < 1 || i > len(q.Outputs) {
			return 0, reject("ORDER BY %v does not name an output column", pos)
		}
		return i - 1, nil
	}
	if names := strs(e, "column_names"); str(e, "class") == "COLUMN_REF" && len(names) == 1 {
		for i, out := range q.Outputs {
			if strings.EqualFold(out.Name, names[0]) {
				return i, nil
			}
		}
	}
	c := canonical(e)
	for i, item := range selectList {
		if canonical(item) == c {
			return i, nil
		}
	}
	return 0, reject("ORDER BY may only name output columns (by name or position); the ordering is applied to the protected answer")
}
