// Package audit is the gateway's append-only, tamper-evident record of every
// operation, as Articles 11, 12, 19 and 22(5) of the 2026 healthcare data
// security measures require: queries with their SQL, cost and outcome,
// governance actions, logins and token use, and every refusal.
//
// The log lives in the gateway's metadata store, SQLite or PostgreSQL, in the
// tables that Migrate creates. Each entry is hash-chained to the one before
// it: its hash covers the previous hash and a length-prefixed encoding of all
// its fields, with SM3 by default or SHA-256, the algorithm being recorded
// with each entry. Every Config.SignEvery entries, every Config.SignInterval
// while KeepSigned runs, and on Checkpoint and Close, the head of the chain
// is signed (SM2 by default) and the signature stored in audit_heads. Verify
// and VerifyDB walk the chain in pages and name the first entry that was
// edited, deleted or reordered, check every signed head against the
// recomputed chain, and require the chain to end at a signed head, or in a
// tail no longer and no older than a running gateway leaves unsigned (Tail).
//
// Whoever holds the database can still replace it with an earlier genuine
// state, and whoever also holds the signing key can rewrite and re-sign it.
// Neither is visible from inside the database, so auditors keep
// checkpoints outside it: a Checkpoint is a signed head (size, head hash,
// time, signature), and verification with VerifyOptions.Since proves that
// the log still extends one, as entry Size must still hash to its head.
// The signing key belongs outside the data directory, and verifiers should
// use their own copy of the public key (VerifyOptions.PublicKey).
//
// A Merkle tree with consistency proofs (RFC 6962) was considered and not
// chosen. Its gain is that a client holding only two tree heads can check a
// short proof that one log extends the other; here the verifier reads the
// whole log anyway, to recompute every entry's hash, and with the log in
// hand comparing one hash at the checkpoint's position is the same proof.
// A chain also keeps appends to one row and one hash, and a prune to a
// watermark, where a tree needs its interior nodes stored or recomputed.
//
// Entries are kept at least one year, three years for entries about core
// data or about providing important data (RetentionFor). Database triggers
// refuse UPDATE of the log and DELETE of entries still within retention, so
// that even direct SQL cannot quietly rewrite it; an attacker who drops the
// triggers is still caught by verification. Prune removes only an expired
// prefix of the chain and records a watermark, so that the remaining chain
// still verifies.
//
// Appends are serialised in the database so that sequence numbers are
// gap-free and the chain linear even with several gateway processes: with
// PostgreSQL by a transaction-scoped advisory lock, with SQLite by its single
// writer. For SQLite the *sql.DB must therefore begin its transactions with
// BEGIN IMMEDIATE, which modernc.org/sqlite does when the DSN carries
// _txlock=immediate, for example
//
//	file:PATH?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_txlock=immediate
//
// For PostgreSQL, transactions given to AppendTx must run at READ COMMITTED
// (the default) so that the chain head read after taking the lock is current.
package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/hospital/gateway/metadb"
)

// Dialect is the SQL flavour of the store the log lives in (the metadata
// database's, metadb.Dialect). Statements use $1, $2 placeholders in both.
type Dialect = metadb.Dialect

// The supported dialects.
const (
	SQLite   = metadb.SQLite
	Postgres = metadb.Postgres
)

func validDialect(d Dialect) error {
	if d != SQLite && d != Postgres {
		return fmt.Errorf("unknown audit store dialect %d", int(d))
	}
	return nil
}

// ErrRetention is wrapped by the error Prune returns when it would delete
// entries whose retention date has not passed.
var ErrRetention = errors.New("audit entries are within their retention period")

// The hash algorithms an entry can be chained with.
const (
	HashSM3    = "sm3"
	HashSHA256 = "sha256"
)

// hashSize is the size of both algorithms' digests, and of entry 1's
// all-zero previous hash.
const hashSize = 32

// Digest is a hash in the chain. It prints and marshals as lower-case hex.
type Digest []byte

// String returns d in hex.
func (d Digest) String() string { return hex.EncodeToString(d) }

// MarshalText encodes d as hex.
func (d Digest) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(d)), nil }

// UnmarshalText decodes hex.
func (d *Digest) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("decode digest: %w", err)
	}
	*d = v
	return nil
}

// Entry is one audit record. The caller fills Actor, Role, Action, Dataset,
// Grade, Outcome and Detail; Append fills the rest.
type Entry struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is the person or service acting; "" for an unauthenticated
	// caller.
	Actor string `json:"actor"`
	Role  string `json:"role,omitempty"`
	// Action is what was done, such as "query", "grant.approve",
	// "token.issue" or "login". Required.
	Action string `json:"action"`
	// Dataset names the dataset concerned; several are joined with commas.
	Dataset string `json:"dataset,omitempty"`
	// Grade is the data's grade: "core", "important", "general" or "".
	Grade string `json:"grade,omitempty"`
	// Outcome is "ok" or an error code such as "forbidden". Required.
	Outcome string `json:"outcome"`
	// Detail is a JSON object (the SQL, epsilon spent and so on). Append
	// stores it in canonical form: keys sorted, no insignificant space, no
	// HTML escaping.
	Detail json.RawMessage `json:"detail,omitempty"`
	// RetainUntil is when the entry may be pruned: Time plus RetentionFor,
	// or a later time the caller set (a legal hold).
	RetainUntil time.Time `json:"retain_until"`
	// Algorithm is the hash algorithm of this entry, HashSM3 or HashSHA256.
	Algorithm string `json:"algorithm"`
	PrevHash  Digest `json:"prev_hash"`
	Hash      Digest `json:"hash"`
}

// DefaultSignInterval is Config.SignInterval's default.
const DefaultSignInterval = 2 * time.Second

// Config configures a Log.
type Config struct {
	// Dialect is the SQL flavour of the db given to New.
	Dialect Dialect
	// Hash is HashSM3 (the default) or HashSHA256.
	Hash string
	// Signer signs chain heads; nil disables signing. An *sm2.PrivateKey
	// from github.com/emmansun/gmsm/sm2 is the expected choice; signers
	// with ECDSA P-256 or Ed25519 keys also work.
	Signer crypto.Signer
	// SignEvery is how often, in entries, the head is signed (default 100).
	SignEvery int
	// SignInterval is how often KeepSigned signs the head when entries
	// arrived since the last signature (default 2s).
	SignInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Log appends to and reads the audit log in one database. It is safe for
// concurrent use; other processes may append to the same database at the
// same time.
type Log struct {
	db     *sql.DB
	cfg    Config
	signer *headSigner
	// sem admits one Append, Prune or Checkpoint of this process at a time,
	// so that they queue here instead of contending for the database lock.
	sem chan struct{}
}

// New returns a log over db, whose tables Migrate must have created.
func New(ctx context.Context, db *sql.DB, cfg Config) (*Log, error) {
	if err := validDialect(cfg.Dialect); err != nil {
		return nil, err
	}
	if cfg.Hash == "" {
		cfg.Hash = HashSM3
	}
	if _, err := newHash(cfg.Hash); err != nil {
		return nil, fmt.Errorf("audit config: %w", err)
	}
	switch {
	case cfg.SignEvery == 0:
		cfg.SignEvery = 100
	case cfg.SignEvery < 0:
		return nil, fmt.Errorf("audit config: SignEvery is %d, want a positive number", cfg.SignEvery)
	}
	switch {
	case cfg.SignInterval == 0:
		cfg.SignInterval = DefaultSignInterval
	case cfg.SignInterval < 0:
		return nil, fmt.Errorf("audit config: SignInterval is %s, want a positive duration", cfg.SignInterval)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{db: db, cfg: cfg, sem: make(chan struct{}, 1)}
	if cfg.Signer != nil {
		s, err := newHeadSigner(cfg.Signer)
		if err != nil {
			return nil, fmt.Errorf("audit config: %w", err)
		}
		l.signer = s
	}
	v, err := schemaVersionOf(ctx, db)
	if err != nil {
		return nil, err
	}
	if v != schemaVersion {
		return nil, fmt.Errorf("audit schema is at version %d, this gateway needs %d: run Migrate", v, schemaVersion)
	}
	return l, nil
}

func (l *Log) lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for audit log: %w", ctx.Err())
	}
}

func (l *Log) unlock() { <-l.sem }

// beginWrite starts a transaction that appends to or prunes the chain, and
// takes the chain lock in PostgreSQL.
func (l *Log) beginWrite(ctx context.Context) (*sql.Tx, error) {
	var opts *sql.TxOptions
	if l.cfg.Dialect == Postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := l.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("begin audit transaction: %w", err)
	}
	if err := lockChain(ctx, tx, l.cfg.Dialect); err != nil {
		tx.Rollback()
		return nil, err
	}
	return tx, nil
}

// chainLockKey is the PostgreSQL advisory lock that serialises writers of
// the chain across processes.
const chainLockKey = 0x6761_7564_6974 // "gaudit"

func lockChain(ctx context.Context, tx *sql.Tx, d Dialect) error {
	if d != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(chainLockKey)); err != nil {
		return fmt.Errorf("lock audit chain: %w", err)
	}
	return nil
}

// Append adds e to the log in a transaction of its own and returns it as
// stored. An error means nothing was written.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	e, err := l.prepare(e)
	if err != nil {
		return Entry{}, err
	}
	if err := l.lock(ctx); err != nil {
		return Entry{}, err
	}
	defer l.unlock()
	tx, err := l.beginWrite(ctx)
	if err != nil {
		return Entry{}, err
	}
	defer tx.Rollback()
	out, err := l.insert(ctx, tx, e)
	if err != nil {
		return Entry{}, err
	}
	if err := tx.Commit(); err != nil {
		return Entry{}, fmt.Errorf("commit audit entry: %w", err)
	}
	return out, nil
}

// AppendTx adds e inside the caller's transaction, so that a change and its
// audit entry commit or roll back together. The entry is durable only once
// the caller commits. For SQLite, tx must have begun with BEGIN IMMEDIATE;
// for PostgreSQL, at READ COMMITTED, and it holds the chain lock until it
// ends, so keep it short.
func (l *Log) AppendTx(ctx context.Context, tx *sql.Tx, e Entry) (Entry, error) {
	e, err := l.prepare(e)
	if err != nil {
		return Entry{}, err
	}
	// No in-process lock here: the caller's transaction may already hold
	// the database's write lock, and waiting on l.sem behind an Append that
	// waits for that lock would deadlock.
	if err := lockChain(ctx, tx, l.cfg.Dialect); err != nil {
		return Entry{}, err
	}
	return l.insert(ctx, tx, e)
}

// prepare checks the caller's fields and canonicalises the detail; it needs
// no lock.
func (l *Log) prepare(e Entry) (Entry, error) {
	if e.Action == "" {
		return Entry{}, errors.New("audit entry has no action")
	}
	if e.Outcome == "" {
		return Entry{}, fmt.Errorf("audit entry %q has no outcome", e.Action)
	}
	switch e.Grade {
	case "", "general", "important", "core":
	default:
		return Entry{}, fmt.Errorf("audit entry %q: unknown grade %q", e.Action, e.Grade)
	}
	d, err := canonicalDetail(e.Detail)
	if err != nil {
		return Entry{}, fmt.Errorf("audit entry %q: %w", e.Action, err)
	}
	e.Detail = d
	e.Algorithm = l.cfg.Hash
	return e, nil
}

// insert chains e to the current head and writes it, all inside tx, which
// holds the chain lock.
func (l *Log) insert(ctx context.Context, tx *sql.Tx, e Entry) (Entry, error) {
	last, prev, err := chainHead(ctx, tx)
	if err != nil {
		return Entry{}, err
	}
	e.Seq = last + 1
	e.PrevHash = prev
	e.Time = l.cfg.Now().UTC().Truncate(time.Microsecond)
	retain := e.Time.Add(RetentionFor(e))
	if hold := e.RetainUntil.UTC().Truncate(time.Microsecond); hold.After(retain) {
		retain = hold
	}
	e.RetainUntil = retain
	if e.Hash, err = entryHash(e); err != nil {
		return Entry{}, err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_entries
		(seq, time_us, actor, role, action, dataset, grade, outcome, detail, retain_until_us, hash_alg, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		e.Seq, e.Time.UnixMicro(), e.Actor, e.Role, e.Action, e.Dataset, e.Grade, e.Outcome, string(e.Detail),
		e.RetainUntil.UnixMicro(), e.Algorithm, []byte(e.PrevHash), []byte(e.Hash))
	if err != nil {
		return Entry{}, fmt.Errorf("write audit entry %d: %w", e.Seq, err)
	}
	if l.signer != nil && e.Seq%int64(l.cfg.SignEvery) == 0 {
		if _, err := l.signHead(ctx, tx, e.Seq, e.Hash); err != nil {
			return Entry{}, err
		}
	}
	return e, nil
}

// chainHead returns the last sequence number and hash of the chain: the
// newest entry, else the prune watermark, else 0 and the zero hash.
func chainHead(ctx context.Context, tx *sql.Tx) (int64, Digest, error) {
	var seq int64
	var h []byte
	err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1`).Scan(&seq, &h)
	if err == nil {
		return seq, h, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, nil, fmt.Errorf("read audit chain head: %w", err)
	}
	w, err := readWatermark(ctx, tx)
	if err != nil {
		return 0, nil, err
	}
	if w != nil {
		return w.firstSeq - 1, w.prevHash, nil
	}
	return 0, make(Digest, hashSize), nil
}

// RetentionFor is how long e must be kept: three years when it concerns
// core data, or provides important data (a query, export, download,
// transfer and the like); one year otherwise. Years are counted as 366 days
// (1096 for three) so that leap days never shorten them.
func RetentionFor(e Entry) time.Duration {
	const day = 24 * time.Hour
	if e.Grade == "core" || (e.Grade == "important" && providing(e.Action)) {
		return 1096 * day
	}
	return 366 * day
}

// providing reports whether action hands data, or answers computed from
// it, to someone: any dot-separated part of it names such a step.
func providing(action string) bool {
	for _, part := range strings.Split(action, ".") {
		switch part {
		case "query", "export", "provide", "share", "transfer", "download", "release":
			return true
		}
	}
	return false
}

// canonicalDetail returns raw as a canonical JSON object: sorted keys, no
// insignificant space, no HTML escaping, numbers as written. Empty and null
// become {}.
func canonicalDetail(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("detail is not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("detail has data after its JSON object")
	}
	switch v.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case map[string]any:
	default:
		return nil, errors.New("detail must be a JSON object")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode detail: %w", err)
	}
	return json.RawMessage(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

func newHash(algo string) (hash.Hash, error) {
	switch algo {
	case HashSM3:
		return sm3.New(), nil
	case HashSHA256:
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("unknown hash algorithm %q (want %s or %s)", algo, HashSM3, HashSHA256)
}

// entryEncodingTag starts every entry's encoding, so that a change of
// encoding can never collide with this one.
const entryEncodingTag = "hospital-gateway/audit-entry/v1"

// entryHash is H(prev_hash || encoding of e's fields), H being
// e.Algorithm. Every field is length-prefixed, so field boundaries are
// unambiguous.
func entryHash(e Entry) (Digest, error) {
	h, err := newHash(e.Algorithm)
	if err != nil {
		return nil, err
	}
	if len(e.PrevHash) != hashSize {
		return nil, fmt.Errorf("previous hash of entry %d has %d bytes, want %d", e.Seq, len(e.PrevHash), hashSize)
	}
	var enc encoder
	enc.bytes([]byte(entryEncodingTag))
	enc.str(e.Algorithm)
	enc.int(e.Seq)
	enc.str(e.Time.UTC().Format(time.RFC3339Nano))
	enc.str(e.Actor)
	enc.str(e.Role)
	enc.str(e.Action)
	enc.str(e.Dataset)
	enc.str(e.Grade)
	enc.str(e.Outcome)
	enc.bytes(e.Detail)
	enc.str(e.RetainUntil.UTC().Format(time.RFC3339Nano))
	h.Write(e.PrevHash)
	h.Write(enc.buf)
	return h.Sum(nil), nil
}

// encoder builds a length-prefixed binary encoding: each field is its
// length as 4 big-endian bytes, then its bytes; integers are 8 big-endian
// bytes.
type encoder struct{ buf []byte }

func (e *encoder) bytes(b []byte) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(b)))
	e.buf = append(e.buf, b...)
}

func (e *encoder) str(s string) {
	e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *encoder) int(v int64) { e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(v)) }
