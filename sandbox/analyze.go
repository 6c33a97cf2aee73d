// Package sandbox decides whether a researcher's SQL may run, and under which
// limits. It never parses SQL itself: DuckDB's own parser turns the text into a
// syntax tree (json_serialize_sql, which refuses anything but SELECT), the
// analyser walks that tree against the column policies of the tables the
// researcher's grant covers, and a rewritten tree goes back through DuckDB
// (json_deserialize_sql) to become the base query that privacy wraps with
// contribution bounds. What is accepted is a single aggregate SELECT:
//
//	SELECT group keys..., AGG(column)... FROM tables joined on the privacy unit
//	[WHERE ...] [GROUP BY ...] [ORDER BY outputs] [LIMIT n]
//
// Everything else is refused with a query_rejected error that names the rule
// and the offending part of the query.
package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// Parser is DuckDB's parser as the engine exposes it.
type Parser interface {
	// Serialize returns json_serialize_sql(sql).
	Serialize(ctx context.Context, sql string) ([]byte, error)
	// Deserialize returns json_deserialize_sql(tree).
	Deserialize(ctx context.Context, tree []byte) (string, error)
}

// Source is one table a query may read, with where it lives and its policy.
type Source struct {
	Dataset string
	Grade   policy.Grade
	Table   policy.Table
	Policy  policy.Policy
	// Columns, when not nil, is the set of lower-case column names the
	// researcher's grant covers; other columns are out of scope.
	Columns map[string]bool
}

// Scope is what a researcher's grant lets a query see.
type Scope struct {
	Sources []Source
}

// AggKind is an aggregate the gateway knows how to protect.
type AggKind string

// The protected aggregates.
const (
	Count         AggKind = "count"          // COUNT(*) and COUNT(column)
	CountUnits    AggKind = "count_distinct" // COUNT(DISTINCT privacy unit)
	Sum           AggKind = "sum"
	Avg           AggKind = "avg"
	VarSamp       AggKind = "var_samp"
	VarPop        AggKind = "var_pop"
	StddevSamp    AggKind = "stddev_samp"
	StddevPop     AggKind = "stddev_pop"
	Quantile      AggKind = "quantile"
	maxSQLLength          = 20000
	maxOutputCols         = 64
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

// Group is one GROUP BY key.
type Group struct {
	Name string // output name; empty when the key is not selected
	// Public is the key's declared category list when the key is a bare
	// column with a public domain; nil otherwise.
	Public []string
	// PerUnit is true when every column in the key belongs to a table with at
	// most one row per patient, so that each patient falls in one group.
	PerUnit bool
	// Bound is how many distinct values the key can take, NULL included,
	// known from the policy and the SQL alone (see bound); 0 when unknown.
	Bound int64
}

// Agg is one aggregate output.
type Agg struct {
	Name   string
	Kind   AggKind
	Column string  // the aggregated column, "" for COUNT(*)
	Min    float64 // declared bounds of Column, for sums, means, variances, quantiles
	Max    float64
	Q      float64 // the quantile for Quantile
	Disc   bool    // quantile_disc: answer a value of the column's grid
	Star   bool    // COUNT(*): every row counts
}

// Output is one output column: a group key or an aggregate.
type Output struct {
	Name  string
	Group int // index into Query.Groups, or -1
	Agg   int // index into Query.Aggs, or -1
}

// Order is one ORDER BY key, on an output column.
type Order struct {
	Output int
	Desc   bool
}

// Query is an accepted query, ready for privacy to wrap.
type Query struct {
	// SQL is the query as the researcher sent it.
	SQL string
	// Key identifies the question for the answer cache: the syntax tree
	// without positions, with identifiers folded to lower case (DuckDB's
	// identifiers are case-insensitive; string constants are not folded).
	Key string
	// Shape is Key with constants blanked, to spot differencing: the same
	// question asked with a slightly different filter.
	Shape string
	// Base selects, per input row after the WHERE clause, the privacy unit as
	// __pu, each group key as __g0.., and each aggregate's argument as __a0..
	Base     string
	Groups   []Group
	Aggs     []Agg
	Outputs  []Output
	Order    []Order
	Limit    int // -1 when absent
	Offset   int
	Datasets []string
	Grade    policy.Grade
	// Special is true when a special-group column (pregnancy, HIV, ...) is
	// used anywhere in the query.
	Special bool
	// PerUnitRows is true when every table read has at most one row per
	// patient, so no row bounding is needed.
	PerUnitRows bool
	// Columns are the columns the query reads, each once.
	Columns []policy.Column
	// Rank, when set, is the query's only table with several rows per
	// patient, which no filter reads and no outer join touches: its rows
	// may be bounded by rank (see UseRank).
	Rank       *RankRef
	rankedBase string
	// RowRank is true when Base also selects __rk, the hidden rank of the
	// row among its patient's rows in the query's only table with several
	// rows per patient, and no filter (WHERE or join condition) reads that
	// table, and every join is inner. Then, for every patient, either none
	// of their rows of that table reach Base or all of them do, each once,
	// ranked 1, 2, ..., so privacy may bound each patient's rows by __rk.
	RowRank bool
	// Policy is the most protective combination of the read datasets'
	// policies (their contribution bounds and minimum group sizes).
	Policy policy.Policy
	// GroupBound is how many groups the query can form at most, known
	// before any data is read: the product of the keys' bounds, 1 without
	// GROUP BY, 0 when some key is unbounded.
	GroupBound int64
}

// ref is a table in the FROM clause.
type ref struct {
	alias string
	src   Source
}

type analyzer struct {
	scope   Scope
	refs    []ref
	special bool
	// filters are the WHERE clause and the join conditions other than
	// the equality of privacy units: what can drop some rows of a patient.
	filters []node
	outer   bool // an outer join may add a row without the other side's
	// exprNodes counts the expression nodes of the query, growth the
	// string-growing functions being checked (see expr): together they
	// bound what one row can cost.
	exprNodes int
	growth    int
	// columns are the columns resolved so far, each once (seen).
	columns []policy.Column
	seen    map[string]bool
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

func reject(format string, args ...any) error {
	return fault.E(fault.QueryRejected, format, args...)
}

// Analyze checks sql against the rules and the scope and returns the accepted
// query, or a query_rejected error naming the rule and the offending part.
func Analyze(ctx context.Context, p Parser, sql string, scope Scope) (*Query, error) {
	if strings.TrimSpace(sql) == "" {
		return nil, fault.E(fault.Invalid, "sql is empty")
	}
	if len(sql) > maxSQLLength {
		return nil, reject("query is %d characters; the limit is %d", len(sql), maxSQLLength)
	}
	raw, err := p.Serialize(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("parse query: %w", err)
	}
	tree, err := decodeTree(raw)
	if err != nil {
		return nil, err
	}
	if tree["error"] == true {
		msg := str(tree, "error_message")
		if strings.Contains(msg, "Only SELECT") {
			return nil, reject("only SELECT statements are allowed; COPY, ATTACH, INSTALL, SET, PRAGMA, DDL and DML are refused")
		}
		return nil, reject("the query does not parse: %s", firstLine(msg))
	}
	stmts := nodes(tree, "statements")
	if len(stmts) != 1 {
		return nil, reject("send exactly one statement; this request has %d", len(stmts))
	}
	sel := obj(stmts[0], "node")
	a := &analyzer{scope: scope}
	q, base, err := a.analyze(sel)
	if err != nil {
		return nil, err
	}
	q.SQL = strings.TrimSpace(sql)
	q.Columns = a.columns
	q.Key = cacheKey(sel)
	q.Shape = shapeKey(sel)
	if q.Base, err = deserialize(ctx, p, stmts[0], base); err != nil {
		return nil, err
	}
	if r, ok := a.rankable(); ok {
		u, _ := a.refs[r].src.Table.UnitColumn()
		q.Rank = &RankRef{Dataset: a.refs[r].src.Dataset, Table: a.refs[r].src.Table.Name, Unit: u.Name}
		base["select_list"] = append(list(base, "select_list"), withAlias(columnRef(a.refs[r].alias, policy.RankColumn), "__rk"))
		if q.rankedBase, err = deserialize(ctx, p, stmts[0], base); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// RankRef names the table whose rows a query could bound by their hidden
// rank (engine.RankRows), had the engine ranked them.
type RankRef struct {
	Dataset, Table, Unit string
}

// UseRank switches q to bounding by rank, once the caller has had q.Rank
// ranked: Base then also selects __rk. The analysis itself reads no data
// and changes nothing; ranking is the engine's work, asked for by the
// release.
func (q *Query) UseRank() {
	if q.Rank == nil || q.RowRank {
		return
	}
	q.RowRank, q.Base = true, q.rankedBase
}

func deserialize(ctx context.Context, p Parser, stmt, sel node) (string, error) {
	s := deepCopy(stmt).(map[string]any)
	s["node"] = sel
	b, err := json.Marshal(node{"error": false, "statements": []any{s}})
	if err != nil {
		return "", fmt.Errorf("encode syntax tree: %w", err)
	}
	sql, err := p.Deserialize(ctx, b)
	if err != nil {
		return "", fmt.Errorf("print rewritten query: %w", err)
	}
	return sql, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (a *analyzer) analyze(sel node) (*Query, node, error) {
	switch t := str(sel, "type"); t {
	case "SELECT_NODE":
	case "SET_OPERATION_NODE":
		return nil, nil, reject("UNION, INTERSECT and EXCEPT are not allowed; send one SELECT per question")
	case "RECURSIVE_CTE_NODE":
		return nil, nil, reject("recursive CTEs are not allowed")
	default:
		return nil, nil, reject("unsupported query form %s; send a single aggregate SELECT", t)
	}
	if ctes := nodes(obj(sel, "cte_map"), "map"); len(ctes) > 0 {
		for _, c := range ctes {
			if str(obj(obj(obj(c, "value"), "query"), "node"), "type") == "RECURSIVE_CTE_NODE" {
				return nil, nil, reject("recursive CTEs are not allowed")
			}
		}
		return nil, nil, reject("WITH clauses are not supported; write the query as one SELECT with joins")
	}
	for _, m := range nodes(sel, "modifiers") {
		if str(m, "type") == "DISTINCT_MODIFIER" {
			return nil, nil, reject("SELECT DISTINCT is not allowed; use GROUP BY with an aggregate")
		}
	}
	if sel["having"] != nil {
		return nil, nil, reject("HAVING is not allowed: it filters on exact aggregates; filter the protected answer instead")
	}
	if sel["qualify"] != nil {
		return nil, nil, reject("QUALIFY is not allowed")
	}
	if sel["sample"] != nil {
		return nil, nil, reject("USING SAMPLE is not allowed")
	}
	from := deepCopy(obj(sel, "from_table")).(map[string]any)
	if err := a.from(from); err != nil {
		return nil, nil, err
	}
	multi := 0
	for _, r := range a.refs {
		if !r.src.Table.OneRowPerUnit {
			multi++
		}
	}
	if multi > 1 {
		return nil, nil, reject("a query may read only one table with several rows per patient; joining two of them multiplies each patient's rows (send one query per such table)")
	}
	var where node
	if w, ok := isExpr(sel["where_clause"]); ok {
		if err := a.expr(w, "WHERE"); err != nil {
			return nil, nil, err
		}
		a.filters = append(a.filters, w)
		where = try(w)
	}

	q := &Query{Limit: -1, PerUnitRows: true}
	seen := map[string]bool{}
	for _, r := range a.refs {
		if !slices.Contains(q.Datasets, r.src.Dataset) {
			q.Datasets = append(q.Datasets, r.src.Dataset)
		}
		q.Grade = policy.Highest(q.Grade, r.src.Grade)
		if !r.src.Table.OneRowPerUnit {
			q.PerUnitRows = false
		}
		if !seen[r.src.Dataset] {
			seen[r.src.Dataset] = true
			q.Policy = strictest(q.Policy, r.src.Policy)
		}
	}

	selectList := nodes(sel, "select_list")
	if len(selectList) == 0 || len(selectList) > maxOutputCols {
		return nil, nil, reject("select between 1 and %d output columns", maxOutputCols)
	}
	groupExprs, err := a.groupKeys(sel, selectList)
	if err != nil {
		return nil, nil, err
	}
	groupIndex := map[string]int{}
	var baseList []any
	baseList = append(baseList, withAlias(a.unitRef(), "__pu"))
	for i, g := range groupExprs {
		if err := a.expr(g, "GROUP BY"); err != nil {
			return nil, nil, err
		}
		groupIndex[canonical(g)] = i
		grp := a.describeGroup(g)
		q.Groups = append(q.Groups, grp)
		// A key with a public list holds only listed values or NULL
		// (registration checks the file), and privacy drops NULL.
		baseList = append(baseList, withAlias(try(g), fmt.Sprintf("__g%d", i)))
	}
	q.GroupBound = 1
	for _, g := range q.Groups {
		q.GroupBound = mulBound(q.GroupBound, g.Bound)
	}
	names := map[string]bool{}
	for i, item := range selectList {
		out := Output{Group: -1, Agg: -1}
		if gi, ok := groupIndex[canonical(item)]; ok {
			out.Group = gi
			out.Name = outputName(item, i)
			q.Groups[gi].Name = out.Name
		} else {
			agg, arg, err := a.aggregate(item)
			if err != nil {
				return nil, nil, err
			}
			agg.Name = outputName(item, i)
			out.Agg = len(q.Aggs)
			out.Name = agg.Name
			if arg != nil {
				if agg.Kind == Count {
					arg = try(arg)
				}
				baseList = append(baseList, withAlias(arg, fmt.Sprintf("__a%d", out.Agg)))
			} else {
				baseList = append(baseList, withAlias(constantNode(1), fmt.Sprintf("__a%d", out.Agg)))
			}
			q.Aggs = append(q.Aggs, agg)
		}
		if names[strings.ToLower(out.Name)] {
			return nil, nil, reject("two output columns are named %s; give them distinct aliases with AS", out.Name)
		}
		names[strings.ToLower(out.Name)] = true
		q.Outputs = append(q.Outputs, out)
	}
	if len(q.Aggs) == 0 {
		return nil, nil, reject("the query has no aggregate; only aggregates (COUNT, SUM, AVG, ...) are released, never rows")
	}
	if err := a.modifiers(sel, selectList, q); err != nil {
		return nil, nil, err
	}
	q.Special = a.special

	base := deepCopy(sel).(map[string]any)
	base["from_table"] = from
	base["where_clause"] = where
	base["select_list"] = baseList
	base["group_expressions"] = []any{}
	base["group_sets"] = []any{}
	base["aggregate_handling"] = "STANDARD_HANDLING"
	base["modifiers"] = []any{}
	return q, base, nil
}

// rankable returns the query's only table with several rows per patient
// when no filter reads it and every join is inner, so that a patient's rows
// of it reach the base query all or none, each once (the other tables have
// one row per patient).
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
	for _, f := range a.filters {
		if a.reads(f, multi) {
			return -1, false
		}
	}
	return multi, true
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

// strictest combines two policies for a query over both: the larger k and
// special-group k, the smaller special-group share of the budget, and the
// larger contribution bounds, so that neither dataset's rows are cut below
// what its steward declared; the noise is calibrated to the bounds applied,
// so larger bounds mean more noise, never a weaker guarantee.
func strictest(a, b policy.Policy) policy.Policy {
	if len(a.Tables) == 0 && a.K == 0 {
		return b
	}
	out := a
	out.Contribution.MaxGroups = max(a.Contribution.MaxGroups, b.Contribution.MaxGroups)
	out.Contribution.MaxRows = max(a.Contribution.MaxRows, b.Contribution.MaxRows)
	out.K = max(a.K, b.K)
	out.SpecialK = max(a.SpecialK, b.SpecialK)
	out.SpecialShare = min(a.SpecialShare, b.SpecialShare)
	return out
}

func constantNode(v int) node {
	return node{"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "",
		"value": node{"type": node{"id": "INTEGER", "type_info": nil}, "is_null": false, "value": v}}
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
		if a.unitEquality(c, first, mid) {
			hasUnit = true
			rewritten = append(rewritten, c)
			continue
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
// refs[first:mid] with that of a table in refs[mid:].
func (a *analyzer) unitEquality(c node, first, mid int) bool {
	if str(c, "type") != "COMPARE_EQUAL" {
		return false
	}
	l, r := obj(c, "left"), obj(c, "right")
	if str(l, "class") != "COLUMN_REF" || str(r, "class") != "COLUMN_REF" {
		return false
	}
	lc, lr, err1 := a.resolveStrict(strs(l, "column_names"))
	rc, rr, err2 := a.resolveStrict(strs(r, "column_names"))
	if err1 != nil || err2 != nil || lc.Role != policy.Unit || rc.Role != policy.Unit {
		return false
	}
	left := func(i int) bool { return i >= first && i < mid }
	right := func(i int) bool { return i >= mid }
	return (left(lr) && right(rr)) || (right(lr) && left(rr))
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

func isAggregateCall(n node) bool {
	if str(n, "class") != "FUNCTION" {
		return false
	}
	name := strings.ToLower(str(n, "function_name"))
	_, ok := aggregateNames[name]
	return ok || slices.Contains(rowRevealing, name)
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
	col, _, err := a.resolve(strs(arg, "column_names"), name)
	if err != nil {
		return Agg{}, nil, err
	}
	if err := a.expr(arg, name); err != nil {
		return Agg{}, nil, err
	}
	if !col.Bounded() {
		return Agg{}, nil, reject("column %s has no declared bounds, so %s cannot be protected; ask the data steward to declare min and max", col.Name, name)
	}
	agg.Column, agg.Min, agg.Max = col.Name, *col.Min, *col.Max
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
