// Package engine is where hospital data lives while the gateway runs: one
// in-memory DuckDB database, locked down as a sandbox, into which each
// dataset's tables are loaded through Arrow from their encrypted files at rest
// (see engine/atrest). Nothing in this package decides what may be asked; the
// sandbox and privacy packages above it do, and only their rewritten queries
// reach Query.
//
// Why in memory: DuckDB reads encrypted database files, but in this build it
// can only write them through OpenSSL from an extension that cannot be
// installed offline (its bundled mbedTLS writer is marked unsafe by DuckDB for
// nonce generation). So the gateway encrypts at rest itself (SM4-GCM by
// default) and DuckDB holds plaintext only in memory, with spilling to disk
// turned off so that no plaintext ever reaches a temporary file.
//
// Tables with several rows per patient get, in the background once they
// are loaded (RankTables), a hidden column ranking each patient's rows at
// random (RankRows), so that the privacy package can bound what one
// patient adds with a plain filter; until it exists, queries are planned
// without it.
package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// Config sets the sandbox limits every query runs under.
type Config struct {
	// MemoryLimit caps DuckDB's memory, e.g. "4GB". Queries that need more
	// fail with resource_limit instead of spilling plaintext to disk.
	MemoryLimit string
	// Threads caps DuckDB's worker threads.
	Threads int
	// ProcessMemoryLimit caps the whole process's resident memory, e.g.
	// "6GB": past it, running queries are stopped with resource_limit (see
	// guard.go). The default is MemoryLimit plus a quarter plus 512 MiB,
	// room for the Go side and for DuckDB's own overhead. The memory
	// measured is the whole process's: where one process holds several
	// engines (tests, a federation demo), each stops its own queries.
	ProcessMemoryLimit string
}

// Engine is the sandboxed DuckDB database.
type Engine struct {
	db        *sql.DB
	connector *duckdb.Connector
	// serialize and deserialize are DuckDB's parser and printer, prepared
	// once: every query goes through them, and preparing them anew cost
	// more than running them.
	serialize, deserialize *sql.Stmt

	guard *guard

	mu     sync.Mutex
	tables tables
	// closing ends with Close, and with it the rankings running in
	// background, which Close waits for.
	closing    context.Context
	stop       context.CancelFunc
	background sync.WaitGroup
	// kept holds prepared statements for their owners' next use.
	kept kept
}

// Open starts an empty in-memory database with the sandbox settings applied
// and locked: no file system, no extensions, no configuration changes.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.MemoryLimit == "" {
		cfg.MemoryLimit = "4GB"
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 2
	}
	connector, err := duckdb.NewConnector("", nil)
	if err != nil {
		return nil, fmt.Errorf("open duckdb: %w", err)
	}
	db := sql.OpenDB(connector)
	settings := []string{
		"SET autoinstall_known_extensions = false",
		"SET autoload_known_extensions = false",
		"SET allow_community_extensions = false",
		fmt.Sprintf("SET memory_limit = '%s'", strings.ReplaceAll(cfg.MemoryLimit, "'", "")),
		fmt.Sprintf("SET threads = %d", cfg.Threads),
		// Memory a query frees goes back to the system in the background,
		// not only when the next query allocates, so that the process
		// guard sees it fall.
		"SET allocator_background_threads = true",
		"SET temp_directory = ''",
		"SET enable_external_access = false",
		"SET lock_configuration = true",
	}
	for _, s := range settings {
		if _, err := db.ExecContext(ctx, s); err != nil {
			db.Close()
			connector.Close()
			return nil, fmt.Errorf("apply sandbox setting %q: %w", s, err)
		}
	}
	db.SetMaxIdleConns(cfg.Threads * 4)
	limit, err := processLimit(ctx, db, cfg.ProcessMemoryLimit)
	if err != nil {
		db.Close()
		connector.Close()
		return nil, err
	}
	e := &Engine{db: db, connector: connector, guard: newGuard(limit, processRSS),
		tables: tables{ranks: map[string]*rankState{}, loading: map[string]int{}, types: map[string]map[string]string{}}}
	e.closing, e.stop = context.WithCancel(context.Background())
	if e.serialize, err = db.PrepareContext(ctx, "SELECT json_serialize_sql($1::VARCHAR)::VARCHAR"); err == nil {
		e.deserialize, err = db.PrepareContext(ctx, "SELECT json_deserialize_sql($1::JSON)")
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("prepare the parser: %w", err)
	}
	return e, nil
}

// processLimit is the process memory limit in bytes: set, or DuckDB's
// memory limit (as DuckDB applied it) plus a quarter plus 512 MiB.
func processLimit(ctx context.Context, db *sql.DB, set string) (int64, error) {
	if set != "" {
		n, err := ParseBytes(set)
		if err != nil {
			return 0, fmt.Errorf("process_memory_limit: %w", err)
		}
		return n, nil
	}
	var duck string
	if err := db.QueryRowContext(ctx, "SELECT current_setting('memory_limit')").Scan(&duck); err != nil {
		return 0, fmt.Errorf("read duckdb memory limit: %w", err)
	}
	n, err := ParseBytes(duck)
	if err != nil {
		return 0, fmt.Errorf("read duckdb memory limit: %w", err)
	}
	return n + n/4 + 512<<20, nil
}

// ProcessMemoryLimit is the resident memory, in bytes, past which running
// queries are stopped.
func (e *Engine) ProcessMemoryLimit() int64 { return e.guard.limit }

// Close releases the database and all data in it, once the rankings in
// the background have stopped.
func (e *Engine) Close() error {
	// Under mu, so that no background work starts after Wait begins.
	e.mu.Lock()
	e.stop()
	e.mu.Unlock()
	e.background.Wait()
	e.kept.drop()
	for _, st := range []*sql.Stmt{e.serialize, e.deserialize} {
		if st != nil {
			st.Close()
		}
	}
	e.guard.close()
	err := e.db.Close()
	return errors.Join(err, e.connector.Close())
}

// Serialize returns DuckDB's syntax tree of sql as JSON (json_serialize_sql).
func (e *Engine) Serialize(ctx context.Context, sqlText string) ([]byte, error) {
	var out string
	if err := e.serialize.QueryRowContext(ctx, sqlText).Scan(&out); err != nil {
		return nil, fmt.Errorf("serialize sql: %w", err)
	}
	return []byte(out), nil
}

// Deserialize turns a syntax tree back into SQL (json_deserialize_sql).
func (e *Engine) Deserialize(ctx context.Context, tree []byte) (string, error) {
	var out string
	if err := e.deserialize.QueryRowContext(ctx, string(tree)).Scan(&out); err != nil {
		return "", fmt.Errorf("deserialize sql: %w", err)
	}
	return out, nil
}

// Column is a result column's name and DuckDB type.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is a small aggregated result: one row per group. Rows hold Go
// values as the driver returns them (int64, float64, string, time.Time,
// map[any]any for DuckDB MAPs, nil).
type Result struct {
	Columns []Column
	Rows    [][]any
}

// Query runs sql and returns at most maxRows rows; a result with more rows
// fails with resource_limit so that the caller never sees a silently cut
// answer. A context deadline interrupts DuckDB and fails with query_timeout.
func (e *Engine) Query(ctx context.Context, sqlText string, maxRows int) (*Result, error) {
	ctx, done := e.guard.track(ctx)
	defer done()
	rows, err := e.db.QueryContext(ctx, sqlText)
	if err != nil {
		return nil, classify(ctx, err)
	}
	return read(ctx, rows, maxRows)
}

// Prepared is a statement that DuckDB has bound and planned, on a
// connection of its own, where it runs: on another connection DuckDB
// would bind and plan it again.
type Prepared struct {
	conn *sql.Conn
	// guard stops the statement's run when the process nears its memory
	// limit.
	guard *guard
	stmt  *sql.Stmt
	// e is set when Close keeps the statement for its owner (PrepareFor).
	e          *Engine
	owner, sql string
	gen        uint64
	// ranLong: the statement ran longer than keepUnder, so Close prepares
	// a fresh one for the owner in its place (Engine.refill).
	ranLong bool
}

// Prepare binds sqlText against the loaded tables' schemas without reading
// any of their rows: what it refuses (an unknown column, a type mismatch)
// depends on the SQL and the schemas alone, never on the data. Its errors
// are query_rejected, with DuckDB's message.
func (e *Engine) Prepare(ctx context.Context, sqlText string) (*Prepared, error) {
	conn, err := e.db.Conn(ctx)
	if err != nil {
		return nil, classify(ctx, err)
	}
	stmt, err := conn.PrepareContext(ctx, sqlText)
	if err != nil {
		conn.Close()
		var de *duckdb.Error
		if errors.As(err, &de) && ctx.Err() == nil {
			return nil, fault.Wrap(fault.QueryRejected, err, "the query is not valid over these tables: %s", firstLine(de.Msg))
		}
		return nil, classify(ctx, err)
	}
	return &Prepared{conn: conn, stmt: stmt, guard: e.guard}, nil
}

// Query runs the statement as Engine.Query runs SQL.
func (p *Prepared) Query(ctx context.Context, maxRows int) (*Result, error) {
	ctx, done := p.guard.track(ctx)
	defer done()
	start := time.Now()
	rows, err := p.stmt.QueryContext(ctx)
	if err != nil {
		p.e = nil // a statement that failed is not kept
		return nil, classify(ctx, err)
	}
	res, err := read(ctx, rows, maxRows)
	switch {
	case err != nil:
		p.e = nil
	case time.Since(start) > keepUnder:
		// Nor one that ran long: DuckDB holds a kept statement's working
		// memory. One that has not run holds none, so a fresh one is
		// prepared in its place.
		p.ranLong = true
	}
	return res, err
}

// Close releases the statement and its connection, or keeps them for the
// owner's next use (PrepareFor).
func (p *Prepared) Close() error {
	if p.e == nil {
		return p.release()
	}
	if p.ranLong {
		p.e.refill(p.owner, p.sql, p.gen)
		return p.release()
	}
	if p.e.kept.give(p) {
		return nil
	}
	return p.release()
}

func (p *Prepared) release() error { return errors.Join(p.stmt.Close(), p.conn.Close()) }

func read(ctx context.Context, rows *sql.Rows, maxRows int) (*Result, error) {
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return nil, fmt.Errorf("read result columns: %w", err)
	}
	res := &Result{}
	for _, t := range types {
		res.Columns = append(res.Columns, Column{Name: t.Name(), Type: t.DatabaseTypeName()})
	}
	for rows.Next() {
		if len(res.Rows) >= maxRows {
			return nil, fault.E(fault.ResourceLimit, "the query produces more than %d groups; group on fewer or coarser keys, or filter", maxRows)
		}
		vals := make([]any, len(types))
		ptrs := make([]any, len(types))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("read result row: %w", err)
		}
		for i, v := range vals {
			if m, ok := v.(duckdb.OrderedMap); ok {
				out := make(map[any]any, len(m.Keys()))
				for j, k := range m.Keys() {
					out[k] = m.Values()[j]
				}
				vals[i] = out
			}
		}
		res.Rows = append(res.Rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(ctx, err)
	}
	return res, nil
}

// classify maps DuckDB failures to the gateway's error kinds.
func classify(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errProcessMemory) {
		return fault.Wrap(fault.ResourceLimit, err, "the query was stopped because the gateway reached its process memory limit; narrow it")
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fault.Wrap(fault.Timeout, err, "the query ran past its time limit; narrow it or ask for a smaller grouping")
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return fault.Wrap(fault.Timeout, err, "the query was cancelled")
	}
	var de *duckdb.Error
	if errors.As(err, &de) {
		switch de.Type {
		case duckdb.ErrorTypeOutOfMemory:
			return fault.Wrap(fault.ResourceLimit, err, "the query needs more memory than the sandbox allows; narrow it")
		case duckdb.ErrorTypeInterrupt:
			return fault.Wrap(fault.Timeout, err, "the query ran past its time limit; narrow it or ask for a smaller grouping")
		case duckdb.ErrorTypeBinder, duckdb.ErrorTypeConversion, duckdb.ErrorTypeInvalidInput, duckdb.ErrorTypeParser, duckdb.ErrorTypeCatalog, duckdb.ErrorTypeOutOfRange, duckdb.ErrorTypeMismatchType:
			return fault.Wrap(fault.QueryRejected, err, "the query is not valid over these tables: %s", firstLine(de.Msg))
		}
	}
	return fmt.Errorf("run query: %w", err)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ident quotes an SQL identifier.
func ident(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// duckType is the DuckDB column type for an Arrow type.
func duckType(t arrow.DataType) (string, error) {
	switch t.ID() {
	case arrow.INT8:
		return "TINYINT", nil
	case arrow.INT16:
		return "SMALLINT", nil
	case arrow.INT32:
		return "INTEGER", nil
	case arrow.INT64:
		return "BIGINT", nil
	case arrow.UINT8, arrow.UINT16, arrow.UINT32:
		return "BIGINT", nil
	case arrow.FLOAT32:
		return "FLOAT", nil
	case arrow.FLOAT64:
		return "DOUBLE", nil
	case arrow.STRING, arrow.LARGE_STRING:
		return "VARCHAR", nil
	case arrow.BOOL:
		return "BOOLEAN", nil
	case arrow.DATE32, arrow.DATE64:
		return "DATE", nil
	case arrow.TIMESTAMP:
		return "TIMESTAMP", nil
	}
	return "", fmt.Errorf("arrow type %s is not supported; convert the column to a number, string, boolean, date or timestamp", t)
}

// CreateTable creates (or replaces) dataset.table with schema's columns.
func (e *Engine) CreateTable(ctx context.Context, dataset, table string, schema *arrow.Schema) error {
	var cols []string
	for _, f := range schema.Fields() {
		if policy.Reserved(f.Name) { // the hidden columns of RankTables
			return fmt.Errorf("table %s: column name %s is reserved for the gateway; rename the column", table, f.Name)
		}
		t, err := duckType(f.Type)
		if err != nil {
			return fmt.Errorf("table %s column %s: %w", table, f.Name, err)
		}
		cols = append(cols, ident(f.Name)+" "+t)
	}
	stmts := []string{
		"CREATE SCHEMA IF NOT EXISTS " + ident(dataset),
		fmt.Sprintf("CREATE OR REPLACE TABLE %s.%s (%s)", ident(dataset), ident(table), strings.Join(cols, ", ")),
	}
	e.forget(tableKey(dataset, table), 0)
	defer e.kept.drop()
	for _, s := range stmts {
		if _, err := e.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create %s.%s: %w", dataset, table, err)
		}
	}
	return nil
}

// Loader appends Arrow record batches to one table.
type Loader struct {
	e        *Engine
	key      string
	conn     *sql.Conn
	appender *duckdb.Appender
	rows     int64
}

// NewLoader opens an appender on dataset.table, which must exist. Until
// Close, the table is not ranked (see RankRows) and a ranking it had is
// dropped.
func (e *Engine) NewLoader(ctx context.Context, dataset, table string) (*Loader, error) {
	key := tableKey(dataset, table)
	e.forget(key, 1)
	done := func() {
		e.mu.Lock()
		e.tables.loading[key]--
		e.mu.Unlock()
	}
	err := e.dropRank(ctx, dataset, table)
	e.kept.drop()
	if err != nil {
		done()
		return nil, err
	}
	conn, err := e.db.Conn(ctx)
	if err != nil {
		done()
		return nil, fmt.Errorf("connect: %w", err)
	}
	l := &Loader{e: e, key: key, conn: conn}
	err = conn.Raw(func(dc any) error {
		a, err := duckdb.NewAppender(dc.(driver.Conn), "", dataset, table)
		l.appender = a
		return err
	})
	if err != nil {
		conn.Close()
		done()
		return nil, fmt.Errorf("open appender on %s.%s: %w", dataset, table, err)
	}
	return l, nil
}

// Append adds every row of rec.
func (l *Loader) Append(rec arrow.RecordBatch) error {
	cols := rec.Columns()
	row := make([]driver.Value, len(cols))
	for r := 0; r < int(rec.NumRows()); r++ {
		for c, col := range cols {
			v, err := value(col, r)
			if err != nil {
				return fmt.Errorf("column %s: %w", rec.ColumnName(c), err)
			}
			row[c] = v
		}
		if err := l.appender.AppendRow(row...); err != nil {
			return fmt.Errorf("append row: %w", err)
		}
	}
	l.rows += rec.NumRows()
	return nil
}

// Rows is the number of rows appended so far.
func (l *Loader) Rows() int64 { return l.rows }

// Close flushes the appended rows.
func (l *Loader) Close() error {
	err := l.appender.Close()
	err = errors.Join(err, l.conn.Close())
	l.e.mu.Lock()
	l.e.tables.loading[l.key]--
	l.e.mu.Unlock()
	l.e.kept.drop()
	return err
}

func value(col arrow.Array, i int) (driver.Value, error) {
	if col.IsNull(i) {
		return nil, nil
	}
	switch a := col.(type) {
	case *array.Int8:
		return a.Value(i), nil
	case *array.Int16:
		return a.Value(i), nil
	case *array.Int32:
		return a.Value(i), nil
	case *array.Int64:
		return a.Value(i), nil
	case *array.Uint8:
		return int64(a.Value(i)), nil
	case *array.Uint16:
		return int64(a.Value(i)), nil
	case *array.Uint32:
		return int64(a.Value(i)), nil
	case *array.Float32:
		return a.Value(i), nil
	case *array.Float64:
		return a.Value(i), nil
	case *array.String:
		return a.Value(i), nil
	case *array.LargeString:
		return a.Value(i), nil
	case *array.Boolean:
		return a.Value(i), nil
	case *array.Date32:
		return a.Value(i).ToTime(), nil
	case *array.Date64:
		return a.Value(i).ToTime(), nil
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return a.Value(i).ToTime(unit), nil
	}
	return nil, fmt.Errorf("arrow type %s is not supported", col.DataType())
}
