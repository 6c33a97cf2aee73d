package catalog

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/hospital/gateway/fault"
)

var personRoles = []PersonRole{Admin, Steward, Approver, Researcher, Auditor}

// duties groups the roles by what they let a person do: administer people
// and tokens, approve (steward, approver), audit, or use data. One person's
// roles stay within one duty (Art. 16, 17, 22(6)): whoever approves access
// does not use data or audit it, and an admin does none of these.
var duties = map[PersonRole]string{
	Admin:      "administer",
	Steward:    "approve",
	Approver:   "approve",
	Auditor:    "audit",
	Researcher: "use data",
}

// CheckRoles refuses unknown roles and roles of more than one duty.
func CheckRoles(rs []PersonRole) error {
	if len(rs) == 0 {
		return fault.E(fault.Invalid, "give at least one role")
	}
	duty := ""
	for _, r := range rs {
		if !slices.Contains(personRoles, r) {
			return fault.E(fault.Invalid, "role %q is not one of %v", r, personRoles)
		}
		if duty != "" && duties[r] != duty {
			return fault.E(fault.Invalid, "roles %v mix duties (%s and %s); one person may administer, approve (steward, approver), audit or use data (researcher), never two of these", rs, duty, duties[r])
		}
		duty = duties[r]
	}
	return nil
}

// confirmed is what holding rs while active lets a person do that needs a
// second person's confirmation: every role but admin, since each gives
// approval power, audit access or data access.
func confirmed(rs []PersonRole, active bool) []PersonRole {
	if !active {
		return nil
	}
	var out []PersonRole
	for _, r := range rs {
		if r != Admin {
			out = append(out, r)
		}
	}
	return out
}

// gains reports whether going from (from, fromActive) to (to, toActive)
// gives a role that needs confirmation.
func gains(from []PersonRole, fromActive bool, to []PersonRole, toActive bool) bool {
	had := confirmed(from, fromActive)
	for _, r := range confirmed(to, toActive) {
		if !slices.Contains(had, r) {
			return true
		}
	}
	return false
}

// People lists everyone.
func (s *Store) People(ctx context.Context) ([]Person, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id ORDER BY p.id`)
	if err != nil {
		return nil, fmt.Errorf("list people: %w", err)
	}
	defer rows.Close()
	out := []Person{}
	for rows.Next() {
		p, err := scanPerson(rows)
		if err != nil {
			return nil, fmt.Errorf("list people: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetExportAssessment records (or withdraws) an approved cross-border
// export assessment for an organisation (Art. 22(4)).
func (s *Store) SetExportAssessment(ctx context.Context, org string, approved bool) error {
	defer s.sessions.forget()
	res, err := s.db.ExecContext(ctx, `UPDATE orgs SET export_assessment = $1 WHERE id = $2`, approved, org)
	if err != nil {
		return fmt.Errorf("record export assessment of %s: %w", org, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fault.E(fault.NotFound, "no organisation %s", org)
	}
	return nil
}

// Token describes a token; the token itself is never shown again.
type Token struct {
	ID        string     `json:"id"`
	Person    string     `json:"person"`
	Label     string     `json:"label"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// Tokens lists a person's tokens.
func (s *Store) Tokens(ctx context.Context, person string) ([]Token, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, person_id, label, created_at, coalesce(revoked_at, '') FROM tokens WHERE person_id = $1 ORDER BY created_at`, person)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	out := []Token{}
	for rows.Next() {
		var t Token
		var created, revoked string
		if err := rows.Scan(&t.ID, &t.Person, &t.Label, &created, &revoked); err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		t.CreatedAt = parseTS(created)
		if revoked != "" {
			r := parseTS(revoked)
			t.RevokedAt = &r
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken revokes a token; it is refused from the next request on.
func (s *Store) RevokeToken(ctx context.Context, id string) (Token, error) {
	defer s.sessions.forget()
	var t Token
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var created, revoked string
		err := tx.QueryRowContext(ctx, `SELECT id, person_id, label, created_at, coalesce(revoked_at, '') FROM tokens WHERE id = $1`, id).
			Scan(&t.ID, &t.Person, &t.Label, &created, &revoked)
		if err == sql.ErrNoRows {
			return fault.E(fault.NotFound, "no token %s", id)
		}
		if err != nil {
			return fmt.Errorf("load token %s: %w", id, err)
		}
		if revoked != "" {
			return fault.E(fault.Conflict, "token %s is already revoked", id)
		}
		now := s.now()
		t.CreatedAt, t.RevokedAt = parseTS(created), &now
		_, err = tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = $1 WHERE id = $2`, ts(now), id)
		return err
	})
	return t, err
}
