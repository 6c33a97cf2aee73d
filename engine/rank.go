package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hospital/gateway/policy"
)

// RankColumn is the hidden column RankRows adds to a table (see
// policy.RankColumn).
const RankColumn = policy.RankColumn

// RowsColumn is the hidden column RankRows adds beside RankColumn: the
// unit's number of rows in the table, at most MaxRank (see
// policy.RowsColumn).
const RowsColumn = policy.RowsColumn

// MaxRank is the largest rank stored; later rows of a unit share it. A plan
// may bound rows by rank only below it.
const MaxRank = 65535

// errLoading is returned by RankRows while rows are being appended.
var errLoading = errors.New("rows are being loaded into the table")

// errClosing is returned by RankRows once the engine is closing.
var errClosing = errors.New("the engine is closing")

// rankState is one table's ranking: done is closed when it is finished.
type rankState struct {
	done chan struct{}
	err  error
	// ranked: the table has RankColumn (it has several rows per unit);
	// codes: the lists its code columns were built from, by lower-case
	// column name (see RankTables). Both are set before done is closed.
	ranked bool
	codes  map[string][]string

	// counts caches RankCounts for this ranking: the rows of each rank,
	// for ranks 1 .. len(counts). A reload makes a new rankState.
	mu     sync.Mutex
	counts []int64
}

// tables tracks which tables are ranked and which are being loaded, so that
// a ranking never races a reload.
type tables struct {
	ranks   map[string]*rankState
	loading map[string]int
	types   map[string]map[string]string // ColumnTypes, until the table changes
	changes int                          // counts forget calls, so that types read across one are not kept
}

func tableKey(dataset, table string) string {
	return strings.ToLower(dataset) + "\x00" + strings.ToLower(table)
}

// forget drops a table's ranking when it is created or appended to; it
// waits for a ranking in progress to finish first.
func (e *Engine) forget(key string, loading int) {
	for {
		e.mu.Lock()
		st, ok := e.tables.ranks[key]
		if ok {
			select {
			case <-st.done:
			default:
				e.mu.Unlock()
				<-st.done
				continue
			}
		}
		delete(e.tables.ranks, key)
		delete(e.tables.types, key)
		e.tables.changes++
		e.tables.loading[key] += loading
		e.mu.Unlock()
		return
	}
}

// RankRows makes sure dataset.table has RankColumn and RowsColumn: for
// each value of unit, its rows are numbered 1, 2, ... in an order given by
// a keyed hash of the row's values under a 64-bit key from crypto/rand,
// which is used once and not kept, and each row holds how many rows its
// unit has. A patient's ranks and count thus depend only on their own rows
// and the key: adding or removing another patient changes none of them. The
// ranking is done once per load of the table (it costs a rewrite of the
// table, about 3 s for 10M rows on two cores) and reused by every query
// until the table is created or appended to again; concurrent callers wait
// for the one ranking, which runs in the background (see RankTables) and
// goes on when they stop waiting. It fails while rows are being appended.
//
// Plans use it to bound each patient's rows with a plain filter instead of
// a per-query window or per-patient aggregation, and the count to leave
// out of per-patient aggregation the patients whose rows no bound can cut
// (see privacy).
func (e *Engine) RankRows(ctx context.Context, dataset, table, unit string) error {
	st, _, err := e.ranking(dataset, table, unit, nil)
	if err != nil {
		return err
	}
	select {
	case <-st.done:
		if st.err == nil && !st.ranked {
			return fmt.Errorf("rank %s.%s: the table was rewritten for its codes only (one row per unit)", dataset, table)
		}
		return st.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ranked reports whether dataset.table has its ranks now, without waiting:
// when it has none and none is being built, it starts building them in the
// background (as RankRows), for the queries that come later. A query that
// finds the table unranked is planned without the ranks, more slowly, and
// never waits for them.
func (e *Engine) Ranked(dataset, table, unit string) bool {
	st, started, err := e.ranking(dataset, table, unit, nil)
	if err != nil || started {
		return false
	}
	select {
	case <-st.done:
		return st.err == nil && st.ranked
	default:
		return false
	}
}

// Codes is, without waiting, the public lists that dataset.table's code
// columns hold positions in (policy.CodeColumn), by lower-case column
// name: nil until RankTables has built them for the table as loaded now.
// A plan groups on a column's code only when its list is the policy's
// current one.
func (e *Engine) Codes(dataset, table string) map[string][]string {
	e.mu.Lock()
	st, ok := e.tables.ranks[tableKey(dataset, table)]
	e.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-st.done:
		if st.err == nil {
			return st.codes
		}
	default:
	}
	return nil
}

// WaitTables waits until the rankings and code columns RankTables started
// for dataset are built, and returns the first error of one: what a
// gateway's first queries do without, a test or benchmark waits for.
func (e *Engine) WaitTables(ctx context.Context, dataset string) error {
	prefix := strings.ToLower(dataset) + "\x00"
	e.mu.Lock()
	var states []*rankState
	for key, st := range e.tables.ranks {
		if strings.HasPrefix(key, prefix) {
			states = append(states, st)
		}
	}
	e.mu.Unlock()
	var first error
	for _, st := range states {
		select {
		case <-st.done:
			if first == nil {
				first = st.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// maxCodes is the longest public list a code column is built for: its
// positions are UTINYINT.
const maxCodes = 255

// RankTables starts ranking, in the background, every table of p with
// several rows per unit, and building the code columns of every column
// with a public list (of at most maxCodes categories), in the same rewrite
// of the table: loading a dataset calls it, so that queries find them
// built, while the first ones, answered without them, wait for nothing.
//
// DuckDB groups on a small integer several times faster than on a string
// (at 1M encounters, a GROUP BY department took 24 ms on the strings and
// 5 ms on their positions), and a public list makes the positions known
// before any data is read, so a plan groups on the code and turns it back
// into the category, from the list, on the few rows of its result.
func (e *Engine) RankTables(dataset string, p policy.Policy) {
	for _, t := range p.Tables {
		codes := map[string][]string{}
		for _, c := range t.Columns {
			if n := len(c.Public); n > 0 && n <= maxCodes {
				codes[strings.ToLower(c.Name)] = slices.Clone(c.Public)
			}
		}
		unit := ""
		if u, ok := t.UnitColumn(); ok && !t.OneRowPerUnit {
			unit = u.Name
		}
		if unit != "" || len(codes) > 0 {
			e.ranking(dataset, t.Name, unit, codes)
		}
	}
}

// ranking is the table's ranking, started now in the engine's background
// (started) when there is none: ranks by unit (none when unit is "") and
// the code columns of codes.
func (e *Engine) ranking(dataset, table, unit string, codes map[string][]string) (st *rankState, started bool, err error) {
	key := tableKey(dataset, table)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closing.Err() != nil { // no background work starts once Close has begun
		return nil, false, errClosing
	}
	if e.tables.loading[key] > 0 {
		return nil, false, errLoading
	}
	if st, ok := e.tables.ranks[key]; ok {
		return st, false, nil
	}
	st = &rankState{done: make(chan struct{})}
	e.tables.ranks[key] = st
	e.background.Add(1)
	go func() {
		defer e.background.Done()
		// The ranking is shared by every later query: it runs until it is
		// done or the engine closes, whoever asked for it.
		st.codes, st.err = e.rank(e.closing, dataset, table, unit, codes)
		st.ranked = unit != ""
		// The table was rewritten: plans bound before are not reused.
		e.kept.drop()
		close(st.done)
	}()
	return st, true, nil
}

// rank rewrites the table with its derived columns and returns the code
// lists it built (of VARCHAR columns only).
func (e *Engine) rank(ctx context.Context, dataset, table, unit string, codes map[string][]string) (map[string][]string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	salt := binary.LittleEndian.Uint64(b[:])
	name := ident(dataset) + "." + ident(table)
	rows, err := e.db.QueryContext(ctx, "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = $1 AND table_name = $2 ORDER BY column_index", dataset, table)
	if err != nil {
		return nil, fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	var cols, derived []string
	built := map[string][]string{}
	for rows.Next() {
		var c, typ string
		if err := rows.Scan(&c, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("rank %s.%s: %w", dataset, table, err)
		}
		if policy.Reserved(c) {
			continue
		}
		cols = append(cols, ident(c))
		if list, ok := codes[strings.ToLower(c)]; ok && typ == "VARCHAR" {
			derived = append(derived, fmt.Sprintf("list_position(%s, %s)::UTINYINT AS %s", stringList(list), ident(c), ident(policy.CodeColumn(c, list))))
			built[strings.ToLower(c)] = list
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("rank %s.%s: no such table", dataset, table)
	}
	// The order hashes the row's own values, so a patient's ranks depend
	// on their rows and the key only, never on other patients' rows or on
	// where rows sit in the table (identical rows are interchangeable).
	list := strings.Join(cols, ", ")
	if unit != "" {
		derived = append(derived, fmt.Sprintf("least(row_number() OVER (PARTITION BY %s ORDER BY hash(%s, %d::UBIGINT)), %d)::USMALLINT AS %s",
			ident(unit), list, salt, MaxRank, ident(RankColumn)),
			fmt.Sprintf("least(count(*) OVER (PARTITION BY %s), %d)::USMALLINT AS %s", ident(unit), MaxRank, ident(RowsColumn)))
	}
	if len(derived) == 0 {
		return nil, nil
	}
	stmt := fmt.Sprintf("CREATE OR REPLACE TABLE %s AS SELECT %s, %s FROM %s", name, list, strings.Join(derived, ", "), name)
	if _, err := e.db.ExecContext(ctx, stmt); err != nil {
		return nil, fmt.Errorf("rank %s.%s: %w", dataset, table, classify(ctx, err))
	}
	return built, nil
}

// stringList is list as a DuckDB list of VARCHAR constants.
func stringList(list []string) string {
	q := make([]string, len(list))
	for i, v := range list {
		q[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'::VARCHAR"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// dropRank removes the hidden columns (policy.Reserved) from a table about
// to be appended to, whose rows must match the source's columns.
func (e *Engine) dropRank(ctx context.Context, dataset, table string) error {
	rows, err := e.db.QueryContext(ctx, "SELECT column_name FROM duckdb_columns() WHERE schema_name = $1 AND table_name = $2", dataset, table)
	if err != nil {
		return fmt.Errorf("check %s.%s: %w", dataset, table, err)
	}
	var hidden []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return fmt.Errorf("check %s.%s: %w", dataset, table, err)
		}
		if policy.Reserved(c) {
			hidden = append(hidden, c)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("check %s.%s: %w", dataset, table, err)
	}
	for _, c := range hidden {
		if _, err := e.db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP COLUMN %s", ident(dataset), ident(table), ident(c))); err != nil {
			return fmt.Errorf("drop the hidden column %s of %s.%s: %w", c, dataset, table, err)
		}
	}
	return nil
}

// ColumnTypes is the DuckDB type of each column of dataset.table as it is
// loaded now, by lower-case column name (the hidden rank left out), or
// nil when there is no such table. It is read once per load of the table.
// The sandbox decides from it which filters cannot fail on any row, so it
// is the engine's own, never what a policy or manifest says.
func (e *Engine) ColumnTypes(ctx context.Context, dataset, table string) (map[string]string, error) {
	key := tableKey(dataset, table)
	e.mu.Lock()
	t, ok := e.tables.types[key]
	changes := e.tables.changes
	e.mu.Unlock()
	if ok {
		return t, nil
	}
	rows, err := e.db.QueryContext(ctx, "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = $1 AND table_name = $2", dataset, table)
	if err != nil {
		return nil, fmt.Errorf("column types of %s.%s: %w", dataset, table, err)
	}
	t = map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return nil, fmt.Errorf("column types of %s.%s: %w", dataset, table, err)
		}
		if !policy.Reserved(name) {
			t[strings.ToLower(name)] = typ
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("column types of %s.%s: %w", dataset, table, err)
	}
	if len(t) == 0 {
		return nil, nil
	}
	e.mu.Lock()
	if e.tables.loading[key] == 0 && e.tables.changes == changes {
		e.tables.types[key] = t
	}
	e.mu.Unlock()
	return t, nil
}
