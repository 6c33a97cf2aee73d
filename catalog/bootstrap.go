package catalog

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/hospital/gateway/fault"
)

// Bootstrapping an empty gateway.
//
// Every change that gives approval power needs an approver's confirmation,
// so a gateway with only an admin could never get its first approver. The
// installer's ceremony (gateway init) is the one place where that rule does
// not apply: it creates the first admin and the first approver at once,
// each with a one-time enrolment secret that needs no confirmation code.
// The installer hands each secret to its person, who redeems it at
// POST /v1/enrol. From then on every new person, steward or researcher,
// goes through the admin's proposal and the approver's confirmation, and
// Bootstrap refuses to run again.

// Founder is one of the people Bootstrap creates.
type Founder struct {
	ID, Name string
}

// Founders is what Bootstrap created: the first admin's and the first
// approver's enrolments, shown once.
type Founders struct {
	Org      Org       `json:"org"`
	Admin    Enrolment `json:"admin"`
	Approver Enrolment `json:"approver"`
}

// Bootstrap creates the hospital's organisation, the first admin and the
// first approver in an empty store, with an enrolment secret each that
// needs no confirmation. It refuses a store that already holds people.
// inTx, when set, runs in the same transaction (the audit entries).
func (s *Store) Bootstrap(ctx context.Context, org Org, admin, approver Founder, inTx func(*sql.Tx, Founders) error) (Founders, error) {
	defer s.sessions.forget()
	if org.ID == "" || admin.ID == "" || approver.ID == "" || admin.ID == approver.ID {
		return Founders{}, fault.E(fault.Invalid, "give an organisation id and two different person ids, the admin's and the approver's")
	}
	if org.Kind == "" {
		org.Kind = Internal
	}
	var out Founders
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockPeople(ctx, tx); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM people`).Scan(&n); err != nil {
			return fmt.Errorf("count people: %w", err)
		}
		if n > 0 {
			return fault.E(fault.Conflict, "this gateway already has %d people; add more through the admin API (POST /v1/people)", n)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orgs (id, name, kind, export_assessment) VALUES ($1, $2, $3, FALSE)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind`, org.ID, org.Name, string(org.Kind)); err != nil {
			return fmt.Errorf("store org %s: %w", org.ID, err)
		}
		out.Org = org
		for _, f := range []struct {
			who  Founder
			role PersonRole
			to   *Enrolment
		}{{admin, Admin, &out.Admin}, {approver, Approver, &out.Approver}} {
			if _, err := tx.ExecContext(ctx, `INSERT INTO people (id, name, org_id, roles, active, created_at) VALUES ($1, $2, $3, $4, TRUE, $5)`,
				f.who.ID, f.who.Name, org.ID, jsonText([]PersonRole{f.role}), ts(s.now())); err != nil {
				return fmt.Errorf("store person %s: %w", f.who.ID, err)
			}
			e, err := s.enrol(ctx, tx, f.who.ID, nil, "installer")
			if err != nil {
				return err
			}
			*f.to = *e
		}
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	return out, err
}
