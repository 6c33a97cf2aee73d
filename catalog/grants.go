package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hospital/gateway/accountant"
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
	defer s.grants.forget()
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

const grantCols = `id, request_id, researcher, datasets, columns_json, purpose, epsilon_total, delta_total,
	epsilon_sum_u, delta_sum_u, rho_u, delta_partition_u, epsilon_spent_u, delta_spent_u,
	default_epsilon, expires_at, coalesce(revoked_at, ''), created_at`

func scanGrant(row interface{ Scan(...any) error }) (Grant, error) {
	var g Grant
	var ds, cols, exp, revoked, created string
	var epsSpent, deltaSpent int64
	err := row.Scan(&g.ID, &g.RequestID, &g.Researcher, &ds, &cols, &g.Purpose, &g.EpsilonTotal, &g.DeltaTotal,
		&g.Spent.EpsilonSum, &g.Spent.DeltaSum, &g.Spent.Rho, &g.Spent.DeltaPartition, &epsSpent, &deltaSpent,
		&g.DefaultEpsilon, &exp, &revoked, &created)
	if err != nil {
		return Grant{}, err
	}
	g.setSpent(epsSpent, deltaSpent, g.Budget().By(g.Spent, epsSpent))
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
	if researcher == "" {
		return s.readGrants(ctx, "")
	}
	return s.grants.through(researcher, func() ([]Grant, error) { return s.readGrants(ctx, researcher) })
}

func (s *Store) readGrants(ctx context.Context, researcher string) ([]Grant, error) {
	// Every query lists its researcher's grants: by the index, not by a
	// scan of every grant the hospital ever made.
	var rows *sql.Rows
	var err error
	if researcher == "" {
		rows, err = s.read.QueryContext(ctx, `SELECT `+grantCols+` FROM grants ORDER BY created_at, id`)
	} else {
		rows, err = s.read.QueryContext(ctx, `SELECT `+grantCols+` FROM grants WHERE researcher = $1 ORDER BY created_at, id`, researcher)
	}
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
	defer s.grants.forget()
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

// setSpent fills the grant's budget figures from its units and the
// charged guarantee's epsilon and delta (units too), which by names.
func (g *Grant) setSpent(epsSpent, deltaSpent int64, by string) {
	g.EpsilonSpent = accountant.Figure(epsSpent, accountant.EpsilonScale)
	g.DeltaSpent = accountant.Figure(deltaSpent, accountant.DeltaScale)
	g.EpsilonSum = accountant.Figure(g.Spent.EpsilonSum, accountant.EpsilonScale)
	g.DeltaSum = accountant.Figure(g.Spent.DeltaSum, accountant.DeltaScale)
	g.RhoSpent = accountant.Figure(g.Spent.Rho, accountant.RhoScale)
	g.DeltaPartitionSpent = accountant.Figure(g.Spent.DeltaPartition, accountant.DeltaScale)
	g.Accounting = accountant.Name
	g.EpsilonSpentBy = by
}

// Balance is a grant's budget after a spend: what the accountant charges
// (epsilon_spent, delta_spent, and which guarantee, epsilon_spent_by),
// the plain sum of the queries' epsilons (epsilon_sum, what the history
// adds up to) and of their zCDP costs (rho_spent).
type Balance struct {
	EpsilonSpent     float64 `json:"epsilon_spent"`
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	DeltaSpent       float64 `json:"delta_spent"`
	DeltaRemaining   float64 `json:"delta_remaining"`
	EpsilonSum       float64 `json:"epsilon_sum"`
	RhoSpent         float64 `json:"rho_spent"`
	Accounting       string  `json:"accounting"`
	EpsilonSpentBy   string  `json:"epsilon_spent_by"`
}

// Reserve spends epsilon and delta from a live grant, charged as a pure
// (epsilon, delta) release (accountant.Pure); see ReserveCharge.
func (s *Store) Reserve(ctx context.Context, grantID string, epsilon, delta float64) (Balance, error) {
	return s.reserve(ctx, grantID, accountant.Pure(epsilon, delta), nil, nil)
}

// ReserveCharge spends a charge from a live grant in one transaction that
// holds the grant's row, so that concurrent queries (in this process or in
// another gateway sharing PostgreSQL) can never overspend: the grant's
// sums in integer units are read, the charge added, the accountant's
// position computed (accountant.Budget.Position) and the sums written
// back only if the position fits the grant. It fails with
// budget_exhausted when the grant cannot pay, and forbidden when the grant
// is revoked or expired. A reservation is never given back: a query that
// fails after it keeps the budget spent (fail closed).
func (s *Store) ReserveCharge(ctx context.Context, grantID string, c accountant.Charge) (Balance, error) {
	return s.reserve(ctx, grantID, c, nil, nil)
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
//
// known is the caller's read of the grant, made moments before (the
// admission's): the charge is tried against it first (see reserve).
func (s *Store) ReserveFor(ctx context.Context, rec QueryRecord, known Grant) (Balance, error) {
	rec.Outcome = ChargedNotReleased
	return s.reserve(ctx, rec.GrantID, rec.Charge(), &rec, &known)
}

// Charge is what the line charges: its epsilon, delta, rho and k rule's
// delta; a line with epsilon and no rho is a pure (epsilon, delta)
// release (accountant.Pure).
func (r QueryRecord) Charge() accountant.Charge {
	if r.Rho <= 0 {
		return accountant.Pure(r.Epsilon, r.Delta)
	}
	return accountant.Charge{Epsilon: r.Epsilon, Delta: r.Delta, Rho: r.Rho, DeltaPartition: r.DeltaPartition}
}

// errMoved is a reservation that found the grant's sums changed under
// it; it is tried again.
var errMoved = errors.New("grant budget moved")

// reserve charges c to the grant grantID and writes rec, if any, in the
// same transaction. known, if not nil, is the caller's recent read of the
// grant: the charge is first tried against it, and the write's condition
// (the grant's sums and totals as known, live at now) makes that exactly
// as safe as charging a fresh read. Only a known grant that moved, or that
// could not pay, is read again under the transaction's lock, which decides
// refusals; a refusal is never made from a read that may be old.
func (s *Store) reserve(ctx context.Context, grantID string, c accountant.Charge, rec *QueryRecord, known *Grant) (Balance, error) {
	add := c.Units()
	lock := ""
	if s.dialect == Postgres {
		lock = " FOR UPDATE" // SQLite's write transactions are exclusive already
	}
	var g, before Grant
	var refusal error
	var err error
	for try := 0; try < 5; try++ {
		refusal = nil
		err = s.reserveTx(rec)(ctx, func(tx *sql.Tx) error {
			if known != nil && try == 0 && known.ID == grantID {
				g = *known
				before = g
				_, ok, err := s.charge(ctx, tx, &g, add)
				if err != nil || ok {
					return s.recorded(ctx, tx, err, rec)
				}
			}
			var err error
			g, err = scanGrant(tx.QueryRowContext(ctx, `SELECT `+grantCols+` FROM grants WHERE id = $1`+lock, grantID))
			if errors.Is(err, sql.ErrNoRows) {
				return fault.E(fault.NotFound, "no grant %s", grantID)
			}
			if err != nil {
				return err
			}
			if !g.Live(s.now()) {
				refusal = fault.E(fault.Forbidden, "grant %s is revoked or expired", grantID)
				return nil
			}
			before = g
			pos, ok, err := s.charge(ctx, tx, &g, add)
			switch {
			case err == nil && !ok && !pos.Fits:
				refusal = exhausted(g, g.Budget().Position(g.Spent), pos, c)
				return nil
			case err == nil && !ok:
				err = errMoved
			}
			return s.recorded(ctx, tx, err, rec)
		})
		if !errors.Is(err, errMoved) {
			break
		}
	}
	if err != nil {
		if fault.KindOf(err) != fault.Internal {
			return Balance{}, err
		}
		return Balance{}, fmt.Errorf("reserve budget on %s: %w", grantID, err)
	}
	if refusal != nil {
		return Balance{}, refusal
	}
	s.chargedGrant(before, g)
	return balanceOf(g), nil
}

// charge adds add to g's sums in tx if g, as read, is live and can pay,
// and its row still holds what was read: then g is updated and charge
// reports true. It reports false, writing nothing, when g is not live,
// cannot pay (the position it would reach does not fit), or its row has
// moved (another charge, a revocation, an expiry). It returns the
// position g would reach, zero when g is not live.
func (s *Store) charge(ctx context.Context, tx *sql.Tx, g *Grant, add accountant.Spent) (accountant.Position, bool, error) {
	now := s.now()
	if !g.Live(now) {
		return accountant.Position{}, false, nil
	}
	next := g.Spent.Plus(add)
	pos := g.Budget().Position(next)
	if !pos.Fits {
		return pos, false, nil
	}
	deltaSpent := accountant.Up(pos.DeltaSpent, accountant.DeltaScale)
	res, err := tx.ExecContext(ctx, `UPDATE grants SET epsilon_sum_u = $1, delta_sum_u = $2, rho_u = $3, delta_partition_u = $4,
		epsilon_spent_u = $5, delta_spent_u = $6, epsilon_spent = $7, delta_spent = $8
		WHERE id = $9 AND revoked_at IS NULL AND expires_at > $10
		AND epsilon_sum_u = $11 AND delta_sum_u = $12 AND rho_u = $13 AND delta_partition_u = $14
		AND epsilon_total = $15 AND delta_total = $16`,
		next.EpsilonSum, next.DeltaSum, next.Rho, next.DeltaPartition, pos.EpsilonUnits, deltaSpent, pos.EpsilonSpent, pos.DeltaSpent,
		g.ID, ts(now), g.Spent.EpsilonSum, g.Spent.DeltaSum, g.Spent.Rho, g.Spent.DeltaPartition, g.EpsilonTotal, g.DeltaTotal)
	if err != nil {
		return pos, false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return pos, false, err
	}
	g.Spent = next
	g.setSpent(pos.EpsilonUnits, deltaSpent, pos.By)
	return pos, true, nil
}

// recorded writes rec, if any, in tx after a charge that returned err.
func (s *Store) recorded(ctx context.Context, tx *sql.Tx, err error, rec *QueryRecord) error {
	if err != nil || rec == nil {
		return err
	}
	return recordQuery(ctx, tx, *rec)
}

// exhausted is the refusal of a charge c that the grant g, standing at
// now, cannot pay: pos is where it would stand.
func exhausted(g Grant, now, pos accountant.Position, c accountant.Charge) error {
	if pos.Short == "delta" {
		return fault.E(fault.BudgetExhausted, "grant %s has delta %s left and the query needs %s; ask for a smaller delta (delta 0: Laplace), or request more budget",
			g.ID, figure(max(0, g.DeltaTotal-g.DeltaSum)), figure(c.Delta))
	}
	left := accountant.Up(g.EpsilonTotal, accountant.EpsilonScale) - now.EpsilonUnits
	return fault.E(fault.BudgetExhausted, "grant %s has epsilon %s left and the query needs %s; ask for a smaller epsilon or request more budget",
		g.ID, figure(accountant.Figure(max(0, left), accountant.EpsilonScale)), figure(accountant.Figure(pos.EpsilonUnits-now.EpsilonUnits, accountant.EpsilonScale)))
}

func figure(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }

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

// FailQuery records on a history line written by ReserveFor the code of
// the refusal that stopped the query after its charge: the line keeps its
// charge and the outcome ChargedNotReleased.
func (s *Store) FailQuery(ctx context.Context, id, code string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE queries SET refusal = $1 WHERE id = $2`, code, id); err != nil {
		return fmt.Errorf("record refusal of query %s: %w", id, err)
	}
	return nil
}

// FinishQuery is FinishQueryTx in a transaction of its own.
func (s *Store) FinishQuery(ctx context.Context, id, outcome string) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.FinishQueryTx(ctx, tx, id, outcome, "") })
}

// balanceOf is g's budget, every figure from exact integer units (0.3,
// not 0.30000000000000004).
func balanceOf(g Grant) Balance {
	left := func(total, spent, scale float64) float64 {
		return accountant.Figure(max(0, accountant.Up(total, scale)-accountant.Up(spent, scale)), scale)
	}
	return Balance{
		EpsilonSpent: g.EpsilonSpent, EpsilonRemaining: left(g.EpsilonTotal, g.EpsilonSpent, accountant.EpsilonScale),
		DeltaSpent: g.DeltaSpent, DeltaRemaining: left(g.DeltaTotal, g.DeltaSpent, accountant.DeltaScale),
		EpsilonSum: g.EpsilonSum, RhoSpent: g.RhoSpent, Accounting: g.Accounting, EpsilonSpentBy: g.EpsilonSpentBy,
	}
}

// BalanceOf is a grant's current budget.
func BalanceOf(g Grant) Balance { return balanceOf(g) }

// BalanceAfter is where g would stand after charging c (what a dry run
// shows): nothing is reserved.
func BalanceAfter(g Grant, c accountant.Charge) Balance {
	g.Spent = g.Spent.Plus(c.Units())
	pos := g.Budget().Position(g.Spent)
	g.setSpent(pos.EpsilonUnits, accountant.Up(pos.DeltaSpent, accountant.DeltaScale), pos.By)
	return balanceOf(g)
}

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
	res, err := tx.ExecContext(ctx, `INSERT INTO answers (grant_id, cache_key, query_id, body, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (grant_id, cache_key) DO NOTHING`, grantID, key, queryID, string(body), ts(s.now()))
	if err != nil {
		return nil, "", fmt.Errorf("store answer: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, "", fmt.Errorf("store answer: %w", err)
	} else if n == 1 {
		return body, queryID, nil
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
	ID         string   `json:"query_id"`
	GrantID    string   `json:"grant_id"`
	Researcher string   `json:"researcher"`
	Datasets   []string `json:"datasets"`
	SQL        string   `json:"sql"`
	// Epsilon and Delta are the line's charge under basic composition
	// (the history's epsilons add up to the grant's epsilon_sum), Rho its
	// zCDP cost and DeltaPartition the delta of its k rule.
	Epsilon        float64   `json:"epsilon"`
	Delta          float64   `json:"delta"`
	Rho            float64   `json:"rho"`
	DeltaPartition float64   `json:"delta_partition"`
	Outcome        string    `json:"outcome"`
	Cached         bool      `json:"cached"`
	Time           time.Time `json:"time"`
	// AnswerID is the query whose stored answer this line received: its
	// own ID for a fresh release, an earlier one's for a repeat, "" when
	// nothing was released.
	AnswerID string `json:"answer_id,omitempty"`
	// Refusal is the code of the refusal that stopped a query charged and
	// not released (Outcome ChargedNotReleased); "" otherwise.
	Refusal string `json:"refusal,omitempty"`
	// Units is the stored charge in integer units (read back only).
	Units accountant.Spent `json:"-"`
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
	var u accountant.Spent
	if r.Epsilon > 0 || r.Delta > 0 {
		u = r.Charge().Units()
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO queries (id, grant_id, researcher, datasets, sql_text, epsilon, delta, outcome, cached, created_at, answer_id,
		epsilon_u, delta_u, rho_u, delta_partition_u)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		r.ID, r.GrantID, r.Researcher, jsonText(r.Datasets), r.SQL, accountant.Figure(u.EpsilonSum, accountant.EpsilonScale),
		accountant.Figure(u.DeltaSum, accountant.DeltaScale), r.Outcome, r.Cached, ts(r.Time), answer,
		u.EpsilonSum, u.DeltaSum, u.Rho, u.DeltaPartition)
	if err != nil {
		return fmt.Errorf("record query %s: %w", r.ID, err)
	}
	return nil
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

const queryCols = `id, grant_id, researcher, datasets, sql_text, epsilon_u, delta_u, rho_u, delta_partition_u, outcome, cached, created_at, coalesce(answer_id, ''), coalesce(refusal, '')`

func scanQuery(row interface{ Scan(...any) error }) (QueryRecord, error) {
	var r QueryRecord
	var ds, at string
	if err := row.Scan(&r.ID, &r.GrantID, &r.Researcher, &ds, &r.SQL, &r.Units.EpsilonSum, &r.Units.DeltaSum, &r.Units.Rho, &r.Units.DeltaPartition,
		&r.Outcome, &r.Cached, &at, &r.AnswerID, &r.Refusal); err != nil {
		return QueryRecord{}, err
	}
	r.Epsilon = accountant.Figure(r.Units.EpsilonSum, accountant.EpsilonScale)
	r.Delta = accountant.Figure(r.Units.DeltaSum, accountant.DeltaScale)
	r.Rho = accountant.Figure(r.Units.Rho, accountant.RhoScale)
	r.DeltaPartition = accountant.Figure(r.Units.DeltaPartition, accountant.DeltaScale)
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
