package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/hospital/gateway/policy"
)

// RankColumn is the hidden column RankRows adds to a table (see
// policy.RankColumn).
const RankColumn = policy.RankColumn

// MaxRank is the largest rank stored; later rows of a unit share it. A plan
// may bound rows by rank only below it.
const MaxRank = 65535

// errLoading is returned by RankRows while rows are being appended.
var errLoading = errors.New("rows are being loaded into the table")

// rankState is one table's ranking: done is closed when it is finished.
type rankState struct {
	done chan struct{}
	err  error

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

// RankRows makes sure dataset.table has RankColumn: for each value of unit,
// its rows are numbered 1, 2, ... in an order given by a keyed hash of the
// row's values under a 64-bit key from crypto/rand, which is used once and
// not kept. A patient's ranks thus depend only on their own rows and the
// key: adding or removing another patient changes none of them. The
// ranking is done once per load of the table (it costs a rewrite of the
// table, about 3 s for 10M rows on two cores) and reused by every query
// until the table is created or appended to again; concurrent callers wait
// for the one ranking, which runs in the background (see RankTables) and
// goes on when they stop waiting. It fails while rows are being appended.
//
// Plans use it to bound each patient's rows with a plain filter instead of
// a per-query window or per-patient aggregation (see privacy).
func (e *Engine) RankRows(ctx context.Context, dataset, table, unit string) error {
	st, _, err := e.ranking(dataset, table, unit)
	if err != nil {
		return err
	}
	select {
	case <-st.done:
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
	st, started, err := e.ranking(dataset, table, unit)
	if err != nil || started {
		return false
	}
	select {
	case <-st.done:
		return st.err == nil
	default:
		return false
	}
}

// RankTables starts ranking, in the background, every table of p with
// several rows per unit: loading a dataset calls it, so that queries find
// the ranks built, while the first ones, answered without them, wait for
// nothing.
func (e *Engine) RankTables(dataset string, p policy.Policy) {
	for _, t := range p.Tables {
		if u, ok := t.UnitColumn(); ok && !t.OneRowPerUnit {
			e.ranking(dataset, t.Name, u.Name)
		}
	}
}

// ranking is the table's ranking, started now in the engine's background
// (started) when there is none.
func (e *Engine) ranking(dataset, table, unit string) (st *rankState, started bool, err error) {
	key := tableKey(dataset, table)
	e.mu.Lock()
	defer e.mu.Unlock()
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
		st.err = e.rank(e.closing, dataset, table, unit)
		// The table was rewritten: plans bound before are not reused.
		e.kept.drop()
		close(st.done)
	}()
	return st, true, nil
}

func (e *Engine) rank(ctx context.Context, dataset, table, unit string) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	salt := binary.LittleEndian.Uint64(b[:])
	name := ident(dataset) + "." + ident(table)
	rows, err := e.db.QueryContext(ctx, "SELECT column_name FROM duckdb_columns() WHERE schema_name = $1 AND table_name = $2 ORDER BY column_index", dataset, table)
	if err != nil {
		return fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return fmt.Errorf("rank %s.%s: %w", dataset, table, err)
		}
		if !policy.Reserved(c) {
			cols = append(cols, ident(c))
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("rank %s.%s: %w", dataset, table, err)
	}
	if len(cols) == 0 {
		return fmt.Errorf("rank %s.%s: no such table", dataset, table)
	}
	// The order hashes the row's own values, so a patient's ranks depend
	// on their rows and the key only, never on other patients' rows or on
	// where rows sit in the table (identical rows are interchangeable).
	list := strings.Join(cols, ", ")
	stmt := fmt.Sprintf("CREATE OR REPLACE TABLE %s AS SELECT %s, least(row_number() OVER (PARTITION BY %s ORDER BY hash(%s, %d::UBIGINT)), %d)::USMALLINT AS %s FROM %s",
		name, list, ident(unit), list, salt, MaxRank, ident(RankColumn), name)
	if _, err := e.db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("rank %s.%s: %w", dataset, table, classify(ctx, err))
	}
	return nil
}

// dropRank removes the hidden column from a table about to be appended
// to, whose rows must match the source's columns.
func (e *Engine) dropRank(ctx context.Context, dataset, table string) error {
	var existing int
	if err := e.db.QueryRowContext(ctx, "SELECT count(*) FROM duckdb_columns() WHERE schema_name = $1 AND table_name = $2 AND column_name = $3",
		dataset, table, RankColumn).Scan(&existing); err != nil {
		return fmt.Errorf("check %s.%s: %w", dataset, table, err)
	}
	if existing == 0 {
		return nil
	}
	if _, err := e.db.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP COLUMN %s", ident(dataset), ident(table), ident(RankColumn))); err != nil {
		return fmt.Errorf("drop the rank of %s.%s: %w", dataset, table, err)
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
