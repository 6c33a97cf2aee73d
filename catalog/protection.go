package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/hospital/gateway/fault"
)

// Protection is lowered only by two people, as access is granted (Art. 13).
// A steward proposes a change of a dataset's grade, policy or exact
// answers; when it would lower any protection (a lower grade, a looser
// policy, exact answers switched on), it waits, and the rules in force stay
// as they are, until a different person with the approver role verifies
// it. A change that only tightens applies at once. Every proposal and
// decision is kept, for the audit log and the catalog report.

// Protection is what a dataset's protection consists of: its grade, its
// column policy and whether exact answers are allowed.
type Protection struct {
	Grade  Grade  `json:"grade"`
	Policy Policy `json:"policy"`
	Exact  bool   `json:"exact_answers"`
}

func protectionOf(d Dataset) Protection {
	return Protection{Grade: d.Grade, Policy: d.Policy, Exact: d.ExactAnswers}
}

// Lowers lists, in words, how going from old to p lowers protection; it is
// empty when p is at least as protective in every respect.
func (p Protection) Lowers(old Protection) []string {
	var out []string
	if p.Grade.Below(old.Grade) {
		out = append(out, fmt.Sprintf("grade %s is below %s", p.Grade, old.Grade))
	}
	if p.Exact && !old.Exact {
		out = append(out, "exact answers switched on")
	}
	return append(out, p.Policy.Looser(old.Policy)...)
}

// ProtectionChange is a steward's proposal to change a dataset's
// protection, with what it would lower.
type ProtectionChange struct {
	ID         string      `json:"id"`
	Dataset    string      `json:"dataset"`
	Proposed   Protection  `json:"proposed"`
	Lowers     []string    `json:"lowers"`
	Reason     string      `json:"reason"`
	ProposedBy string      `json:"proposed_by"`
	State      ChangeState `json:"state"`
	DecidedBy  string      `json:"decided_by,omitempty"`
	Decision   string      `json:"decision_reason,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
	DecidedAt  *time.Time  `json:"decided_at,omitempty"`
	// base is the protection in force when it was proposed; a proposal
	// is verified only while that is still so.
	base Protection
}

// ProtectionOutcome is what a proposal did: applied at once (Change nil)
// or pending verification. Dataset is the dataset as it now stands.
type ProtectionOutcome struct {
	Dataset Dataset           `json:"dataset"`
	Change  *ProtectionChange `json:"change,omitempty"`
}

// ProposeProtection is a steward's change of a dataset's protection:
// change gets the protection in force and returns the proposed one. It
// applies at once when it lowers nothing; otherwise it is stored pending an
// approver's verification and nothing changes yet. inTx runs in the same
// transaction (the audit entry).
func (s *Store) ProposeProtection(ctx context.Context, name, by, reason string, change func(Protection) (Protection, error), inTx func(*sql.Tx, ProtectionOutcome) error) (ProtectionOutcome, error) {
	defer s.datasets.forget()
	if strings.TrimSpace(reason) == "" {
		return ProtectionOutcome{}, fault.E(fault.Invalid, "give the reason for the change")
	}
	var out ProtectionOutcome
	err := s.tx(ctx, func(tx *sql.Tx) error {
		d, err := s.loadDataset(ctx, tx, name)
		if err != nil {
			return err
		}
		old := protectionOf(d)
		p, err := change(old)
		if err != nil {
			return err
		}
		if !p.Grade.Valid() {
			return fault.E(fault.Invalid, "grade %q is not one of core, important, general", p.Grade)
		}
		if err := p.Policy.Validate(); err != nil {
			return fault.Wrap(fault.Invalid, err, "policy of %s is not valid: %v", name, err)
		}
		if lowers := p.Lowers(old); len(lowers) > 0 {
			c := ProtectionChange{ID: NewID("pch"), Dataset: name, Proposed: p, Lowers: lowers, Reason: reason, ProposedBy: by,
				State: ChangePending, CreatedAt: s.now(), base: old}
			_, err := tx.ExecContext(ctx, `INSERT INTO protection_changes (id, dataset, proposed, base, lowers, reason, proposed_by, state, created_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, c.ID, name, jsonText(p), jsonText(old), jsonText(lowers), reason, by, string(c.State), ts(c.CreatedAt))
			if err != nil {
				return fmt.Errorf("store proposal for %s: %w", name, err)
			}
			out = ProtectionOutcome{Dataset: d, Change: &c}
		} else {
			if err := s.applyProtection(ctx, tx, d, p, by, reason); err != nil {
				return err
			}
			if out.Dataset, err = s.loadDataset(ctx, tx, name); err != nil {
				return err
			}
		}
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	return out, err
}

// applyProtection puts p in force for d, clears the re-grade flag (the
// grade has been reviewed) and records a grade change in the history.
func (s *Store) applyProtection(ctx context.Context, tx *sql.Tx, d Dataset, p Protection, by, reason string) error {
	now := s.now()
	_, err := tx.ExecContext(ctx, `UPDATE datasets SET grade = $1, policy = $2, exact_answers = $3, needs_regrade = FALSE, updated_at = $4 WHERE name = $5`,
		string(p.Grade), jsonText(p.Policy), p.Exact, ts(now), d.Name)
	if err != nil {
		return fmt.Errorf("change protection of %s: %w", d.Name, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO grade_history (dataset, grade, changed_by, reason, changed_at) VALUES ($1, $2, $3, $4, $5)`,
		d.Name, string(p.Grade), by, reason, ts(now))
	if err != nil {
		return fmt.Errorf("record grade of %s: %w", d.Name, err)
	}
	return nil
}

// VerifyProtection is an approver's verification of a pending proposal: it
// puts the proposed protection in force. The approver must be an active
// approver other than the proposer, and the dataset's protection must not
// have changed since the proposal.
func (s *Store) VerifyProtection(ctx context.Context, id, approver string, inTx func(*sql.Tx, ProtectionChange) error) (ProtectionChange, error) {
	defer s.datasets.forget()
	return s.decideProtection(ctx, id, approver, true, func(tx *sql.Tx, c *ProtectionChange) error {
		d, err := s.loadDataset(ctx, tx, c.Dataset)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(protectionOf(d), c.base) {
			return fault.E(fault.Conflict, "the protection of %s changed since proposal %s; propose again", c.Dataset, id)
		}
		c.State = ChangeConfirmed
		return s.applyProtection(ctx, tx, d, c.Proposed, c.ProposedBy+", verified by "+approver, c.Reason)
	}, inTx)
}

// RejectProtection ends a pending proposal; the rules in force stay. The
// proposer may withdraw their own.
func (s *Store) RejectProtection(ctx context.Context, id, by, reason string, inTx func(*sql.Tx, ProtectionChange) error) (ProtectionChange, error) {
	if strings.TrimSpace(reason) == "" {
		return ProtectionChange{}, fault.E(fault.Invalid, "give a reason for the rejection")
	}
	return s.decideProtection(ctx, id, by, false, func(tx *sql.Tx, c *ProtectionChange) error {
		c.State, c.Decision = ChangeRejected, reason
		return nil
	}, inTx)
}

func (s *Store) decideProtection(ctx context.Context, id, by string, verify bool, apply func(*sql.Tx, *ProtectionChange) error, inTx func(*sql.Tx, ProtectionChange) error) (ProtectionChange, error) {
	var out ProtectionChange
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := scanProtection(tx.QueryRowContext(ctx, `SELECT `+protectionCols+` FROM protection_changes WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.E(fault.NotFound, "no protection change %s", id)
		}
		if err != nil {
			return fmt.Errorf("load protection change %s: %w", id, err)
		}
		if c.State != ChangePending {
			return fault.E(fault.Conflict, "protection change %s is %s; only pending ones can be decided", id, c.State)
		}
		if verify {
			if by == c.ProposedBy {
				return fault.E(fault.Forbidden, "you proposed change %s; a different approver must verify it", id)
			}
			p, err := scanPerson(tx.QueryRowContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1`, by))
			if err != nil || !p.Active || !p.Has(Approver) {
				return fault.E(fault.Forbidden, "only an active approver verifies a change of protection")
			}
		}
		if err := apply(tx, &c); err != nil {
			return err
		}
		now := s.now()
		c.DecidedBy, c.DecidedAt = by, &now
		if _, err := tx.ExecContext(ctx, `UPDATE protection_changes SET state = $1, decided_by = $2, decision_reason = $3, decided_at = $4 WHERE id = $5`,
			string(c.State), by, c.Decision, ts(now), id); err != nil {
			return fmt.Errorf("record decision on %s: %w", id, err)
		}
		out = c
		if inTx != nil {
			return inTx(tx, c)
		}
		return nil
	})
	return out, err
}

const protectionCols = `id, dataset, proposed, base, lowers, reason, proposed_by, state, coalesce(decided_by, ''), coalesce(decision_reason, ''), created_at, coalesce(decided_at, '')`

func scanProtection(row interface{ Scan(...any) error }) (ProtectionChange, error) {
	var c ProtectionChange
	var proposed, base, lowers, state, created, decided string
	if err := row.Scan(&c.ID, &c.Dataset, &proposed, &base, &lowers, &c.Reason, &c.ProposedBy, &state, &c.DecidedBy, &c.Decision, &created, &decided); err != nil {
		return ProtectionChange{}, err
	}
	c.State, c.CreatedAt = ChangeState(state), parseTS(created)
	if decided != "" {
		t := parseTS(decided)
		c.DecidedAt = &t
	}
	if err := errors.Join(json.Unmarshal([]byte(proposed), &c.Proposed), json.Unmarshal([]byte(base), &c.base), json.Unmarshal([]byte(lowers), &c.Lowers)); err != nil {
		return ProtectionChange{}, fmt.Errorf("decode protection change %s: %w", c.ID, err)
	}
	return c, nil
}

// ProtectionChanges lists the proposals for a dataset ("" for all),
// oldest first.
func (s *Store) ProtectionChanges(ctx context.Context, dataset string) ([]ProtectionChange, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+protectionCols+` FROM protection_changes WHERE $1 = '' OR dataset = $1 ORDER BY created_at, id`, dataset)
	if err != nil {
		return nil, fmt.Errorf("list protection changes: %w", err)
	}
	defer rows.Close()
	out := []ProtectionChange{}
	for rows.Next() {
		c, err := scanProtection(rows)
		if err != nil {
			return nil, fmt.Errorf("list protection changes: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// GradeChange is one line of a dataset's grade history.
type GradeChange struct {
	Grade     Grade     `json:"grade"`
	ChangedBy string    `json:"changed_by"`
	Reason    string    `json:"reason"`
	ChangedAt time.Time `json:"changed_at"`
}

// GradeHistory lists a dataset's grades, oldest first.
func (s *Store) GradeHistory(ctx context.Context, dataset string) ([]GradeChange, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT grade, changed_by, reason, changed_at FROM grade_history WHERE dataset = $1 ORDER BY changed_at`, dataset)
	if err != nil {
		return nil, fmt.Errorf("load grade history of %s: %w", dataset, err)
	}
	defer rows.Close()
	out := []GradeChange{}
	for rows.Next() {
		var g GradeChange
		var grade, at string
		if err := rows.Scan(&grade, &g.ChangedBy, &g.Reason, &at); err != nil {
			return nil, fmt.Errorf("load grade history of %s: %w", dataset, err)
		}
		g.Grade, g.ChangedAt = Grade(grade), parseTS(at)
		out = append(out, g)
	}
	return out, rows.Err()
}

func (s *Store) loadDataset(ctx context.Context, tx *sql.Tx, name string) (Dataset, error) {
	d, err := s.scanDataset(tx.QueryRowContext(ctx, `SELECT `+datasetCols+` FROM datasets WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Dataset{}, fault.E(fault.NotFound, "no dataset %s", name)
	}
	if err != nil {
		return Dataset{}, fmt.Errorf("load dataset %s: %w", name, err)
	}
	return d, nil
}
