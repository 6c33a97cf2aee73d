package sandbox

import (
	"strings"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// rankable returns the query's only table with several rows per patient
// when every join is inner, so that each row of it reaches the base query
// at most once and a patient's rows that do are a subset of their rows
// decided row by row (all or none of them, when no filter reads the table:
// see filtered). The other tables have one row per patient.
func (a *analyzer) rankable() (int, bool) {
	if a.outer {
		return -1, false
	}
	multi := -1
	for i, r := range a.refs {
		if r.src.Table.OneRowPerUnit {
			continue
		}
		if multi >= 0 {
			return -1, false
		}
		multi = i
	}
	if multi < 0 {
		return -1, false
	}
	return multi, true
}

// balanceEstimates adds to where, the WHERE clause of a base bounded by
// the rank of refs[r], "unit IS NOT NULL" for every other table. Those
// tables have one row per patient and are inner-joined on their unit, so
// the conjuncts drop nothing; but the privacy plan's rank bound is a filter
// on refs[r], which DuckDB estimates at a fixed share of the rows, and
// without a matching filter on the other side it would think the ranked
// table the smaller one and build its hash join on it (at 10M encounters
// joined to 2.5M patients, 730 ms instead of 555). With one, the estimated
// sizes keep the proportion they have in the researcher's own SQL.
func (a *analyzer) balanceEstimates(r int, where any) any {
	var parts []any
	if w, ok := isExpr(where); ok && w != nil {
		parts = append(parts, w)
	}
	for i, ref := range a.refs {
		u, ok := ref.src.Table.UnitColumn()
		if i == r || !ok {
			continue
		}
		parts = append(parts, node{"class": "OPERATOR", "type": "OPERATOR_IS_NOT_NULL", "alias": "", "children": []any{columnRef(ref.alias, u.Name)}})
	}
	switch len(parts) {
	case 0:
		return where
	case 1:
		return parts[0]
	}
	return node{"class": "CONJUNCTION", "type": "CONJUNCTION_AND", "alias": "", "children": parts}
}

// filtered reports whether a filter (WHERE or a join condition) reads the
// table refs[i], so that its rows reach the base query one by one rather
// than all or none per patient.
func (a *analyzer) filtered(i int) bool {
	for _, f := range a.filters {
		if a.reads(f, i) {
			return true
		}
	}
	return false
}

// multiRow is the index of the only table with several rows per patient,
// or -1 when there is none (the analyser refuses joins of two).
func (a *analyzer) multiRow() int {
	for i, r := range a.refs {
		if !r.src.Table.OneRowPerUnit {
			return i
		}
	}
	return -1
}

// reads reports whether expression n reads a column of table refs[i].
func (a *analyzer) reads(n node, i int) bool {
	if str(n, "class") == "COLUMN_REF" {
		_, r, err := a.resolve(strs(n, "column_names"), "a filter")
		return err != nil || r == i
	}
	for _, c := range children(n) {
		if a.reads(c, i) {
			return true
		}
	}
	return false
}

// from checks the FROM clause and qualifies every table with its dataset.
func (a *analyzer) from(t node) error {
	switch typ := str(t, "type"); typ {
	case "BASE_TABLE":
		return a.table(t)
	case "JOIN":
		switch rt := str(t, "ref_type"); rt {
		case "REGULAR":
		case "CROSS":
			return reject("cross joins (and comma-separated tables) are not allowed; join tables ON their privacy unit")
		default:
			return reject("%s joins are not allowed; join tables ON their privacy unit", rt)
		}
		if jt := str(t, "join_type"); jt != "INNER" && jt != "LEFT" && jt != "RIGHT" {
			return reject("%s joins are not allowed; use an inner or outer join on the privacy unit", jt)
		} else if jt != "INNER" {
			a.outer = true
		}
		first := len(a.refs)
		if err := a.from(obj(t, "left")); err != nil {
			return err
		}
		mid := len(a.refs)
		if err := a.from(obj(t, "right")); err != nil {
			return err
		}
		return a.joinCondition(t, first, mid)
	case "TABLE_FUNCTION":
		return reject("table functions (read_csv, read_parquet, duckdb_tables, ...) are not allowed; read the tables of your grant")
	case "SUBQUERY":
		return reject("subqueries in FROM are not allowed; write the query as one SELECT with joins")
	case "EMPTY":
		return reject("the query reads no table; name a table of your grant in FROM")
	default:
		return reject("FROM item of type %s is not allowed", typ)
	}
}

func (a *analyzer) table(t node) error {
	if t["sample"] != nil {
		return reject("TABLESAMPLE is not allowed: which rows a sample keeps depends on their position, which the privacy argument does not cover")
	}
	if t["at_clause"] != nil {
		return reject("AT (time travel) is not allowed")
	}
	name := str(t, "table_name")
	schema := str(t, "schema_name")
	if c := str(t, "catalog_name"); c != "" {
		schema = c + "." + schema
		if str(t, "schema_name") == "" {
			schema = c
		}
	}
	var found []Source
	for _, s := range a.scope.Sources {
		if !strings.EqualFold(s.Table.Name, name) {
			continue
		}
		if schema != "" && !strings.EqualFold(schema, s.Dataset) && !strings.EqualFold(schema, s.Dataset+".main") {
			continue
		}
		found = append(found, s)
	}
	qualified := name
	if schema != "" {
		qualified = schema + "." + name
	}
	switch len(found) {
	case 0:
		return fault.E(fault.QueryRejected, "table %s is not in the scope of your grant; GET /v1/datasets lists the tables you may query", qualified)
	case 1:
	default:
		return reject("table %s exists in several of your datasets; qualify it as DATASET.%s", name, name)
	}
	alias := str(t, "alias")
	if alias == "" {
		alias = found[0].Table.Name
	}
	for _, r := range a.refs {
		if strings.EqualFold(r.alias, alias) {
			return reject("table alias %s is used twice; give each table its own alias", alias)
		}
	}
	a.refs = append(a.refs, ref{alias: alias, src: found[0]})
	t["catalog_name"] = ""
	t["schema_name"] = found[0].Dataset
	t["table_name"] = found[0].Table.Name
	t["alias"] = alias
	return nil
}

// joinCondition requires that a join equate the privacy unit of a table on
// its left (refs[first:mid]) with the privacy unit of a table on its right
// (refs[mid:]). Every table therefore joins on the patient to one already
// joined, whatever the shape of the join tree, and every row of the result
// belongs to one patient (the left side's and the right side's, for inner
// and outer joins alike). An equality of two units on the same side joins
// nothing and does not count. The other conditions of the join are filters;
// they are made total (see try).
func (a *analyzer) joinCondition(t node, first, mid int) error {
	if using := strs(t, "using_columns"); len(using) > 0 {
		hasUnit := false
		for _, c := range using {
			var left, right bool
			for i, r := range a.refs[first:] {
				col, ok := r.src.Table.Column(c)
				if !ok {
					continue
				}
				if col.Role == policy.Identifier {
					return reject("column %s is an identifier; join on the privacy unit instead", c)
				}
				if col.Role != policy.Unit {
					return reject("USING (%s) joins on a column that is not the privacy unit; join USING (the unit) and put other conditions in WHERE", c)
				}
				if first+i < mid {
					left = true
				} else {
					right = true
				}
			}
			if !left || !right {
				return reject("column %s in USING is not the privacy unit of a table on each side of the join", c)
			}
			hasUnit = true
		}
		if !hasUnit {
			return reject("joins must match the privacy unit (for example USING (patient_id))")
		}
		return nil
	}
	cond, ok := isExpr(t["condition"])
	if !ok {
		return reject("joins need an ON condition on the privacy unit")
	}
	var conjuncts []node
	if str(cond, "type") == "CONJUNCTION_AND" {
		conjuncts = nodes(cond, "children")
	} else {
		conjuncts = []node{cond}
	}
	hasUnit := false
	var rewritten []any
	for _, c := range conjuncts {
		if l, r, ok := a.unitEquality(c, first, mid); ok {
			if err := sameUnitType(l, r); err != nil {
				return err
			}
			hasUnit = true
			rewritten = append(rewritten, c)
			continue
		}
		if a.unitsEqual(c) {
			return reject("this join's condition equates the privacy units of tables that are already joined; join the new table on its own unit, as in ON a.patient_id = b.patient_id")
		}
		if err := a.expr(c, "JOIN condition"); err != nil {
			return err
		}
		a.filters = append(a.filters, c)
		rewritten = append(rewritten, try(c))
	}
	if !hasUnit {
		return reject("each joined table must be joined on its privacy unit to a table already in the query, as in ON a.patient_id = b.patient_id")
	}
	if len(rewritten) == 1 {
		t["condition"] = rewritten[0]
	} else {
		t["condition"] = node{"class": "CONJUNCTION", "type": "CONJUNCTION_AND", "alias": "", "children": rewritten}
	}
	return nil
}

// unitEquality reports whether c equates the privacy unit of a table in
// refs[first:mid] with that of a table in refs[mid:], and if so the two
// unit columns.
func (a *analyzer) unitEquality(c node, first, mid int) (l, r policy.Column, ok bool) {
	if str(c, "type") != "COMPARE_EQUAL" {
		return l, r, false
	}
	ln, rn := obj(c, "left"), obj(c, "right")
	if str(ln, "class") != "COLUMN_REF" || str(rn, "class") != "COLUMN_REF" {
		return l, r, false
	}
	lc, lr, err1 := a.resolveStrict(strs(ln, "column_names"))
	rc, rr, err2 := a.resolveStrict(strs(rn, "column_names"))
	if err1 != nil || err2 != nil || lc.Role != policy.Unit || rc.Role != policy.Unit {
		return l, r, false
	}
	left := func(i int) bool { return i >= first && i < mid }
	right := func(i int) bool { return i >= mid }
	lc.Type, rc.Type = a.typeOf(lr, lc), a.typeOf(rr, rc)
	return lc, rc, (left(lr) && right(rr)) || (right(lr) && left(rr))
}

// typeOf is column c's type in the table of refs[i]: the engine's as
// loaded when the scope has it, else what the policy records.
func (a *analyzer) typeOf(i int, c policy.Column) string {
	if t := a.refs[i].src.Types[strings.ToLower(c.Name)]; t != "" {
		return t
	}
	return c.Type
}

// sameUnitType refuses a unit equality between columns of different kinds
// of type (a string and a number): DuckDB would cast one side, and several
// strings ('7', '07', ' 7') would then join one patient's number, so that
// one patient's rows could reach the aggregation more than once.
func sameUnitType(lc, rc policy.Column) error {
	if lk, rk := typeKind(lc.Type), typeKind(rc.Type); lk != "" && rk != "" && lk != rk {
		return reject("the privacy units %s (%s) and %s (%s) have different types; ask the data steward to register them with the same type", lc.Name, lc.Type, rc.Name, rc.Type)
	}
	return nil
}

// typeKind is the kind of a declared column type for comparing units:
// "integer", "string", another type's own name, or "" when undeclared.
func typeKind(t string) string {
	t = strings.ToUpper(strings.TrimSpace(t))
	switch t {
	case "":
		return ""
	case "TINYINT", "SMALLINT", "INTEGER", "INT", "INT2", "INT4", "INT8", "BIGINT", "HUGEINT",
		"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT":
		return "integer"
	case "VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR":
		return "string"
	}
	return t
}

// unitsEqual reports whether c equates two privacy-unit columns, whichever
// tables they are of.
func (a *analyzer) unitsEqual(c node) bool {
	if str(c, "type") != "COMPARE_EQUAL" {
		return false
	}
	l, r := obj(c, "left"), obj(c, "right")
	if str(l, "class") != "COLUMN_REF" || str(r, "class") != "COLUMN_REF" {
		return false
	}
	lc, _, err1 := a.resolve(strs(l, "column_names"), "JOIN condition")
	rc, _, err2 := a.resolve(strs(r, "column_names"), "JOIN condition")
	return err1 == nil && err2 == nil && lc.Role == policy.Unit && rc.Role == policy.Unit
}

// resolveStrict resolves a column reference of a join condition to exactly
// one table: a unit named without its table could be any joined table's.
func (a *analyzer) resolveStrict(names []string) (policy.Column, int, error) {
	if len(names) < 2 {
		n := 0
		for _, r := range a.refs {
			if _, ok := r.src.Table.Column(names[len(names)-1]); ok {
				n++
			}
		}
		if n != 1 {
			return policy.Column{}, -1, reject("qualify the privacy unit with its table in join conditions")
		}
	}
	return a.resolve(names, "JOIN condition")
}

// unitRef is the patient of a row of the joined tables. With inner joins
// every table's unit is the same; with outer joins some are NULL, so the
// first that is not.
func (a *analyzer) unitRef() node {
	var units []any
	for _, r := range a.refs {
		u, _ := r.src.Table.UnitColumn()
		units = append(units, columnRef(r.alias, u.Name))
		if !a.outer {
			break
		}
	}
	if len(units) == 1 {
		return units[0].(node)
	}
	return node{"class": "OPERATOR", "type": "OPERATOR_COALESCE", "alias": "", "children": units}
}
