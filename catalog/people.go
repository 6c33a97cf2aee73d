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

// CheckRoles refuses unknown roles.
func CheckRoles(rs []PersonRole) error {
	if len(rs) == 0 {
		return fault.E(fault.Invalid, "give at least one role")
	}
	for _, r := range rs {
		if !slices.Contains(personRoles, r) {
			return fault.E(fault.Invalid, "role %q is not one of %v", r, personRoles)
		}
	}
	return nil
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

func (s *Store) updatePerson(ctx context.Context, id, set string, arg any) (Person, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE people SET `+set+` = $1 WHERE id = $2`, arg, id)
	if err != nil {
		return Person{}, fmt.Errorf("update person %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Person{}, fault.E(fault.NotFound, "no person %s", id)
	}
	return s.Person(ctx, id)
}

// SetRoles replaces a person's roles.
func (s *Store) SetRoles(ctx context.Context, id string, rs []PersonRole) (Person, error) {
	if err := CheckRoles(rs); err != nil {
		return Person{}, err
	}
	return s.updatePerson(ctx, id, "roles", jsonText(rs))
}

// SetActive activates or deactivates a person; a deactivated person's
// tokens are refused at once (Art. 18: prompt revocation on departure).
func (s *Store) SetActive(ctx context.Context, id string, active bool) (Person, error) {
	return s.updatePerson(ctx, id, "active", active)
}

// SetExportAssessment records (or withdraws) an approved cross-border
// export assessment for an organisation (Art. 22(4)).
func (s *Store) SetExportAssessment(ctx context.Context, org string, approved bool) error {
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
