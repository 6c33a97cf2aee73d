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
// and the offending part of the query. The analysis is pure: it reads no
// data and changes nothing in the engine. Its parts follow the query's:
// analyze.go the statement and the accepted Query, from.go the FROM clause
// and the join graph, expr.go expressions and their cost, aggregate.go the
// aggregates, modifiers.go GROUP BY, ORDER BY and LIMIT, bounds.go what
// the policy bounds (group counts, totality).
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
	// Types is the engine's type of each column as loaded (lower-case
	// names, engine.ColumnTypes). The sandbox leaves a WHERE conjunct
	// without TRY only when these types say it cannot fail; without them
	// every conjunct keeps its TRY.
	Types map[string]string
	// Codes is, by lower-case column name, the public list each of the
	// table's code columns was built from (engine.Codes). A bare GROUP BY
	// column whose list is still the policy's is grouped on its code.
	Codes map[string][]string
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
	// Coded: the base holds the key's 1-based position in Public (its code
	// column, policy.CodeColumn; NULL for NULL and for a value not in the
	// list), which the plan turns back into the category.
	Coded bool
}

// Agg is one aggregate output.
type Agg struct {
	Name   string
	Kind   AggKind
	Column string  // the aggregated column, "" for COUNT(*)
	Min    float64 // declared bounds of Column, for sums, means, variances, quantiles
	Max    float64
	// DomainMin and DomainMax are the values Column can hold (its declared
	// domain, or Min and Max): what clamping to Min and Max cuts is
	// estimated up to them.
	DomainMin, DomainMax float64
	Q                    float64 // the quantile for Quantile
	Disc                 bool    // quantile_disc: answer a value of the column's grid
	Star                 bool    // COUNT(*): every row counts
	// IntType is "INTEGER" or "BIGINT" when the engine loaded Column as
	// that signed integer type (known from Source.Types only, never from
	// the policy), so that its values can be clamped and summed in it.
	IntType string
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
	// Flat is Base taken apart, nil when it cannot be with certainty
	// (see flatten).
	Flat *Flat
	// PerUnitRows is true when every table read has at most one row per
	// patient, so no row bounding is needed.
	PerUnitRows bool
	// Columns are the columns the query reads, each once.
	Columns []policy.Column
	// Rank, when set, is the query's only table with several rows per
	// patient, which no outer join touches: its rows may be bounded by
	// rank (see UseRank).
	Rank       *RankRef
	rankedBase string
	// Counted, when set, is the query's only table with several rows per
	// patient, whatever filters and joins read it: its rows per patient
	// (counted by rank) bound what one patient can add, from which the
	// contribution bound is chosen (privacy.Plan.Bounded).
	Counted *RankRef
	// RowRank is true when Base also selects __rk, the hidden rank of the
	// row among its patient's rows in the query's only table with several
	// rows per patient, and every join is inner. Then each row of that
	// table reaches Base at most once, and whether it does depends on the
	// row alone: when no filter (WHERE or join condition) reads the table
	// (Filtered false), either none of a patient's rows reach Base or all
	// of them do, ranked 1, 2, ..., so privacy may bound each patient's
	// rows by __rk; when one does, the rows that reach Base are some of
	// the patient's, each with its rank among all of them, and bounding by
	// __rk keeps those of them among the patient's first m. Base then
	// also selects __n, the patient's number of rows in that table
	// (engine.RowsColumn), which bounds how many of them reach Base.
	RowRank bool
	// Filtered is true when a filter reads the table of Rank.
	Filtered bool
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
	q.Flat = flatten(q.Base, aliases(base))
	if r := a.multiRow(); r >= 0 {
		u, _ := a.refs[r].src.Table.UnitColumn()
		q.Counted = &RankRef{Dataset: a.refs[r].src.Dataset, Table: a.refs[r].src.Table.Name, Unit: u.Name}
	}
	if r, ok := a.rankable(); ok {
		u, _ := a.refs[r].src.Table.UnitColumn()
		q.Rank = &RankRef{Dataset: a.refs[r].src.Dataset, Table: a.refs[r].src.Table.Name, Unit: u.Name}
		q.Filtered = a.filtered(r)
		base["select_list"] = append(list(base, "select_list"), withAlias(columnRef(a.refs[r].alias, policy.RankColumn), "__rk"),
			withAlias(columnRef(a.refs[r].alias, policy.RowsColumn), "__n"))
		base["where_clause"] = a.balanceEstimates(r, base["where_clause"])
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
		where = a.guardWhere(w)
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
		// A key with a public list holds only listed values or NULL
		// (registration checks the file), and privacy drops NULL.
		key := try(g)
		if code, ok := a.codeOf(g, grp); ok {
			key, grp.Coded = code, true
		}
		q.Groups = append(q.Groups, grp)
		baseList = append(baseList, withAlias(key, fmt.Sprintf("__g%d", i)))
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
