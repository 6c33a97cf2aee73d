package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hospital/gateway/metadb"
)

// schemaVersion is the layout of the audit tables this package writes.
const schemaVersion = 1

// tables creates the audit tables; %BLOB% is the dialect's byte string
// type. Times are microseconds since the Unix epoch, UTC, so that they
// round-trip exactly in both dialects.
const tables = `
CREATE TABLE IF NOT EXISTS audit_entries (
	seq BIGINT PRIMARY KEY CHECK (seq > 0),
	time_us BIGINT NOT NULL,
	actor TEXT NOT NULL,
	role TEXT NOT NULL,
	action TEXT NOT NULL,
	dataset TEXT NOT NULL,
	grade TEXT NOT NULL,
	outcome TEXT NOT NULL,
	detail TEXT NOT NULL,
	retain_until_us BIGINT NOT NULL,
	hash_alg TEXT NOT NULL,
	prev_hash %BLOB% NOT NULL,
	hash %BLOB% NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_entries_actor ON audit_entries (actor, seq);
CREATE INDEX IF NOT EXISTS audit_entries_dataset ON audit_entries (dataset, seq);
CREATE INDEX IF NOT EXISTS audit_entries_time ON audit_entries (time_us);
CREATE TABLE IF NOT EXISTS audit_heads (
	seq BIGINT PRIMARY KEY,
	hash %BLOB% NOT NULL,
	signed_us BIGINT NOT NULL,
	sig_alg TEXT NOT NULL,
	public_key %BLOB% NOT NULL,
	signature %BLOB% NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_prunes (
	first_seq BIGINT PRIMARY KEY,
	prev_hash %BLOB% NOT NULL,
	pruned_us BIGINT NOT NULL,
	entries BIGINT NOT NULL,
	sig_alg TEXT NOT NULL,
	public_key %BLOB% NOT NULL,
	signature %BLOB% NOT NULL
)`

// sqliteTriggers refuse edits. The retention trigger compares with the
// current second, rounded down, so it errs on the side of keeping.
const sqliteTriggers = `
CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_entries_retention BEFORE DELETE ON audit_entries
WHEN old.retain_until_us > CAST(strftime('%s', 'now') AS INTEGER) * 1000000
BEGIN SELECT RAISE(ABORT, 'audit entry is within its retention period'); END;
CREATE TRIGGER IF NOT EXISTS audit_heads_no_update BEFORE UPDATE ON audit_heads
BEGIN SELECT RAISE(ABORT, 'signed audit heads are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN SELECT RAISE(ABORT, 'signed audit heads are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_prunes_no_update BEFORE UPDATE ON audit_prunes
BEGIN SELECT RAISE(ABORT, 'audit prune records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_prunes_no_delete BEFORE DELETE ON audit_prunes
BEGIN SELECT RAISE(ABORT, 'audit prune records are append-only'); END`

// postgresTriggers refuse edits, including TRUNCATE, which skips row
// triggers.
func postgresTriggers() []string {
	return []string{
		`CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			RAISE EXCEPTION 'audit table % is append-only', TG_TABLE_NAME;
		END $$`,
		`CREATE OR REPLACE FUNCTION audit_refuse_early_delete() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF OLD.retain_until_us > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint THEN
				RAISE EXCEPTION 'audit entry % is within its retention period', OLD.seq;
			END IF;
			RETURN OLD;
		END $$`,
		`DROP TRIGGER IF EXISTS audit_entries_no_update ON audit_entries`,
		`CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
			FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()`,
		`DROP TRIGGER IF EXISTS audit_entries_no_truncate ON audit_entries`,
		`CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
			FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()`,
		`DROP TRIGGER IF EXISTS audit_entries_retention ON audit_entries`,
		`CREATE TRIGGER audit_entries_retention BEFORE DELETE ON audit_entries
			FOR EACH ROW EXECUTE FUNCTION audit_refuse_early_delete()`,
		`DROP TRIGGER IF EXISTS audit_heads_no_change ON audit_heads`,
		`CREATE TRIGGER audit_heads_no_change BEFORE UPDATE OR DELETE ON audit_heads
			FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()`,
		`DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads`,
		`CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
			FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()`,
		`DROP TRIGGER IF EXISTS audit_prunes_no_change ON audit_prunes`,
		`CREATE TRIGGER audit_prunes_no_change BEFORE UPDATE OR DELETE ON audit_prunes
			FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()`,
		`DROP TRIGGER IF EXISTS audit_prunes_no_truncate ON audit_prunes`,
		`CREATE TRIGGER audit_prunes_no_truncate BEFORE TRUNCATE ON audit_prunes
			FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()`,
	}
}

// statements returns the migration for d, one statement per element.
func statements(d Dialect) []string {
	blob := "BLOB"
	if d == Postgres {
		blob = "BYTEA"
	}
	out := splitStatements(strings.ReplaceAll(tables, "%BLOB%", blob))
	if d == Postgres {
		return append(out, postgresTriggers()...)
	}
	// Each SQLite trigger body ends in "END"; split after it.
	for _, t := range strings.SplitAfter(sqliteTriggers, "END;") {
		out = append(out, strings.TrimSuffix(strings.TrimSpace(t), ";"))
	}
	return out
}

func splitStatements(s string) []string {
	var out []string
	for _, st := range strings.Split(s, ";") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, st)
		}
	}
	return out
}

// Migrate creates the audit tables, their indexes and the triggers that
// refuse edits, if they are missing, and records the schema version in
// audit_schema. It is idempotent, and safe to run from several processes
// at once; running it again also restores dropped triggers.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	if err := validDialect(d); err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate audit log: %w", err)
	}
	defer tx.Rollback()
	if err := lockChain(ctx, tx, d); err != nil {
		return fmt.Errorf("migrate audit log: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS audit_schema (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate audit log: %w", err)
	}
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM audit_schema`).Scan(&v); err != nil {
		return fmt.Errorf("read audit schema version: %w", err)
	}
	if v.Int64 > schemaVersion {
		return fmt.Errorf("audit schema is at version %d, newer than this gateway's %d", v.Int64, schemaVersion)
	}
	if !v.Valid {
		legacy, err := tableExists(ctx, tx, d, "audit_entries")
		if err != nil {
			return err
		}
		if legacy {
			return errors.New("migrate audit log: audit_entries exists but has no schema version; it predates this layout and must be exported and moved aside by hand")
		}
	}
	for _, st := range statements(d) {
		if _, err := tx.ExecContext(ctx, st); err != nil {
			return fmt.Errorf("migrate audit log: %w", err)
		}
	}
	if !v.Valid {
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_schema (version, applied_us) VALUES ($1, $2)`,
			schemaVersion, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("record audit schema version: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit audit migration: %w", err)
	}
	return nil
}

func tableExists(ctx context.Context, tx *sql.Tx, d Dialect, name string) (bool, error) {
	q := `SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = $1`
	if d == Postgres {
		q = `SELECT to_regclass($1) IS NOT NULL`
	}
	var ok bool
	if err := tx.QueryRowContext(ctx, q, name).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for table %s: %w", name, err)
	}
	return ok, nil
}

// schemaVersionOf returns the recorded schema version, 0 when there is none.
func schemaVersionOf(ctx context.Context, db *sql.DB) (int64, error) {
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM audit_schema`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read audit schema version (has Migrate run?): %w", err)
	}
	return v.Int64, nil
}

// Open migrates the audit log's tables in the metadata database and opens
// the log there. The log works on the database's writer pool directly, as
// VerifyDB does on any copy of it: verification must not depend on the
// gateway that wrote the log.
func Open(ctx context.Context, meta *metadb.DB, cfg Config) (*Log, error) {
	cfg.Dialect = meta.Dialect()
	if err := Migrate(ctx, meta.Writer(), cfg.Dialect); err != nil {
		return nil, err
	}
	return New(ctx, meta.Writer(), cfg)
}
