// Package metadb owns the gateway's metadata database: the connection to
// SQLite (embedded, the default) or PostgreSQL (production), its dialect,
// the schema migrations of each component, and transactions. The catalog,
// the quota, the alerts and the audit log each keep their own tables in it
// and use it directly; none reaches through another. All SQL is written
// once, with $N placeholders, for both databases.
package metadb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"
	"modernc.org/sqlite"
)

// Dialect is the SQL flavour of the database.
type Dialect int

// The supported databases.
const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is the metadata database.
type DB struct {
	write *sql.DB
	// read serves reads. For SQLite it is a separate pool of connections,
	// so reads run beside the one writer (WAL); for PostgreSQL it is write.
	read    *sql.DB
	dialect Dialect
	// group batches SQLite's write transactions into shared commits
	// (see committer); nil for PostgreSQL, whose concurrent commits
	// already share the log's flushes.
	group *committer
}

// Open opens the database at dsn: a postgres:// or postgresql:// URL, or a
// path to an SQLite file (created if missing), and makes sure the table of
// migrations exists.
func Open(ctx context.Context, dsn string) (*DB, error) {
	d := &DB{}
	var err error
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		d.dialect = Postgres
		d.write, err = sql.Open("pgx", dsn)
		if err == nil {
			d.write.SetMaxOpenConns(16)
			d.read = d.write
		}
	} else {
		path := strings.TrimPrefix(dsn, "sqlite:")
		q := url.Values{}
		for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(FULL)", "foreign_keys(ON)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		// Both pools keep their connections' parsed statements (see
		// connector).
		d.write = sql.OpenDB(connector{dsn: "file:" + path + "?" + q.Encode(), drv: &sqlite.Driver{}})
		// One writer at a time is SQLite's rule; one connection keeps
		// writers queued in Go instead of spinning on SQLITE_BUSY.
		d.write.SetMaxOpenConns(1)
		q.Set("_txlock", "deferred")
		d.read = sql.OpenDB(connector{dsn: "file:" + path + "?" + q.Encode(), drv: &sqlite.Driver{}})
		d.read.SetMaxOpenConns(4)
		// Kept open: a connection opened anew parses the schema and
		// loses the statements it kept.
		d.read.SetMaxIdleConns(4)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata store: %w", err)
	}
	if err := d.write.PingContext(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("connect to metadata store: %w", err)
	}
	if err := d.createMigrations(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("create migrations table: %w", err)
	}
	if d.dialect == SQLite {
		d.group = newCommitter(d.write)
	}
	return d, nil
}

// Dialect is the database's SQL flavour.
func (d *DB) Dialect() Dialect { return d.dialect }

// Writer is the pool that writes (and reads what must see the latest
// writes).
func (d *DB) Writer() *sql.DB { return d.write }

// Reader is the pool for reads that may run beside a writer.
func (d *DB) Reader() *sql.DB { return d.read }

// Begin starts a write transaction of the caller's own, outside the group
// commit; Tx is the one to use where callers run side by side.
func (d *DB) Begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := d.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	return tx, nil
}

// Tx runs fn in one write transaction, committed when fn returns nil, and
// returns once the commit is durable. With SQLite the transaction may
// share its commit with other callers' (see committer): fn must then not
// keep tx, commit or roll it back, and must return tx's errors (after one,
// nothing fn wrote is kept).
func (d *DB) Tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if d.group != nil {
		return d.group.do(ctx, fn, false)
	}
	return d.tx(ctx, fn, false)
}

// TxDeferred runs fn as Tx does, but returns once the transaction has
// committed, without waiting for the disk to hold it: it is durable once
// any later Tx has returned, or lost with it in a crash of the machine
// before then. That is for a write that nothing may act on until the same
// caller's later Tx, as a budget reservation, which no answer follows
// before the release's commit.
//
// Why a later Tx covers it: both databases log commits in order (SQLite's
// write-ahead log, PostgreSQL's WAL), and waiting for one commit to reach
// the disk waits for the log up to it, every earlier commit included. With
// SQLite the batch is committed with synchronous=NORMAL (WAL frames
// written, not synced); with PostgreSQL with synchronous_commit off.
func (d *DB) TxDeferred(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if d.group != nil {
		return d.group.do(ctx, fn, true)
	}
	return d.tx(ctx, fn, true)
}

func (d *DB) tx(ctx context.Context, fn func(tx *sql.Tx) error, deferred bool) error {
	tx, err := d.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if deferred && d.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit TO OFF"); err != nil {
			tx.Rollback()
			return err
		}
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// migrationsLock is the PostgreSQL advisory lock that serialises schema
// changes between gateways sharing a database.
const migrationsLock = 7426001

// createMigrations makes sure the table of applied migrations exists.
// PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic: two gateways
// opening one new database at once can both try to create the table, and
// one fails on the catalog's unique index, so they take the migrations'
// lock for it.
func (d *DB) createMigrations(ctx context.Context) error {
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, version BIGINT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, version))`
	if d.dialect != Postgres {
		_, err := d.write.ExecContext(ctx, create)
		return err
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationsLock); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, create)
		return err
	}, false)
}

// Migrate applies, in order and each once, the schema changes of one
// component of the gateway (catalog, quota, alerts, ...). Never edit a
// migration that has shipped; append a new one.
func (d *DB) Migrate(ctx context.Context, component string, stmts []string) error {
	for i, m := range stmts {
		version := i + 1
		err := d.Tx(ctx, func(tx *sql.Tx) error {
			if d.dialect == Postgres {
				if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationsLock); err != nil {
					return err
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE component = $1 AND version = $2`, component, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)`,
				component, version, time.Now().UTC().Format(time.RFC3339Nano))
			return err
		})
		if err != nil {
			return fmt.Errorf("apply %s migration %d: %w", component, version, err)
		}
	}
	return nil
}

// Close closes the database, once the transactions being committed are.
func (d *DB) Close() error {
	if d.group != nil {
		d.group.close()
	}
	if d.read != nil && d.read != d.write {
		d.read.Close()
	}
	if d.write == nil {
		return nil
	}
	return d.write.Close()
}

// NewID returns a random identifier with a readable prefix ("qry_…").
func NewID(prefix string) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the platform's randomness is gone; nothing is safe
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}
