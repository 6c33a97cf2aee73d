package metadb

import (
	"context"
	"database/sql/driver"
	"errors"

	"modernc.org/sqlite"
)

// SQLite spends much of a small query's metadata work parsing SQL: the
// driver parses every statement given to Exec or Query anew, and the
// gateway sends the same few dozen statements (reservations, history lines,
// audit entries) again and again. So each SQLite connection keeps the
// statements it has parsed, by their text, and runs them again with new
// arguments (SQLite re-prepares one by itself when the schema changes).
// A statement in use (its rows not yet closed) is not shared: a second use
// at the same time gets a statement of its own.

// maxStmts bounds the statements one connection keeps; past it, new texts
// are parsed each time, as before.
const maxStmts = 256

// connector opens SQLite connections that keep their statements.
type connector struct {
	dsn string
	drv *sqlite.Driver
}

func (c connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &stmtConn{Conn: conn, stmts: map[string]*keptStmt{}}, nil
}

func (c connector) Driver() driver.Driver { return c.drv }

// stmtConn is a driver connection with its kept statements. database/sql
// uses a connection from one goroutine at a time.
type stmtConn struct {
	driver.Conn
	stmts map[string]*keptStmt
}

type keptStmt struct {
	st   driver.Stmt
	busy bool // rows of it are open
}

// stmt is the kept statement for query, parsed now if it is new, or nil
// when it cannot be kept (in use, too many kept, not one the driver can
// run with a context).
func (c *stmtConn) stmt(ctx context.Context, query string) (*keptStmt, error) {
	if k, ok := c.stmts[query]; ok {
		if k.busy {
			return nil, nil
		}
		return k, nil
	}
	if len(c.stmts) >= maxStmts {
		return nil, nil
	}
	p, ok := c.Conn.(driver.ConnPrepareContext)
	if !ok {
		return nil, nil
	}
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	_, execs := st.(driver.StmtExecContext)
	_, queries := st.(driver.StmtQueryContext)
	if !execs || !queries {
		st.Close()
		return nil, nil
	}
	k := &keptStmt{st: st}
	c.stmts[query] = k
	return k, nil
}

func (c *stmtConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	k, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	return k.st.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *stmtConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	k, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	rows, err := k.st.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	k.busy = true
	return &keptRows{Rows: rows, k: k}, nil
}

// keptRows frees its statement for the next use when closed.
type keptRows struct {
	driver.Rows
	k *keptStmt
}

func (r *keptRows) Close() error {
	err := r.Rows.Close()
	r.k.busy = false
	return err
}

// ColumnTypeDatabaseTypeName keeps the driver's column types visible.
func (r *keptRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (c *stmtConn) Close() error {
	var errs []error
	for _, k := range c.stmts {
		errs = append(errs, k.st.Close())
	}
	c.stmts = nil
	return errors.Join(append(errs, c.Conn.Close())...)
}

// The driver's other abilities pass through.

func (c *stmtConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *stmtConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *stmtConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *stmtConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *stmtConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}
