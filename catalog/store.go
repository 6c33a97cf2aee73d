package catalog

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm3"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/metadb"
)

// Dialect is the metadata database's SQL flavour (metadb.Dialect).
type Dialect = metadb.Dialect

// The supported metadata stores.
const (
	SQLite   = metadb.SQLite
	Postgres = metadb.Postgres
)

// Store is the catalog in the metadata database: people, tokens,
// datasets, requests, grants, budgets and the answer cache.
type Store struct {
	meta *metadb.DB
	own  bool // Open opened meta, so Close closes it
	// db writes and read reads (see metadb.DB); dialect is meta's.
	db, read *sql.DB
	dialect  Dialect
	now      func() time.Time
	// sessions, grants and datasets remember authenticated tokens,
	// researchers' grants and datasets' rows (SQLite only; see memo);
	// nil remembers nothing.
	sessions *memo[session]
	grants   *memo[[]Grant]
	datasets *memo[Dataset]
	// decoded keeps datasets' decoded descriptions and policies (see
	// decodedDatasets).
	decoded *decodedDatasets
}

// Open opens the metadata database at dsn (see metadb.Open) and the
// catalog in it; Close closes both.
func Open(ctx context.Context, dsn string) (*Store, error) {
	meta, err := metadb.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, meta)
	if err != nil {
		meta.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// New is the catalog in an open metadata database, with its migrations
// applied. Closing the catalog leaves the database open.
func New(ctx context.Context, meta *metadb.DB) (*Store, error) {
	s := &Store{meta: meta, db: meta.Writer(), read: meta.Reader(), dialect: meta.Dialect(), now: func() time.Time { return time.Now().UTC() },
		decoded: &decodedDatasets{m: map[string]decodedDataset{}}}
	if s.dialect == SQLite {
		s.sessions = newSessions()
		s.grants = newGrantMemo()
		s.datasets = newDatasetMemo()
	}
	if err := meta.Migrate(ctx, "catalog", migrations); err != nil {
		return nil, err
	}
	if err := meta.Migrate(ctx, "health", healthMigrations); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the store, and the database when Open opened it.
func (s *Store) Close() error {
	if s.own {
		return s.meta.Close()
	}
	return nil
}

// migrations are applied in order, each once; never edit one that has
// shipped, add a new one.
var migrations = []string{
	`CREATE TABLE orgs (
		id TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
		export_assessment BOOLEAN NOT NULL DEFAULT FALSE)`,
	`CREATE TABLE people (
		id TEXT PRIMARY KEY, name TEXT NOT NULL, org_id TEXT NOT NULL REFERENCES orgs(id),
		roles TEXT NOT NULL, active BOOLEAN NOT NULL DEFAULT TRUE, created_at TEXT NOT NULL)`,
	`CREATE TABLE tokens (
		id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), hash TEXT NOT NULL UNIQUE,
		label TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)`,
	`CREATE TABLE datasets (
		name TEXT PRIMARY KEY, grade TEXT NOT NULL, info TEXT NOT NULL, policy TEXT NOT NULL,
		rows_total BIGINT NOT NULL, units BIGINT NOT NULL, needs_regrade BOOLEAN NOT NULL DEFAULT FALSE,
		registered_at TEXT NOT NULL, updated_at TEXT NOT NULL)`,
	`CREATE TABLE grade_history (
		dataset TEXT NOT NULL, grade TEXT NOT NULL, changed_by TEXT NOT NULL, reason TEXT NOT NULL, changed_at TEXT NOT NULL)`,
	`CREATE TABLE access_requests (
		id TEXT PRIMARY KEY, researcher TEXT NOT NULL REFERENCES people(id), datasets TEXT NOT NULL,
		columns_json TEXT NOT NULL, purpose TEXT NOT NULL, method TEXT NOT NULL,
		epsilon DOUBLE PRECISION NOT NULL, delta DOUBLE PRECISION NOT NULL, expires_at TEXT NOT NULL,
		state TEXT NOT NULL, steward TEXT, approver TEXT, reason TEXT, grant_id TEXT, created_at TEXT NOT NULL)`,
	`CREATE TABLE grants (
		id TEXT PRIMARY KEY, request_id TEXT NOT NULL, researcher TEXT NOT NULL REFERENCES people(id),
		datasets TEXT NOT NULL, columns_json TEXT NOT NULL, purpose TEXT NOT NULL,
		epsilon_total DOUBLE PRECISION NOT NULL, epsilon_spent DOUBLE PRECISION NOT NULL DEFAULT 0,
		delta_total DOUBLE PRECISION NOT NULL, delta_spent DOUBLE PRECISION NOT NULL DEFAULT 0,
		default_epsilon DOUBLE PRECISION NOT NULL, expires_at TEXT NOT NULL, revoked_at TEXT, created_at TEXT NOT NULL)`,
	`CREATE TABLE answers (
		grant_id TEXT NOT NULL, cache_key TEXT NOT NULL, query_id TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
		PRIMARY KEY (grant_id, cache_key))`,
	`CREATE TABLE queries (
		id TEXT PRIMARY KEY, grant_id TEXT NOT NULL, researcher TEXT NOT NULL, datasets TEXT NOT NULL,
		sql_text TEXT NOT NULL, epsilon DOUBLE PRECISION NOT NULL, delta DOUBLE PRECISION NOT NULL,
		outcome TEXT NOT NULL, cached BOOLEAN NOT NULL, created_at TEXT NOT NULL)`,
	`CREATE INDEX queries_grant ON queries (grant_id, created_at)`,
	// Changes to people that need an approver's confirmation, and the
	// one-time enrolment secrets through which people get their tokens.
	`CREATE TABLE person_changes (
		id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), kind TEXT NOT NULL,
		roles TEXT NOT NULL, active BOOLEAN NOT NULL, requested_by TEXT NOT NULL, state TEXT NOT NULL,
		decided_by TEXT, reason TEXT, created_at TEXT NOT NULL, decided_at TEXT)`,
	`CREATE TABLE enrolments (
		id TEXT PRIMARY KEY, person_id TEXT NOT NULL REFERENCES people(id), secret_hash TEXT NOT NULL UNIQUE,
		change_id TEXT, confirm_hash TEXT, created_by TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
		redeemed_at TEXT, token_id TEXT)`,
	// Exact answers are switched on per dataset, and lowering a dataset's
	// protection is a proposal that an approver verifies.
	`ALTER TABLE datasets ADD COLUMN exact_answers BOOLEAN NOT NULL DEFAULT FALSE`,
	`CREATE TABLE protection_changes (
		id TEXT PRIMARY KEY, dataset TEXT NOT NULL REFERENCES datasets(name), proposed TEXT NOT NULL, base TEXT NOT NULL,
		lowers TEXT NOT NULL, reason TEXT NOT NULL, proposed_by TEXT NOT NULL, state TEXT NOT NULL,
		decided_by TEXT, decision_reason TEXT, created_at TEXT NOT NULL, decided_at TEXT)`,
	// Each history line names the answer it received, so that a
	// researcher can read again what was released to them: its own id for
	// a fresh release, the earlier query's for a repeat. Lines written
	// before this column are filled in where the answer is their own.
	`ALTER TABLE queries ADD COLUMN answer_id TEXT`,
	`UPDATE queries SET answer_id = id WHERE id IN (SELECT query_id FROM answers)`,
	// Budgets in exact integer units (package accountant): epsilon in
	// 1e-6, rho in 1e-12, delta in 1e-15. A grant keeps the plain sums of
	// epsilon and delta, the sum of rho and of the k rule's deltas, and
	// the epsilon and delta of the guarantee charged; each history line
	// its share. Spends made before are converted conservatively: a line
	// or a grant known only by (epsilon, delta) is charged rho =
	// epsilon^2/2 (pure epsilon-DP implies it), all of its delta beside.
	`ALTER TABLE grants ADD COLUMN epsilon_sum_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE grants ADD COLUMN delta_sum_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE grants ADD COLUMN rho_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE grants ADD COLUMN delta_partition_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE grants ADD COLUMN epsilon_spent_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE grants ADD COLUMN delta_spent_u BIGINT NOT NULL DEFAULT 0`,
	`UPDATE grants SET epsilon_sum_u = CAST(ROUND(epsilon_spent * 1000000) AS BIGINT),
		delta_sum_u = CAST(ROUND(delta_spent * 1000000000000000) AS BIGINT),
		rho_u = CASE WHEN epsilon_spent > 0 THEN CAST(ROUND(epsilon_spent * epsilon_spent * 500000000000) AS BIGINT) + 1 ELSE 0 END,
		delta_partition_u = CAST(ROUND(delta_spent * 1000000000000000) AS BIGINT),
		epsilon_spent_u = CAST(ROUND(epsilon_spent * 1000000) AS BIGINT),
		delta_spent_u = CAST(ROUND(delta_spent * 1000000000000000) AS BIGINT)`,
	`ALTER TABLE queries ADD COLUMN epsilon_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE queries ADD COLUMN delta_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE queries ADD COLUMN rho_u BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE queries ADD COLUMN delta_partition_u BIGINT NOT NULL DEFAULT 0`,
	`UPDATE queries SET epsilon_u = CAST(ROUND(epsilon * 1000000) AS BIGINT),
		delta_u = CAST(ROUND(delta * 1000000000000000) AS BIGINT),
		rho_u = CASE WHEN epsilon > 0 THEN CAST(ROUND(epsilon * epsilon * 500000000000) AS BIGINT) + 1 ELSE 0 END,
		delta_partition_u = CAST(ROUND(delta * 1000000000000000) AS BIGINT)`,
	// A query charged and stopped before its answer was released keeps
	// the outcome charged_not_released and names the refusal's code here.
	`ALTER TABLE queries ADD COLUMN refusal TEXT`,
	// Each query reads its researcher's grants.
	`CREATE INDEX grants_researcher ON grants (researcher, created_at, id)`,
}

func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error { return s.meta.Tx(ctx, fn) }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// NewID returns a random identifier with a readable prefix.
func NewID(prefix string) string { return metadb.NewID(prefix) }

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err)) // only our own plain types are stored
	}
	return string(b)
}

// --- organisations and people ---

// PutOrg creates or updates an organisation.
func (s *Store) PutOrg(ctx context.Context, o Org) error {
	defer s.sessions.forget()
	_, err := s.db.ExecContext(ctx, `INSERT INTO orgs (id, name, kind, export_assessment) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, export_assessment = excluded.export_assessment`,
		o.ID, o.Name, string(o.Kind), o.ExportAssessment)
	if err != nil {
		return fmt.Errorf("store org %s: %w", o.ID, err)
	}
	return nil
}

// CreatePerson stores a new person as given, with no confirmation and no
// enrolment: it is for the installer (gateway init, the demo), who is
// trusted with everything anyway. Over the API people are added with
// AddPerson. p.Org.ID must exist.
func (s *Store) CreatePerson(ctx context.Context, p Person) error {
	if err := CheckRoles(p.Roles); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO people (id, name, org_id, roles, active, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		p.ID, p.Name, p.Org.ID, jsonText(p.Roles), p.Active, ts(s.now()))
	if err != nil {
		return fmt.Errorf("store person %s: %w", p.ID, err)
	}
	return nil
}

const personCols = `p.id, p.name, p.roles, p.active, o.id, o.name, o.kind, o.export_assessment`

func scanPerson(row interface{ Scan(...any) error }, extra ...any) (Person, error) {
	var p Person
	var roles, kind string
	if err := row.Scan(append([]any{&p.ID, &p.Name, &roles, &p.Active, &p.Org.ID, &p.Org.Name, &kind, &p.Org.ExportAssessment}, extra...)...); err != nil {
		return Person{}, err
	}
	p.Org.Kind = OrgKind(kind)
	if err := json.Unmarshal([]byte(roles), &p.Roles); err != nil {
		return Person{}, fmt.Errorf("decode roles of %s: %w", p.ID, err)
	}
	return p, nil
}

// Person returns a person by id.
func (s *Store) Person(ctx context.Context, id string) (Person, error) {
	p, err := scanPerson(s.read.QueryRowContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Person{}, fault.E(fault.NotFound, "no person %s", id)
	}
	if err != nil {
		return Person{}, fmt.Errorf("load person %s: %w", id, err)
	}
	return p, nil
}

// HashToken is how tokens are stored: SM3 of the token, hex. Tokens are
// 256-bit random values, so a fast hash is enough.
func HashToken(token string) string {
	h := sm3.Sum([]byte(token))
	return hex.EncodeToString(h[:])
}

// IssueToken creates a new bearer token for a person and returns it; only its
// hash is kept, so it cannot be shown again. It is for the installer and for
// enrolment; over the API nobody issues a token for someone else.
func (s *Store) IssueToken(ctx context.Context, personID, label string) (id, token string, err error) {
	return issueToken(ctx, s.db, s.now(), personID, label)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func issueToken(ctx context.Context, db execer, now time.Time, personID, label string) (id, token string, err error) {
	token, err = secret("gw_")
	if err != nil {
		return "", "", err
	}
	id = NewID("tok")
	_, err = db.ExecContext(ctx, `INSERT INTO tokens (id, person_id, hash, label, created_at) VALUES ($1, $2, $3, $4, $5)`,
		id, personID, HashToken(token), label, ts(now))
	if err != nil {
		return "", "", fmt.Errorf("store token for %s: %w", personID, err)
	}
	return id, token, nil
}

// secret returns a new 256-bit random secret, hex, after prefix.
func secret(prefix string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// Authenticate returns the active person holding token.
func (s *Store) Authenticate(ctx context.Context, token string) (Person, error) {
	p, _, err := s.AuthenticateToken(ctx, token)
	return p, err
}

// AuthenticateToken returns the active person holding token and the
// token's id. When the token is known but refused (revoked, or its holder
// deactivated), the person and token id are returned with the error, so
// that the refusal can be recorded against them.
func (s *Store) AuthenticateToken(ctx context.Context, token string) (Person, string, error) {
	hash := HashToken(token)
	e, err := s.sessions.through(hash, func() (session, error) {
		var e session
		var revoked string
		p, err := scanPerson(s.read.QueryRowContext(ctx, `SELECT `+personCols+`, t.id, coalesce(t.revoked_at, '') FROM tokens t JOIN people p ON p.id = t.person_id
		JOIN orgs o ON o.id = p.org_id WHERE t.hash = $1`, hash), &e.tokenID, &revoked)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return session{}, fault.E(fault.Unauthenticated, "the bearer token is unknown or revoked")
		case err != nil:
			return session{}, fmt.Errorf("authenticate: %w", err)
		}
		e.p = p
		if revoked != "" {
			return e, fault.E(fault.Unauthenticated, "the bearer token is unknown or revoked")
		}
		if !p.Active {
			return e, fault.E(fault.Unauthenticated, "the account of %s is not active", p.ID)
		}
		return e, nil
	})
	return e.p, e.tokenID, err
}

// --- datasets ---

type datasetInfo struct {
	Source, Category, Purpose, Method, Responsible, CrossBorder, Protection string
}

// PutDataset registers or updates a dataset's description and policy; see
// Reload.
func (s *Store) PutDataset(ctx context.Context, d Dataset, by string) error {
	_, err := s.Reload(ctx, d, by)
	return err
}

// Reload registers a new dataset, or updates a registered one's
// description, scale and protection. A reload whose grade or policy would
// lower the protection in force keeps the protection in force and files
// the new one as a proposal (returned) for an approver to verify. Exact
// answers are never switched on here.
func (s *Store) Reload(ctx context.Context, d Dataset, by string) (*ProtectionChange, error) {
	defer s.datasets.forget()
	if !d.Grade.Valid() {
		return nil, fault.E(fault.Invalid, "grade %q is not one of core, important, general", d.Grade)
	}
	if err := d.Policy.Validate(); err != nil {
		return nil, fault.Wrap(fault.Invalid, err, "policy of %s is not valid", d.Name)
	}
	now := s.now()
	info := jsonText(datasetInfo{d.Source, d.Category, d.Purpose, d.Method, d.Responsible, d.CrossBorder, d.Protection})
	var pending *ProtectionChange
	err := s.tx(ctx, func(tx *sql.Tx) error {
		old, err := s.loadDataset(ctx, tx, d.Name)
		exists := err == nil
		if err != nil && !fault.Is(err, fault.NotFound) {
			return err
		}
		if exists {
			p := Protection{Grade: d.Grade, Policy: d.Policy, Exact: old.ExactAnswers}
			if lowers := p.Lowers(protectionOf(old)); len(lowers) > 0 {
				c := ProtectionChange{ID: NewID("pch"), Dataset: d.Name, Proposed: p, Lowers: lowers, Reason: "reload",
					ProposedBy: by, State: ChangePending, CreatedAt: now, base: protectionOf(old)}
				_, err := tx.ExecContext(ctx, `INSERT INTO protection_changes (id, dataset, proposed, base, lowers, reason, proposed_by, state, created_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, c.ID, d.Name, jsonText(p), jsonText(c.base), jsonText(lowers), c.Reason, by, string(c.State), ts(now))
				if err != nil {
					return fmt.Errorf("store proposal for %s: %w", d.Name, err)
				}
				pending = &c
				d.Grade, d.Policy = old.Grade, old.Policy
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO datasets (name, grade, info, policy, rows_total, units, needs_regrade, registered_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT (name) DO UPDATE SET grade = excluded.grade, info = excluded.info, policy = excluded.policy,
				rows_total = excluded.rows_total, units = excluded.units, needs_regrade = excluded.needs_regrade, updated_at = excluded.updated_at`,
			d.Name, string(d.Grade), info, jsonText(d.Policy), d.Rows, d.Units, d.NeedsRegrade, ts(now), ts(now))
		if err != nil {
			return fmt.Errorf("store dataset %s: %w", d.Name, err)
		}
		if !exists || old.Grade != d.Grade {
			_, err = tx.ExecContext(ctx, `INSERT INTO grade_history (dataset, grade, changed_by, reason, changed_at) VALUES ($1, $2, $3, $4, $5)`,
				d.Name, string(d.Grade), by, "registered or re-graded", ts(now))
			if err != nil {
				return fmt.Errorf("record grade of %s: %w", d.Name, err)
			}
		}
		return nil
	})
	return pending, err
}

func (s *Store) scanDataset(row interface{ Scan(...any) error }) (Dataset, error) {
	var d Dataset
	var grade, info, policy, reg, upd string
	if err := row.Scan(&d.Name, &grade, &info, &policy, &d.Rows, &d.Units, &d.NeedsRegrade, &reg, &upd, &d.ExactAnswers); err != nil {
		return Dataset{}, err
	}
	d.Grade = Grade(grade)
	dec, err := s.decoded.get(info, policy)
	if err != nil {
		return Dataset{}, fmt.Errorf("decode dataset %s: %w", d.Name, err)
	}
	in := dec.info
	d.Source, d.Category, d.Purpose, d.Method, d.Responsible, d.CrossBorder, d.Protection =
		in.Source, in.Category, in.Purpose, in.Method, in.Responsible, in.CrossBorder, in.Protection
	d.Policy, d.PolicyDigest = dec.policy.Clone(), dec.digest
	d.RegisteredAt, d.UpdatedAt = parseTS(reg), parseTS(upd)
	return d, nil
}

// decodedDatasets remembers the decoded form of the description and
// policy texts datasets were last read with, keyed by the texts
// themselves: every query reads its datasets' rows afresh, and decoding
// the same JSON again was a tenth of a small query's fixed cost. A row
// whose texts changed is decoded anew, so nothing read is ever stale;
// policies are handed out as clones, so no caller shares one.
type decodedDatasets struct {
	mu sync.Mutex
	m  map[string]decodedDataset
}

type decodedDataset struct {
	info   datasetInfo
	policy Policy
	digest [32]byte // of the policy's text
}

// maxDecoded bounds the texts remembered; past it the memory starts over.
const maxDecoded = 256

func (c *decodedDatasets) get(info, policy string) (decodedDataset, error) {
	key := info + "\x00" + policy
	c.mu.Lock()
	d, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	if err := json.Unmarshal([]byte(info), &d.info); err != nil {
		return decodedDataset{}, err
	}
	if err := json.Unmarshal([]byte(policy), &d.policy); err != nil {
		return decodedDataset{}, fmt.Errorf("policy: %w", err)
	}
	d.digest = sha256.Sum256([]byte(policy))
	c.mu.Lock()
	if len(c.m) >= maxDecoded {
		clear(c.m)
	}
	c.m[key] = d
	c.mu.Unlock()
	return d, nil
}

const datasetCols = `name, grade, info, policy, rows_total, units, needs_regrade, registered_at, updated_at, exact_answers`

// Dataset returns a registered dataset.
func (s *Store) Dataset(ctx context.Context, name string) (Dataset, error) {
	d, err := s.scanDataset(s.read.QueryRowContext(ctx, `SELECT `+datasetCols+` FROM datasets WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Dataset{}, fault.E(fault.NotFound, "no dataset %s", name)
	}
	if err != nil {
		return Dataset{}, fmt.Errorf("load dataset %s: %w", name, err)
	}
	return d, nil
}

// DatasetFor is Dataset for the admission of reader's queries, which
// remembers it for reader alone (see newDatasetMemo).
func (s *Store) DatasetFor(ctx context.Context, reader, name string) (Dataset, error) {
	return s.datasets.through(reader+"\x00"+name, func() (Dataset, error) { return s.Dataset(ctx, name) })
}

// Datasets lists every registered dataset.
func (s *Store) Datasets(ctx context.Context) ([]Dataset, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+datasetCols+` FROM datasets ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list datasets: %w", err)
	}
	defer rows.Close()
	var out []Dataset
	for rows.Next() {
		d, err := s.scanDataset(rows)
		if err != nil {
			return nil, fmt.Errorf("list datasets: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
