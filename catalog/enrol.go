package catalog

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hospital/gateway/fault"
)

// How people come to hold power (Art. 13, 16, 17, 22(6)).
//
// An admin adds people, changes their roles and (de)activates them, but a
// change that gives someone a role other than admin (approval power, audit
// access or data access: a new person with such a role, a role change,
// a reactivation, a new enrolment) is only proposed. It takes effect when a
// second person, an approver, confirms it.
//
// Nobody issues a usable token for someone else. Each person gets their
// first token by redeeming a one-time enrolment secret (POST /v1/enrol),
// and rotates it themselves after that. The admin who proposes is given
// the secret; when the change needs confirmation, the approver who confirms
// it is given a confirmation code, and the secret is redeemable only with
// that code. So neither the admin nor the approver alone can obtain a
// token for a person who can approve, audit or use data; each hands their
// half to the person. Confirming such a change revokes the person's earlier
// tokens: the new powers go with the new enrolment only.

// EnrolmentLife is how long an enrolment secret may be redeemed.
const EnrolmentLife = 7 * 24 * time.Hour

// ChangeState is where a proposed change stands.
type ChangeState string

// The states of a proposed change: pending, confirmed (applied),
// rejected, or superseded by a later change to the same person.
const (
	ChangePending    ChangeState = "pending"
	ChangeConfirmed  ChangeState = "confirmed"
	ChangeRejected   ChangeState = "rejected"
	ChangeSuperseded ChangeState = "superseded"
)

// PersonChange is a proposed change to a person that needs an approver's
// confirmation: Kind is create, roles, activate or enrol, and Roles and
// Active are the person's state once it is confirmed.
type PersonChange struct {
	ID          string       `json:"id"`
	Person      string       `json:"person"`
	Kind        string       `json:"kind"`
	Roles       []PersonRole `json:"roles"`
	Active      bool         `json:"active"`
	RequestedBy string       `json:"requested_by"`
	State       ChangeState  `json:"state"`
	DecidedBy   string       `json:"decided_by,omitempty"`
	Reason      string       `json:"reason,omitempty"`
	CreatedAt   time.Time    `json:"created_at"`
	DecidedAt   *time.Time   `json:"decided_at,omitempty"`
}

// Enrolment is a one-time enrolment secret, shown once to the admin who
// asked for it. NeedsConfirmation says that it is redeemable only with the
// confirmation code of the approver who confirms the change.
type Enrolment struct {
	ID                string    `json:"id"`
	Person            string    `json:"person"`
	Secret            string    `json:"secret"`
	NeedsConfirmation bool      `json:"needs_confirmation"`
	ExpiresAt         time.Time `json:"expires_at"`
}

// PersonOutcome is what a change to a person did: applied at once (Change
// is nil), or proposed and pending confirmation. Enrolment, when set, holds
// the secret through which the person gets a token.
type PersonOutcome struct {
	Person    Person        `json:"person"`
	Change    *PersonChange `json:"change,omitempty"`
	Enrolment *Enrolment    `json:"enrolment,omitempty"`
}

// Confirmation is what confirming a change gives the approver: the change
// and, when the person must enrol, the code to hand to them.
type Confirmation struct {
	Change PersonChange `json:"change"`
	Code   string       `json:"confirmation_code,omitempty"`
}

// AddPerson adds a person on an admin's request. A person with any role
// but admin is stored inactive, with a pending create change; either way
// the result holds the person's enrolment secret. inTx, when set, runs in
// the same transaction (the audit entry).
func (s *Store) AddPerson(ctx context.Context, p Person, by string, inTx func(*sql.Tx, PersonOutcome) error) (PersonOutcome, error) {
	if err := CheckRoles(p.Roles); err != nil {
		return PersonOutcome{}, err
	}
	if p.ID == "" || p.Org.ID == "" {
		return PersonOutcome{}, fault.E(fault.Invalid, "give id, name, org_id and roles")
	}
	var out PersonOutcome
	err := s.tx(ctx, func(tx *sql.Tx) error {
		p.Active = !gains(nil, false, p.Roles, true)
		_, err := tx.ExecContext(ctx, `INSERT INTO people (id, name, org_id, roles, active, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			p.ID, p.Name, p.Org.ID, jsonText(p.Roles), p.Active, ts(s.now()))
		if err != nil {
			return fault.Wrap(fault.Invalid, err, "could not add %s: check that the id is new and org %s exists", p.ID, p.Org.ID)
		}
		out.Person = p
		if !p.Active {
			c, err := s.propose(ctx, tx, p.ID, "create", p.Roles, true, by)
			if err != nil {
				return err
			}
			out.Change = &c
		}
		if out.Enrolment, err = s.enrol(ctx, tx, p.ID, out.Change, by); err != nil {
			return err
		}
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	if err != nil {
		return PersonOutcome{}, err
	}
	out.Person, err = s.Person(ctx, p.ID)
	return out, err
}

// ChangeRoles replaces a person's roles on an admin's request: at once when
// no role needing confirmation is gained, else as a pending change with a
// new enrolment. The last active admin keeps the admin role.
func (s *Store) ChangeRoles(ctx context.Context, id string, roles []PersonRole, by string, inTx func(*sql.Tx, PersonOutcome) error) (PersonOutcome, error) {
	if err := CheckRoles(roles); err != nil {
		return PersonOutcome{}, err
	}
	return s.changePerson(ctx, id, "roles", by, func(p Person) ([]PersonRole, bool) { return roles, p.Active }, inTx)
}

// ChangeActive activates or deactivates a person on an admin's request.
// Deactivation applies at once and refuses the person's tokens from the
// next request on (Art. 18); it is refused for the last active admin.
// Activation of a person who holds a role needing confirmation is a
// pending change with a new enrolment.
func (s *Store) ChangeActive(ctx context.Context, id string, active bool, by string, inTx func(*sql.Tx, PersonOutcome) error) (PersonOutcome, error) {
	kind := "deactivate"
	if active {
		kind = "activate"
	}
	return s.changePerson(ctx, id, kind, by, func(p Person) ([]PersonRole, bool) { return p.Roles, active }, inTx)
}

// Reenrol gives a person a new enrolment secret, for a lost token: for a
// person holding a role that needs confirmation it is a pending change,
// and the secret is redeemable once an approver confirms it.
func (s *Store) Reenrol(ctx context.Context, id, by string, inTx func(*sql.Tx, PersonOutcome) error) (PersonOutcome, error) {
	return s.changePerson(ctx, id, "enrol", by, func(p Person) ([]PersonRole, bool) { return p.Roles, p.Active }, inTx)
}

func (s *Store) changePerson(ctx context.Context, id, kind, by string, target func(Person) ([]PersonRole, bool), inTx func(*sql.Tx, PersonOutcome) error) (PersonOutcome, error) {
	defer s.sessions.forget()
	var out PersonOutcome
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockPeople(ctx, tx); err != nil {
			return err
		}
		p, err := scanPerson(tx.QueryRowContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.E(fault.NotFound, "no person %s", id)
		}
		if err != nil {
			return fmt.Errorf("load person %s: %w", id, err)
		}
		roles, active := target(p)
		if p.Has(Admin) && p.Active && (!active || !hasRole(roles, Admin)) {
			n, err := s.otherAdmins(ctx, tx, id)
			if err != nil {
				return err
			}
			if n == 0 {
				return fault.E(fault.Conflict, "%s is the last active admin; add and enrol another admin first", id)
			}
		}
		// Any change supersedes what was pending for the person.
		if _, err := tx.ExecContext(ctx, `UPDATE person_changes SET state = $1, decided_at = $2 WHERE person_id = $3 AND state = $4`,
			string(ChangeSuperseded), ts(s.now()), id, string(ChangePending)); err != nil {
			return fmt.Errorf("supersede changes of %s: %w", id, err)
		}
		out.Person = p
		if kind == "enrol" || gains(p.Roles, p.Active, roles, active) {
			if kind == "enrol" && !active {
				return fault.E(fault.Conflict, "%s is not active; activate them, which gives a new enrolment", id)
			}
			if kind == "enrol" && len(confirmed(roles, active)) == 0 {
				// An admin's new enrolment gives nothing an admin lacks.
				if out.Enrolment, err = s.enrol(ctx, tx, id, nil, by); err != nil {
					return err
				}
			} else {
				c, err := s.propose(ctx, tx, id, kind, roles, active, by)
				if err != nil {
					return err
				}
				out.Change = &c
				if out.Enrolment, err = s.enrol(ctx, tx, id, &c, by); err != nil {
					return err
				}
			}
		} else {
			if _, err := tx.ExecContext(ctx, `UPDATE people SET roles = $1, active = $2 WHERE id = $3`, jsonText(roles), active, id); err != nil {
				return fmt.Errorf("update person %s: %w", id, err)
			}
			out.Person.Roles, out.Person.Active = roles, active
		}
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	return out, err
}

func hasRole(rs []PersonRole, r PersonRole) bool { return Person{Roles: rs}.Has(r) }

// lockPeople serialises changes to people, so that two admins cannot
// deactivate each other at once and leave none. SQLite transactions here
// are already exclusive (_txlock=immediate).
func (s *Store) lockPeople(ctx context.Context, tx *sql.Tx) error {
	if s.dialect != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7426002)`); err != nil {
		return fmt.Errorf("lock people: %w", err)
	}
	return nil
}

// otherAdmins counts the active admins other than id.
func (s *Store) otherAdmins(ctx context.Context, tx *sql.Tx, id string) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT roles FROM people WHERE active = TRUE AND id <> $1`, id)
	if err != nil {
		return 0, fmt.Errorf("count admins: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var roles string
		if err := rows.Scan(&roles); err != nil {
			return 0, fmt.Errorf("count admins: %w", err)
		}
		var rs []PersonRole
		if err := json.Unmarshal([]byte(roles), &rs); err != nil {
			return 0, fmt.Errorf("count admins: %w", err)
		}
		if hasRole(rs, Admin) {
			n++
		}
	}
	return n, rows.Err()
}

func (s *Store) propose(ctx context.Context, tx *sql.Tx, person, kind string, roles []PersonRole, active bool, by string) (PersonChange, error) {
	c := PersonChange{ID: NewID("chg"), Person: person, Kind: kind, Roles: roles, Active: active, RequestedBy: by, State: ChangePending, CreatedAt: s.now()}
	_, err := tx.ExecContext(ctx, `INSERT INTO person_changes (id, person_id, kind, roles, active, requested_by, state, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, c.ID, person, kind, jsonText(roles), active, by, string(c.State), ts(c.CreatedAt))
	if err != nil {
		return PersonChange{}, fmt.Errorf("store change of %s: %w", person, err)
	}
	return c, nil
}

// enrol stores a new enrolment secret for person, tied to change when it
// needs that change's confirmation.
func (s *Store) enrol(ctx context.Context, tx *sql.Tx, person string, change *PersonChange, by string) (*Enrolment, error) {
	sec, err := secret("enr_")
	if err != nil {
		return nil, err
	}
	e := &Enrolment{ID: NewID("enr"), Person: person, Secret: sec, NeedsConfirmation: change != nil, ExpiresAt: s.now().Add(EnrolmentLife)}
	var changeID any
	if change != nil {
		changeID = change.ID
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO enrolments (id, person_id, secret_hash, change_id, created_by, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.ID, person, HashToken(sec), changeID, by, ts(s.now()), ts(e.ExpiresAt))
	if err != nil {
		return nil, fmt.Errorf("store enrolment of %s: %w", person, err)
	}
	return e, nil
}

const changeCols = `id, person_id, kind, roles, active, requested_by, state, coalesce(decided_by, ''), coalesce(reason, ''), created_at, coalesce(decided_at, '')`

func scanChange(row interface{ Scan(...any) error }) (PersonChange, error) {
	var c PersonChange
	var roles, state, created, decided string
	if err := row.Scan(&c.ID, &c.Person, &c.Kind, &roles, &c.Active, &c.RequestedBy, &state, &c.DecidedBy, &c.Reason, &created, &decided); err != nil {
		return PersonChange{}, err
	}
	c.State, c.CreatedAt = ChangeState(state), parseTS(created)
	if decided != "" {
		t := parseTS(decided)
		c.DecidedAt = &t
	}
	if err := json.Unmarshal([]byte(roles), &c.Roles); err != nil {
		return PersonChange{}, fmt.Errorf("decode change %s: %w", c.ID, err)
	}
	return c, nil
}

// PersonChanges lists proposed changes to people, newest first; state ""
// lists all.
func (s *Store) PersonChanges(ctx context.Context, state ChangeState) ([]PersonChange, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+changeCols+` FROM person_changes WHERE $1 = '' OR state = $1 ORDER BY created_at DESC, id`, string(state))
	if err != nil {
		return nil, fmt.Errorf("list changes to people: %w", err)
	}
	defer rows.Close()
	out := []PersonChange{}
	for rows.Next() {
		c, err := scanChange(rows)
		if err != nil {
			return nil, fmt.Errorf("list changes to people: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ConfirmChange is an approver's confirmation of a pending change to a
// person: it applies the change, revokes the person's earlier tokens, and
// returns the code that, with the admin's secret, redeems the person's new
// enrolment. The approver must hold the approver role (the caller checks)
// and be neither the person nor whoever proposed the change.
func (s *Store) ConfirmChange(ctx context.Context, id, approver string, inTx func(*sql.Tx, Confirmation) error) (Confirmation, error) {
	defer s.sessions.forget()
	var out Confirmation
	err := s.decide(ctx, id, approver, func(tx *sql.Tx, c *PersonChange) error {
		if err := CheckRoles(c.Roles); err != nil {
			return err
		}
		now := s.now()
		if _, err := tx.ExecContext(ctx, `UPDATE people SET roles = $1, active = $2 WHERE id = $3`, jsonText(c.Roles), c.Active, c.Person); err != nil {
			return fmt.Errorf("apply change %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = $1 WHERE person_id = $2 AND revoked_at IS NULL`, ts(now), c.Person); err != nil {
			return fmt.Errorf("revoke earlier tokens of %s: %w", c.Person, err)
		}
		code, err := secret("cnf_")
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE enrolments SET confirm_hash = $1 WHERE change_id = $2 AND redeemed_at IS NULL`, HashToken(code), id)
		if err != nil {
			return fmt.Errorf("confirm enrolment of %s: %w", c.Person, err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			out.Code = code
		}
		c.State = ChangeConfirmed
		out.Change = *c
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	return out, err
}

// RejectChange ends a pending change to a person with a reason; nothing of
// it applies and its enrolment can never be redeemed.
func (s *Store) RejectChange(ctx context.Context, id, by, reason string, inTx func(*sql.Tx, PersonChange) error) (PersonChange, error) {
	if reason == "" {
		return PersonChange{}, fault.E(fault.Invalid, "give a reason for the rejection")
	}
	var out PersonChange
	err := s.decide(ctx, id, by, func(tx *sql.Tx, c *PersonChange) error {
		c.State, c.Reason = ChangeRejected, reason
		out = *c
		if inTx != nil {
			return inTx(tx, out)
		}
		return nil
	})
	return out, err
}

// decide loads a pending change, checks that by is a second person, runs
// apply, and records the decision, all in one transaction.
func (s *Store) decide(ctx context.Context, id, by string, apply func(*sql.Tx, *PersonChange) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.lockPeople(ctx, tx); err != nil {
			return err
		}
		c, err := scanChange(tx.QueryRowContext(ctx, `SELECT `+changeCols+` FROM person_changes WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.E(fault.NotFound, "no change %s", id)
		}
		if err != nil {
			return fmt.Errorf("load change %s: %w", id, err)
		}
		if c.State != ChangePending {
			return fault.E(fault.Conflict, "change %s is %s; only pending changes can be decided", id, c.State)
		}
		if by == c.RequestedBy {
			return fault.E(fault.Forbidden, "you proposed change %s; a second person must decide it", id)
		}
		if by == c.Person {
			return fault.E(fault.Forbidden, "change %s is about you; a second person must decide it", id)
		}
		decider, err := scanPerson(tx.QueryRowContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1`, by))
		if err != nil || !decider.Active || !decider.Has(Approver) {
			return fault.E(fault.Forbidden, "only an active approver decides changes to people")
		}
		if err := apply(tx, &c); err != nil {
			return err
		}
		now := s.now()
		c.DecidedBy, c.DecidedAt = by, &now
		_, err = tx.ExecContext(ctx, `UPDATE person_changes SET state = $1, decided_by = $2, reason = $3, decided_at = $4 WHERE id = $5`,
			string(c.State), by, c.Reason, ts(now), id)
		return err
	})
}

// Enrolled is a redeemed enrolment: the person and their new token, shown
// once.
type Enrolled struct {
	Person  Person `json:"person"`
	TokenID string `json:"token_id"`
	Token   string `json:"token"`
}

// Redeem exchanges an enrolment secret (with the approver's confirmation
// code when the enrolment needs one) for the person's new token, once. The
// person's other tokens are revoked. A refusal that matched a known
// enrolment returns its person's id with the error, so that it can be
// recorded against them.
func (s *Store) Redeem(ctx context.Context, secret, code string) (Enrolled, string, error) {
	defer s.sessions.forget()
	var out Enrolled
	var who string
	refused := fault.E(fault.Unauthenticated, "the enrolment secret or confirmation code is unknown, used, expired or not yet confirmed")
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var id, person, confirm, expires, redeemed string
		var changeID sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT id, person_id, change_id, coalesce(confirm_hash, ''), expires_at, coalesce(redeemed_at, '')
			FROM enrolments WHERE secret_hash = $1`, HashToken(secret)).Scan(&id, &person, &changeID, &confirm, &expires, &redeemed)
		if errors.Is(err, sql.ErrNoRows) {
			return refused
		}
		if err != nil {
			return fmt.Errorf("load enrolment: %w", err)
		}
		who = person
		now := s.now()
		if redeemed != "" || !now.Before(parseTS(expires)) {
			return refused
		}
		if changeID.Valid && (confirm == "" || subtle.ConstantTimeCompare([]byte(confirm), []byte(HashToken(code))) != 1) {
			return refused
		}
		p, err := scanPerson(tx.QueryRowContext(ctx, `SELECT `+personCols+` FROM people p JOIN orgs o ON o.id = p.org_id WHERE p.id = $1`, person))
		if err != nil {
			return fmt.Errorf("load person %s: %w", person, err)
		}
		if !p.Active {
			return refused
		}
		if _, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at = $1 WHERE person_id = $2 AND revoked_at IS NULL`, ts(now), person); err != nil {
			return fmt.Errorf("revoke earlier tokens of %s: %w", person, err)
		}
		tokID, tok, err := issueToken(ctx, tx, now, person, "enrolment")
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enrolments SET redeemed_at = $1, token_id = $2 WHERE id = $3`, ts(now), tokID, id); err != nil {
			return fmt.Errorf("record enrolment of %s: %w", person, err)
		}
		out = Enrolled{Person: p, TokenID: tokID, Token: tok}
		return nil
	})
	return out, who, err
}
