// Package audit is the gateway's append-only, tamper-evident record of every
// operation (Art. 12, 19, 22(5) of the 2026 Measures): queries with their SQL,
// cost and outcome, governance actions, token use and every refusal.
//
// Entries live in the metadata store (SQLite or PostgreSQL) and form a hash
// chain: each entry's hash covers the previous hash and every field of the
// entry, with SM3, the national algorithm, by default (SHA-256 selectable).
// Every SignEvery entries, and at each checkpoint, the chain head is signed
// with the gateway's SM2 key. Editing, deleting or reordering any entry breaks
// the chain; replacing the whole tail breaks the signed heads. Triggers in
// the database refuse UPDATE, and DELETE before an entry's retention date, so
// even direct SQL cannot quietly rewrite history; Verify catches whoever
// drops the triggers.
//
// Retention: at least one year, three years for entries about core data or
// about providing important data (Art. 11, 19). Prune removes only an expired
// prefix of the chain and records a watermark so that the rest still verifies.
package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/emmansun/gmsm/smx509"
)

// Dialect is the SQL flavour of the store the log lives in. Placeholders are
// $N in both.
type Dialect int

// The dialects.
const (
	SQLite Dialect = iota
	Postgres
)

// ErrRetention is returned when pruning would delete entries whose
// retention date has not passed.
var ErrRetention = errors.New("audit entries are within their retention period")

// timeFormat is used for stored times; fixed-width so that text order is
// time order, and the database triggers can compare with now.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

// Config configures a Log.
type Config struct {
	Dialect Dialect
	// Hash is "sm3" (default) or "sha256".
	Hash string
	// Signer signs chain heads; nil disables signing.
	Signer *sm2.PrivateKey
	// SignEvery is how often the head is signed (default 100 entries).
	SignEvery int64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Entry is one audit record.
type Entry struct {
	Seq         int64           `json:"seq"`
	Time        time.Time       `json:"time"`
	Actor       string          `json:"actor"`
	Role        string          `json:"role,omitempty"`
	Action      string          `json:"action"`
	Dataset     string          `json:"dataset,omitempty"`
	Grade       string          `json:"grade,omitempty"`
	Outcome     string          `json:"outcome"`
	Detail      json.RawMessage `json:"detail,omitempty"`
	RetainUntil time.Time       `json:"retain_until"`
	Algorithm   string          `json:"algorithm"`
	PrevHash    string          `json:"prev_hash"`
	Hash        string          `json:"hash"`
}

// Log is the audit log.
type Log struct {
	db  *sql.DB
	cfg Config
}

// tables are the same in both dialects; only the triggers that refuse
// edits differ.
var tables = []string{
	`CREATE TABLE IF NOT EXISTS audit_entries (seq BIGINT PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
		action TEXT NOT NULL, dataset TEXT NOT NULL, grade TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
		retain_until TEXT NOT NULL, algo TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)`,
	`CREATE INDEX IF NOT EXISTS audit_entries_actor ON audit_entries (actor, ts)`,
	`CREATE INDEX IF NOT EXISTS audit_entries_dataset ON audit_entries (dataset, ts)`,
	`CREATE TABLE IF NOT EXISTS audit_heads (seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, ts TEXT NOT NULL, signature TEXT NOT NULL, public_key TEXT NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS audit_watermark (id INTEGER PRIMARY KEY, first_seq BIGINT NOT NULL, prev_hash TEXT NOT NULL)`,
}

var triggers = map[Dialect][]string{
	SQLite: {
		`CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries
			BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END`,
		`CREATE TRIGGER IF NOT EXISTS audit_entries_retention BEFORE DELETE ON audit_entries
			WHEN old.retain_until > strftime('%Y-%m-%dT%H:%M:%S.000000000Z', 'now')
			BEGIN SELECT RAISE(ABORT, 'audit entry is within its retention period'); END`,
	},
	Postgres: {
		`CREATE OR REPLACE FUNCTION audit_entries_guard() RETURNS trigger AS $$
			BEGIN
				IF TG_OP = 'UPDATE' THEN RAISE EXCEPTION 'audit entries are append-only'; END IF;
				IF OLD.retain_until > to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.000000000"Z"') THEN
					RAISE EXCEPTION 'audit entry is within its retention period';
				END IF;
				RETURN OLD;
			END $$ LANGUAGE plpgsql`,
		`DROP TRIGGER IF EXISTS audit_entries_guard ON audit_entries`,
		`CREATE TRIGGER audit_entries_guard BEFORE UPDATE OR DELETE ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_entries_guard()`,
	},
}

// Migrate creates the audit tables and triggers if they are missing.
func Migrate(ctx context.Context, db *sql.DB, d Dialect) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate audit log: %w", err)
	}
	defer tx.Rollback()
	if d == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7426002)`); err != nil {
			return fmt.Errorf("migrate audit log: %w", err)
		}
	}
	for _, m := range append(append([]string{}, tables...), triggers[d]...) {
		if _, err := tx.ExecContext(ctx, m); err != nil {
			return fmt.Errorf("migrate audit log: %w", err)
		}
	}
	return tx.Commit()
}

// New opens the log over db. For SQLite, db must begin transactions with
// BEGIN IMMEDIATE (the _txlock=immediate DSN option) so that appends are
// serialised; catalog.Open does this.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Log, error) {
	if cfg.Hash == "" {
		cfg.Hash = "sm3"
	}
	if cfg.Hash != "sm3" && cfg.Hash != "sha256" {
		return nil, fmt.Errorf("audit hash %q: use sm3 or sha256", cfg.Hash)
	}
	if cfg.SignEvery <= 0 {
		cfg.SignEvery = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Log{db: db, cfg: cfg}, nil
}

func newHash(algo string) (hash.Hash, error) {
	switch algo {
	case "sm3":
		return sm3.New(), nil
	case "sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("unknown hash algorithm %q", algo)
}

// RetentionFor is how long an entry must be kept: three years for entries
// about core data or about providing important data, one year otherwise.
func RetentionFor(e Entry) time.Duration {
	const year = 365 * 24 * time.Hour
	switch {
	case e.Grade == "core":
		return 3 * year
	case e.Grade == "important" && (e.Action == "query" || strings.HasPrefix(e.Action, "export")):
		return 3 * year
	}
	return year
}

// digest computes an entry's hash from its fields and the previous hash.
func digest(e Entry) (string, error) {
	h, err := newHash(e.Algorithm)
	if err != nil {
		return "", err
	}
	prev, err := hex.DecodeString(e.PrevHash)
	if err != nil {
		return "", fmt.Errorf("prev hash of %d: %w", e.Seq, err)
	}
	h.Write(prev)
	for _, f := range []string{strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(timeFormat), e.Actor, e.Role, e.Action,
		e.Dataset, e.Grade, e.Outcome, string(e.Detail), e.RetainUntil.UTC().Format(timeFormat), e.Algorithm} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var zeroHash = strings.Repeat("0", 64)

// Append adds e to the log in its own transaction.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return Entry{}, fmt.Errorf("append audit entry: %w", err)
	}
	defer tx.Rollback()
	out, err := l.AppendTx(ctx, tx, e)
	if err != nil {
		return Entry{}, err
	}
	if err := tx.Commit(); err != nil {
		return Entry{}, fmt.Errorf("commit audit entry: %w", err)
	}
	return out, nil
}

// AppendTx adds e inside the caller's transaction, so that a change and its
// audit entry commit or fail together.
func (l *Log) AppendTx(ctx context.Context, tx *sql.Tx, e Entry) (Entry, error) {
	if l.cfg.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7426003)`); err != nil {
			return Entry{}, fmt.Errorf("lock audit chain: %w", err)
		}
	}
	var last sql.NullInt64
	var prev sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1`).Scan(&last, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.QueryRowContext(ctx, `SELECT first_seq - 1, prev_hash FROM audit_watermark WHERE id = 1`).Scan(&last, &prev)
		if errors.Is(err, sql.ErrNoRows) {
			err = nil
		}
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read audit chain head: %w", err)
	}
	e.Seq = last.Int64 + 1
	e.PrevHash = zeroHash
	if prev.Valid {
		e.PrevHash = prev.String
	}
	e.Time = l.cfg.Now().UTC().Truncate(time.Microsecond)
	e.RetainUntil = e.Time.Add(RetentionFor(e))
	e.Algorithm = l.cfg.Hash
	if len(e.Detail) == 0 {
		e.Detail = json.RawMessage("{}")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, e.Detail); err != nil {
		return Entry{}, fmt.Errorf("audit detail is not JSON: %w", err)
	}
	e.Detail = compact.Bytes()
	if e.Hash, err = digest(e); err != nil {
		return Entry{}, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_entries (seq, ts, actor, role, action, dataset, grade, outcome, detail, retain_until, algo, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		e.Seq, e.Time.Format(timeFormat), e.Actor, e.Role, e.Action, e.Dataset, e.Grade, e.Outcome, string(e.Detail),
		e.RetainUntil.Format(timeFormat), e.Algorithm, e.PrevHash, e.Hash)
	if err != nil {
		return Entry{}, fmt.Errorf("write audit entry: %w", err)
	}
	if l.cfg.Signer != nil && e.Seq%l.cfg.SignEvery == 0 {
		if err := l.signHead(ctx, tx, e.Seq, e.Hash); err != nil {
			return Entry{}, err
		}
	}
	return e, nil
}

func headMessage(seq int64, hash string) []byte {
	return []byte(fmt.Sprintf("gateway-audit-head\x00%d\x00%s", seq, hash))
}

func (l *Log) signHead(ctx context.Context, tx *sql.Tx, seq int64, hash string) error {
	sig, err := l.cfg.Signer.SignWithSM2(rand.Reader, nil, headMessage(seq, hash))
	if err != nil {
		return fmt.Errorf("sign audit head: %w", err)
	}
	pub, err := smx509.MarshalPKIXPublicKey(&l.cfg.Signer.PublicKey)
	if err != nil {
		return fmt.Errorf("encode audit public key: %w", err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_heads (seq, hash, ts, signature, public_key) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (seq) DO NOTHING`, seq, hash, l.cfg.Now().UTC().Format(timeFormat), hex.EncodeToString(sig), hex.EncodeToString(pub))
	if err != nil {
		return fmt.Errorf("store signed audit head: %w", err)
	}
	return nil
}

// Checkpoint signs the current head now.
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.cfg.Signer == nil {
		return nil
	}
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("checkpoint audit log: %w", err)
	}
	defer tx.Rollback()
	var seq int64
	var h string
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1`).Scan(&seq, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoint audit log: %w", err)
	}
	if err := l.signHead(ctx, tx, seq, h); err != nil {
		return err
	}
	return tx.Commit()
}

// Close signs the head so that the tail written since the last signature is
// covered too.
func (l *Log) Close(ctx context.Context) error { return l.Checkpoint(ctx) }

// Filter selects entries for List.
type Filter struct {
	Actor, Dataset, Action, Outcome string
	From, To                        time.Time
	AfterSeq                        int64
	Limit                           int
}

const entryCols = `seq, ts, actor, role, action, dataset, grade, outcome, detail, retain_until, algo, prev_hash, hash`

func scanEntry(rows *sql.Rows) (Entry, error) {
	var e Entry
	var ts, retain, detail string
	if err := rows.Scan(&e.Seq, &ts, &e.Actor, &e.Role, &e.Action, &e.Dataset, &e.Grade, &e.Outcome, &detail, &retain, &e.Algorithm, &e.PrevHash, &e.Hash); err != nil {
		return Entry{}, err
	}
	e.Time, _ = time.Parse(timeFormat, ts)
	e.RetainUntil, _ = time.Parse(timeFormat, retain)
	e.Detail = json.RawMessage(detail)
	return e, nil
}

// List returns entries matching f in sequence order.
func (l *Log) List(ctx context.Context, f Filter) ([]Entry, error) {
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 1000
	}
	from, to := "", "9999"
	if !f.From.IsZero() {
		from = f.From.UTC().Format(timeFormat)
	}
	if !f.To.IsZero() {
		to = f.To.UTC().Format(timeFormat)
	}
	rows, err := l.db.QueryContext(ctx, `SELECT `+entryCols+` FROM audit_entries
		WHERE seq > $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR dataset = $3 OR dataset LIKE $3 || ',%' OR dataset LIKE '%,' || $3)
		AND ($4 = '' OR action = $4) AND ($5 = '' OR outcome = $5) AND ts >= $6 AND ts < $7 ORDER BY seq LIMIT $8`,
		f.AfterSeq, f.Actor, f.Dataset, f.Action, f.Outcome, from, to, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit entries: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Prune deletes entries older than before whose retention has passed. Only
// a prefix of the chain is removed, and a watermark keeps the remaining
// chain verifiable. It fails with ErrRetention when an entry older than
// before is still within its retention period.
func (l *Log) Prune(ctx context.Context, before time.Time) (int64, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	defer tx.Rollback()
	if l.cfg.Dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7426003)`); err != nil {
			return 0, fmt.Errorf("lock audit chain: %w", err)
		}
	}
	cut := before.UTC().Format(timeFormat)
	now := l.cfg.Now().UTC().Format(timeFormat)
	var held int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit_entries WHERE ts < $1 AND retain_until > $2`, cut, now).Scan(&held); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if held > 0 {
		return 0, fmt.Errorf("%w: %d entries before %s must be kept until their retention date", ErrRetention, held, before.Format(time.DateOnly))
	}
	var last sql.NullInt64
	var lastHash sql.NullString
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries WHERE ts < $1 ORDER BY seq DESC LIMIT 1`, cut).Scan(&last, &lastHash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM audit_entries WHERE seq <= $1`, last.Int64)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	n, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `DELETE FROM audit_heads WHERE seq <= $1`, last.Int64); err != nil {
		return 0, fmt.Errorf("prune audit heads: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_watermark (id, first_seq, prev_hash) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET first_seq = excluded.first_seq, prev_hash = excluded.prev_hash`, last.Int64+1, lastHash.String); err != nil {
		return 0, fmt.Errorf("record prune watermark: %w", err)
	}
	return n, tx.Commit()
}
