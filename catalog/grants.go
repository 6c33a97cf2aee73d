package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/hospital/gateway/fault"
)

// CreateRequest stores a researcher's new access request in state pending.
func (s *Store) CreateRequest(ctx context.Context, r AccessRequest) (AccessRequest, error) {
	if len(r.Datasets) == 0 {
		return AccessRequest{}, fault.E(fault.Invalid, "name at least one dataset")
	}
	if r.Purpose == "" {
		return AccessRequest{}, fault.E(fault.Invalid, "state the purpose of the processing")
	}
	if r.Epsilon <= 0 || r.Epsilon > 100 {
		return AccessRequest{}, fault.E(fault.Invalid, "epsilon must be in (0, 100]")
	}
	if r.Delta < 0 || r.Delta >= 1e-3 {
		return AccessRequest{}, fault.E(fault.Invalid, "delta must be in [0, 0.001)")
	}
	if !r.ExpiresAt.After(s.now()) {
		return AccessRequest{}, fault.E(fault.Invalid, "expires_at must be in the future")
	}
	for _, d := range r.Datasets {
		if _, err := s.Dataset(ctx, d); err != nil {
			return AccessRequest{}, err
		}
	}
	r.ID = NewID("req")
	r.State = Pending
	r.CreatedAt = s.now()
	_, err := s.db.ExecContext(ctx, `INSERT INTO access_requests (id, researcher, datasets, columns_json, purpose, method, epsilon, delta, expires_at, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.ID, r.Researcher, jsonText(r.Datasets), jsonText(r.Columns), r.Purpose, r.Method, r.Epsilon, r.Delta, ts(r.ExpiresAt), string(r.State), ts(r.CreatedAt))
	if err != nil {
		return AccessRequest{}, fmt.Errorf("store access request: %w", err)
	}
	return r, nil
}

const requestCols = `id, researcher, datasets, columns_json, purpose, method, epsilon, delta, expires_at, state,
	coalesce(steward, ''), coalesce(approver, ''), coalesce(reason, ''), coalesce(grant_id, ''), created_at`

func scanRequest(row interface{ Scan(...any) error }) (AccessRequest, error) {
	var r AccessRequest
	var ds, cols, exp, state, created string
	err := row.Scan(&r.ID, &r.Researcher, &ds, &cols, &r.Purpose, &r.Method, &r.Epsilon, &r.Delta, &exp, &state,
		&r.Steward, &r.Approver, &r.Reason, &r.GrantID, &created)
	if err != nil {
		return AccessRequest{}, err
	}
	r.State, r.ExpiresAt, r.CreatedAt = RequestState(state), parseTS(exp), parseTS(created)
	if err := errors.Join(json.Unmarshal([]byte(ds), &r.Datasets), json.Unmarshal([]byte(cols), &r.Columns)); err != nil {
		return AccessRequest{}, fmt.Errorf("decode request %s: %w", r.ID, err)
	}
	return r, nil
}

// Request returns an access request.
func (s *Store) Request(ctx context.Context, id string) (AccessRequest, error) {
	r, err := scanRequest(s.read.QueryRowContext(ctx, `SELECT `+requestCols+` FROM access_requests WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return AccessRequest{}, fault.E(fault.NotFound, "no access request %s", id)
	}
	if err != nil {
		return AccessRequest{}, fmt.Errorf("load access request %s: %w", id, err)
	}
	return r, nil
}

// Requests lists access requests, newest first; researcher "" lists all.
func (s *Store) Requests(ctx context.Context, researcher string) ([]AccessRequest, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+requestCols+` FROM access_requests WHERE $1 = '' OR researcher = $1 ORDER BY created_at DESC`, researcher)
	if err != nil {
		return nil, fmt.Errorf("list access requests: %w", err)
	}
	defer rows.Close()
	var out []AccessRequest
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("list access requests: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Approve is the business department's approval by a steward: pending to
// approved. Nobody approves their own request.
func (s *Store) Approve(ctx context.Context, id, steward string, inTx func(*sql.Tx, AccessRequest) error) (AccessRequest, error) {
	return s.transition(ctx, id, func(tx *sql.Tx, r *AccessRequest) error {
		if r.State != Pending {
			return fault.E(fault.Conflict, "request %s is %s; only pending requests can be approved", id, r.State)
		}
		if r.Researcher == steward {
			return fault.E(fault.Forbidden, "you cannot approve your own access request")
		}
		r.State, r.Steward = Approved, steward
		_, err := tx.ExecContext(ctx, `UPDATE access_requests SET state = $1, steward = $2 WHERE id = $3`, string(r.State), steward, id)
		return err
	}, inTx)
}

// Verify is the leadership approver's verification: approved to granted. It
// creates the grant. The verifier must differ from the requester and from
// the steward who approved.
func (s *Store) Verify(ctx context.Context, id, approver string, inTx func(*sql.Tx, AccessRequest) error) (AccessRequest, error) {
	return s.transition(ctx, id, func(tx *sql.Tx, r *AccessRequest) error {
		if r.State != Approved {
			return fault.E(fault.Conflict, "request %s is %s; a steward must approve it before it can be verified", id, r.State)
		}
		if r.Researcher == approver {
			return fault.E(fault.Forbidden, "you cannot verify your own access request")
		}
		if r.Steward == approver {
			return fault.E(fault.Forbidden, "you approved this request as steward; a different person must verify it")
		}
		g := Grant{
			ID: NewID("grt"), RequestID: r.ID, Researcher: r.Researcher, Datasets: r.Datasets, Columns: r.Columns,
			Purpose: r.Purpose, EpsilonTotal: r.Epsilon, DeltaTotal: r.Delta, DefaultEpsilon: min(0.1, r.Epsilon),
			ExpiresAt: r.ExpiresAt, CreatedAt: s.now(),
		}
		if err := insertGrant(ctx, tx, g); err != nil {
			return err
		}
		r.State, r.Approver, r.GrantID = Granted, approver, g.ID
		_, err := tx.ExecContext(ctx, `UPDATE access_requests SET state = $1, approver = $2, grant_id = $3 WHERE id = $4`,
			string(r.State), approver, g.ID, id)
		return err
	}, inTx)
}

// Reject ends a pending or approved request with a reason.
func (s *Store) Reject(ctx context.Context, id, by, reason string, inTx func(*sql.Tx, AccessRequest) error) (AccessRequest, error) {
	if reason == "" {
		return AccessRequest{}, fault.E(fault.Invalid, "give a reason for the rejection")
	}
	return s.transition(ctx, id, func(tx *sql.Tx, r *AccessRequest) error {
		if r.State != Pending && r.State != Approved {
			return fault.E(fault.Conflict, "request %s is %s and can no longer be rejected", id, r.State)
		}
		r.State, r.Reason = Rejected, reason
		_, err := tx.ExecContext(ctx, `UPDATE access_requests SET state = $1, reason = $2 WHERE id = $3`, string(r.State), reason, id)
		return err
	}, inTx)
}

func (s *Store) transition(ctx context.Context, id string, change func(*sql.Tx, *AccessRequest) error, inTx func(*sql.Tx, AccessRequest) error) (AccessRequest, error) {
	var out AccessRequest
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestCols+` FROM access_requests WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.E(fault.NotFound, "no access request %s", id)
		}
		if err != nil {
			return fmt.Errorf("load access request %s: %w", id, err)
		}
		if err := change(tx, &r); err != nil {
			return err
		}
		if inTx != nil {
			if err := inTx(tx, r); err != nil {
				return err
			}
		}
		out = r
		return nil
	})
	return out, err
}

func insertGrant(ctx context.Context, tx *sql.Tx, g Grant) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO grants (id, request_id, researcher, datasets, columns_json, purpose, epsilon_total, epsilon_spent,
		delta_total, delta_spent, default_epsilon, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 0, $9, $10, $11)`,
		g.ID, g.RequestID, g.Researcher, jsonText(g.Datasets), jsonText(g.Columns), g.Purpose, g.EpsilonTotal, g.DeltaTotal,
		g.DefaultEpsilon, ts(g.ExpiresAt), ts(g.CreatedAt))
	if err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	return nil
}

const grantCols = `id, request_id, researcher, datasets, columns_json, purpose, epsilon_total, epsilon_spent, delta_total, delta_spent,
	default_epsilon, expires_at, coalesce(revoked_at, ''), created_at`

func scanGrant(row interface{ Scan(...any) error }) (Grant, error) {
	var g Grant
	var ds, cols, exp, revoked, created string
	err := row.Scan(&g.ID, &g.RequestID, &g.Researcher, &ds, &cols, &g.Purpose, &g.EpsilonTotal, &g.EpsilonSpent,
		&g.DeltaTotal, &g.DeltaSpent, &g.DefaultEpsilon, &exp, &revoked, &created)
	if err != nil {
		return Grant{}, err
	}
	g.ExpiresAt, g.CreatedAt = parseTS(exp), parseTS(created)
	if revoked != "" {
		t := parseTS(revoked)
		g.RevokedAt = &t
	}
	if err := errors.Join(json.Unmarshal([]byte(ds), &g.Datasets), json.Unmarshal([]byte(cols), &g.Columns)); err != nil {
		return Grant{}, fmt.Errorf("decode grant %s: %w", g.ID, err)
	}
	return g, nil
}

// Grant returns a grant.
func (s *Store) Grant(ctx context.Context, id string) (Grant, error) {
	g, err := scanGrant(s.read.QueryRowContext(ctx, `SELECT `+grantCols+` FROM grants WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Grant{}, fault.E(fault.NotFound, "no grant %s", id)
	}
	if err != nil {
		return Grant{}, fmt.Errorf("load grant %s: %w", id, err)
	}
	return g, nil
}

// Grants lists grants, oldest first; researcher "" lists all.
func (s *Store) Grants(ctx context.Context, researcher string) ([]Grant, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+grantCols+` FROM grants WHERE $1 = '' OR researcher = $1 ORDER BY created_at, id`, researcher)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", err)
	}
	defer rows.Close()
	var out []Grant
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, fmt.Errorf("list grants: %w", err)
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// Revoke ends a grant at once: the next query on it is refused.
func (s *Store) Revoke(ctx context.Context, id string, inTx func(*sql.Tx, Grant) error) (Grant, error) {
	var out Grant
	err := s.tx(ctx, func(tx *sql.Tx) error {
		g, err := scanGrant(tx.QueryRowContext(ctx, `SELECT `+grantCols+` FROM grants WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.E(fault.NotFound, "no grant %s", id)
		}
		if err != nil {
			return fmt.Errorf("load grant %s: %w", id, err)
		}
		if g.RevokedAt != nil {
			return fault.E(fault.Conflict, "grant %s is already revoked", id)
		}
		now := s.now()
		g.RevokedAt = &now
		if _, err := tx.ExecContext(ctx, `UPDATE grants SET revoked_at = $1 WHERE id = $2`, ts(now), id); err != nil {
			return fmt.Errorf("revoke grant %s: %w", id, err)
		}
		if inTx != nil {
			if err := inTx(tx, g); err != nil {
				return err
			}
		}
		out = g
		return nil
	})
	return out, err
}

// Balance is a grant's budget after a spend.
type Balance struct {
	EpsilonSpent     float64 `json:"epsilon_spent"`
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	DeltaSpent       float64 `json:"delta_spent"`
	DeltaRemaining   float64 `json:"delta_remaining"`
}

// slack absorbs floating-point error when budgets are summed from many
// spends; it is far below any epsilon a query may ask for.
const slack = 1e-9

// Reserve spends epsilon and delta from a live grant in one atomic
// statement, so that concurrent queries (in this process or in another
// gateway sharing PostgreSQL) can never overspend. It fails with
// budget_exhausted when the grant cannot pay, and forbidden when the grant
// is revoked or expired. A reservation is never given back: a query that
// fails after it keeps the budget spent (fail closed).
func (s *Store) Reserve(ctx context.Context, grantID string, epsilon, delta float64) (Balance, error) {
	return s.reserve(ctx, grantID, epsilon, delta, nil)
}

// ChargedNotReleased is the outcome of a query whose budget was reserved
// and whose answer has not been released (yet, or ever: a crash, a
// shutdown, a failure while it ran).
const ChargedNotReleased = "charged_not_released"

// ReserveFor reserves rec's epsilon and delta on its grant, as Reserve
// does, and writes rec to the query history with the outcome
// ChargedNotReleased in the same transaction, so that the history always
// accounts for every spend: the release that follows updates the line
// (FinishQueryTx in Write, FinishQuery), and a query cut off by a crash or
// a shutdown keeps it.
//
// The reservation is committed at once, so that no concurrent query can
// spend the same budget, but not waited on to reach the disk (see
// metadb.DB.TxDeferred): the release's own commit, which comes before any
// answer leaves, makes it durable. A crash of the machine in between can
// lose it, with nothing released on it.
func (s *Store) ReserveFor(ctx context.Context, rec QueryRecord) (Balance, error) {
	rec.Outcome = ChargedNotReleased
	return s.reserve(ctx, rec.GrantID, rec.Epsilon, rec.Delta, &rec)
}

func (s *Store) reserve(ctx context.Context, grantID string, epsilon, delta float64, rec *QueryRecord) (Balance, error) {
	now := ts(s.now())
	var n int64
	err := s.reserveTx(rec)(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE grants SET epsilon_spent = epsilon_spent + $1, delta_spent = delta_spent + $2
			WHERE id = $3 AND revoked_at IS NULL AND expires_at > $4
			AND epsilon_spent + $1 <= epsilon_total + $5 AND delta_spent + $2 <= delta_total + $6`,
			epsilon, delta, grantID, now, slack, slack*1e-6)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n == 0 || rec == nil {
			return err
		}
		return recordQuery(ctx, tx, *rec)
	})
	if err != nil {
		return Balance{}, fmt.Errorf("reserve budget on %s: %w", grantID, err)
	}
	g, err := s.Grant(ctx, grantID)
	if err != nil {
		return Balance{}, err
	}
	if n == 0 {
		if !g.Live(s.now()) {
			return Balance{}, fault.E(fault.Forbidden, "grant %s is revoked or expired", grantID)
		}
		if g.DeltaSpent+delta > g.DeltaTotal+slack*1e-6 {
			return Balance{}, fault.E(fault.BudgetExhausted, "grant %s has delta %.3g left and the query needs %.3g; use delta 0 and public group keys, or request more budget",
				grantID, g.DeltaTotal-g.DeltaSpent, delta)
		}
		return Balance{}, fault.E(fault.BudgetExhausted, "grant %s has epsilon %.4g left and the query needs %.4g; ask for a smaller epsilon or request more budget",
			grantID, g.EpsilonTotal-g.EpsilonSpent, epsilon)
	}
	return balanceOf(g), nil
}

// reserveTx is how a reservation commits: deferred when the release that
// follows commits it (ReserveFor), waited on otherwise (Reserve).
func (s *Store) reserveTx(rec *QueryRecord) func(context.Context, func(*sql.Tx) error) error {
	if rec != nil {
		return s.meta.TxDeferred
	}
	return s.tx
}

// FinishQueryTx sets, inside tx, the outcome of a history line written by
// ReserveFor and, when it released one, the answer it received.
func (s *Store) FinishQueryTx(ctx context.Context, tx *sql.Tx, id, outcome, answerID string) error {
	answer := sql.NullString{String: answerID, Valid: answerID != ""}
	if _, err := tx.ExecContext(ctx, `UPDATE queries SET outcome = $1, answer_id = $3 WHERE id = $2`, outcome, id, answer); err != nil {
		return fmt.Errorf("finish query %s: %w", id, err)
	}
	return nil
}

// FinishQuery is FinishQueryTx in a transaction of its own.
func (s *Store) FinishQuery(ctx context.Context, id, outcome string) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.FinishQueryTx(ctx, tx, id, outcome, "") })
}

func balanceOf(g Grant) Balance {
	return Balance{
		EpsilonSpent: tidy(g.EpsilonSpent), EpsilonRemaining: tidy(max(0, g.EpsilonTotal-g.EpsilonSpent)),
		DeltaSpent: tidy(g.DeltaSpent), DeltaRemaining: tidy(max(0, g.DeltaTotal-g.DeltaSpent)),
	}
}

// tidy rounds a budget figure to 12 significant digits, so that sums of
// decimal epsilons read as they were asked (0.3, not 0.30000000000000004).
// The ledger keeps the exact sums; only what is shown is rounded.
func tidy(x float64) float64 {
	if x == 0 || math.IsInf(x, 0) || math.IsNaN(x) {
		return x
	}
	v, err := strconv.ParseFloat(strconv.FormatFloat(x, 'g', 12, 64), 64)
	if err != nil {
		return x
	}
	return v
}

// BalanceOf is a grant's current budget.
func BalanceOf(g Grant) Balance { return balanceOf(g) }

// Answer returns the stored answer to an identical earlier query on a grant.
func (s *Store) Answer(ctx context.Context, grantID, key string) ([]byte, bool, error) {
	var body string
	err := s.read.QueryRowContext(ctx, `SELECT body FROM answers WHERE grant_id = $1 AND cache_key = $2`, grantID, key).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load stored answer: %w", err)
	}
	return []byte(body), true, nil
}

// Write runs fn in one write transaction of the store, in which a release
// writes its answer (StoreAnswerTx), its history line (RecordQueryTx), and
// what the quota and the audit log add, committed together when fn returns
// nil; it returns once the commit is durable (see metadb.DB.Tx).
func (s *Store) Write(ctx context.Context, fn func(tx *sql.Tx) error) error { return s.tx(ctx, fn) }

// Begin starts a transaction of the caller's own, outside the group
// commit (see metadb.DB.Begin); Write is the one releases use.
func (s *Store) Begin(ctx context.Context) (*sql.Tx, error) { return s.meta.Begin(ctx) }

// StoreAnswerTx stores a released answer for its grant and cache key and
// returns the answer stored and the id of the query it was released to:
// when an identical query raced this one, the first answer wins, so both
// callers see the same noise and averaging them reveals nothing.
func (s *Store) StoreAnswerTx(ctx context.Context, tx *sql.Tx, grantID, key, queryID string, body []byte) ([]byte, string, error) {
	_, err := tx.ExecContext(ctx, `INSERT INTO answers (grant_id, cache_key, query_id, body, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (grant_id, cache_key) DO NOTHING`, grantID, key, queryID, string(body), ts(s.now()))
	if err != nil {
		return nil, "", fmt.Errorf("store answer: %w", err)
	}
	var stored, storedID string
	if err := tx.QueryRowContext(ctx, `SELECT body, query_id FROM answers WHERE grant_id = $1 AND cache_key = $2`, grantID, key).Scan(&stored, &storedID); err != nil {
		return nil, "", fmt.Errorf("load stored answer: %w", err)
	}
	return []byte(stored), storedID, nil
}

// ReleasedAnswer returns the answer released on a grant to the query
// answerID (a history line's AnswerID), receipt and all, as it was sent.
func (s *Store) ReleasedAnswer(ctx context.Context, grantID, answerID string) ([]byte, error) {
	var body string
	err := s.read.QueryRowContext(ctx, `SELECT body FROM answers WHERE grant_id = $1 AND query_id = $2`, grantID, answerID).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fault.E(fault.NotFound, "no answer %s on grant %s", answerID, grantID)
	}
	if err != nil {
		return nil, fmt.Errorf("load answer %s: %w", answerID, err)
	}
	return []byte(body), nil
}

// RecordQueryTx adds a line to a grant's query history inside tx.
func (s *Store) RecordQueryTx(ctx context.Context, tx *sql.Tx, r QueryRecord) error {
	return recordQuery(ctx, tx, r)
}

// QueryRecord is one line of a grant's query history.
type QueryRecord struct {
	ID         string    `json:"query_id"`
	GrantID    string    `json:"grant_id"`
	Researcher string    `json:"researcher"`
	Datasets   []string  `json:"datasets"`
	SQL        string    `json:"sql"`
	Epsilon    float64   `json:"epsilon"`
	Delta      float64   `json:"delta"`
	Outcome    string    `json:"outcome"`
	Cached     bool      `json:"cached"`
	Time       time.Time `json:"time"`
	// AnswerID is the query whose stored answer this line received: its
	// own ID for a fresh release, an earlier one's for a repeat, "" when
	// nothing was released.
	AnswerID string `json:"answer_id,omitempty"`
}

// RecordQuery appends a line to the query history, with whatever inTx adds
// (the audit entry) in the same transaction.
func (s *Store) RecordQuery(ctx context.Context, r QueryRecord, inTx func(*sql.Tx) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := recordQuery(ctx, tx, r); err != nil {
			return err
		}
		if inTx != nil {
			return inTx(tx)
		}
		return nil
	})
}

func recordQuery(ctx context.Context, tx *sql.Tx, r QueryRecord) error {
	var answer sql.NullString
	if r.AnswerID != "" {
		answer = sql.NullString{String: r.AnswerID, Valid: true}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO queries (id, grant_id, researcher, datasets, sql_text, epsilon, delta, outcome, cached, created_at, answer_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.ID, r.GrantID, r.Researcher, jsonText(r.Datasets), r.SQL, r.Epsilon, r.Delta, r.Outcome, r.Cached, ts(r.Time), answer)
	if err != nil {
		return fmt.Errorf("record query %s: %w", r.ID, err)
	}
	return nil
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

const queryCols = `id, grant_id, researcher, datasets, sql_text, epsilon, delta, outcome, cached, created_at, coalesce(answer_id, '')`

func scanQuery(row interface{ Scan(...any) error }) (QueryRecord, error) {
	var r QueryRecord
	var ds, at string
	if err := row.Scan(&r.ID, &r.GrantID, &r.Researcher, &ds, &r.SQL, &r.Epsilon, &r.Delta, &r.Outcome, &r.Cached, &at, &r.AnswerID); err != nil {
		return QueryRecord{}, err
	}
	if err := json.Unmarshal([]byte(ds), &r.Datasets); err != nil {
		return QueryRecord{}, fmt.Errorf("decode query %s: %w", r.ID, err)
	}
	r.Time = parseTS(at)
	return r, nil
}

// Query returns one line of the query history.
func (s *Store) Query(ctx context.Context, id string) (QueryRecord, error) {
	r, err := scanQuery(s.read.QueryRowContext(ctx, `SELECT `+queryCols+` FROM queries WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return QueryRecord{}, fault.E(fault.NotFound, "no query %s", id)
	}
	if err != nil {
		return QueryRecord{}, fmt.Errorf("load query %s: %w", id, err)
	}
	return r, nil
}

// History lists a grant's queries, oldest first.
func (s *Store) History(ctx context.Context, grantID string) ([]QueryRecord, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+queryCols+` FROM queries WHERE grant_id = $1 ORDER BY created_at, id`, grantID)
	if err != nil {
		return nil, fmt.Errorf("load query history: %w", err)
	}
	defer rows.Close()
	var out []QueryRecord
	for rows.Next() {
		r, err := scanQuery(rows)
		if err != nil {
			return nil, fmt.Errorf("load query history: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
