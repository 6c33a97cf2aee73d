package api

import (
	"database/sql"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
)

// People and tokens are the admins' job (Art. 16, 17, 22(6)): admins hold no
// data rights of their own, every change here is audited, and whatever
// gives someone approval power, audit access or data access waits for an
// approver's confirmation (see catalog/enrol.go).

func (s *Server) done(c *gin.Context, action string, fields map[string]any, status int, body any) {
	p := person(c)
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: action, Outcome: "ok", Detail: detail(fields)})
	c.JSON(status, body)
}

func (s *Server) listPeople(c *gin.Context) {
	ps, err := s.cfg.Store.People(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"people": ps})
}

// personAnswer is the status of a change to a person: 201 or 200 when it
// applied, 202 when it waits for an approver's confirmation.
func personAnswer(o catalog.PersonOutcome, applied int) int {
	if o.Change != nil {
		return http.StatusAccepted
	}
	return applied
}

// outcomeFields is what the audit entry of a change to a person records;
// never the enrolment secret.
func outcomeFields(o catalog.PersonOutcome) map[string]any {
	f := map[string]any{"person": o.Person.ID, "roles": o.Person.Roles, "active": o.Person.Active}
	if o.Change != nil {
		f["change_id"], f["proposed_roles"], f["proposed_active"], f["state"] = o.Change.ID, o.Change.Roles, o.Change.Active, o.Change.State
	}
	if o.Enrolment != nil {
		f["enrolment_id"], f["needs_confirmation"] = o.Enrolment.ID, o.Enrolment.NeedsConfirmation
	}
	return f
}

// postPerson adds a person. The answer holds their one-time enrolment
// secret for the admin to hand over; a person with any role but admin is
// inactive until an approver confirms the change.
func (s *Server) postPerson(c *gin.Context) {
	p := person(c)
	var body struct {
		ID    string               `json:"id"`
		Name  string               `json:"name"`
		Org   string               `json:"org_id"`
		Roles []catalog.PersonRole `json:"roles"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "person.create", badJSON(err))
		return
	}
	np := catalog.Person{ID: body.ID, Name: body.Name, Org: catalog.Org{ID: body.Org}, Roles: body.Roles}
	o, err := s.cfg.Store.AddPerson(c.Request.Context(), np, p.ID, func(tx *sql.Tx, o catalog.PersonOutcome) error {
		return s.auditTx(c, "person.create", func() map[string]any { return outcomeFields(o) })(tx)
	})
	if err != nil {
		s.refuse(c, p, "person.create", err)
		return
	}
	c.JSON(personAnswer(o, http.StatusCreated), o)
}

func (s *Server) setRoles(c *gin.Context) {
	p := person(c)
	var body struct {
		Roles []catalog.PersonRole `json:"roles"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "person.roles", badJSON(err))
		return
	}
	o, err := s.cfg.Store.ChangeRoles(c.Request.Context(), c.Param("id"), body.Roles, p.ID, func(tx *sql.Tx, o catalog.PersonOutcome) error {
		return s.auditTx(c, "person.roles", func() map[string]any { return outcomeFields(o) })(tx)
	})
	if err != nil {
		s.refuse(c, p, "person.roles", err)
		return
	}
	c.JSON(personAnswer(o, http.StatusOK), o)
}

func (s *Server) setActive(active bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := person(c)
		action := "person.deactivate"
		if active {
			action = "person.activate"
		}
		o, err := s.cfg.Store.ChangeActive(c.Request.Context(), c.Param("id"), active, p.ID, func(tx *sql.Tx, o catalog.PersonOutcome) error {
			return s.auditTx(c, action, func() map[string]any { return outcomeFields(o) })(tx)
		})
		if err != nil {
			s.refuse(c, p, action, err)
			return
		}
		c.JSON(personAnswer(o, http.StatusOK), o)
	}
}

// reenrol gives a person a new enrolment secret (a lost token); for anyone
// but an admin it waits for an approver's confirmation.
func (s *Server) reenrol(c *gin.Context) {
	p := person(c)
	o, err := s.cfg.Store.Reenrol(c.Request.Context(), c.Param("id"), p.ID, func(tx *sql.Tx, o catalog.PersonOutcome) error {
		return s.auditTx(c, "person.enrolment", func() map[string]any { return outcomeFields(o) })(tx)
	})
	if err != nil {
		s.refuse(c, p, "person.enrolment", err)
		return
	}
	c.JSON(personAnswer(o, http.StatusCreated), o)
}

func (s *Server) listChanges(c *gin.Context) {
	cs, err := s.cfg.Store.PersonChanges(c.Request.Context(), catalog.ChangeState(c.Query("state")))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changes": cs})
}

// confirmChange is an approver's confirmation of a change to a person. The
// answer holds the confirmation code the approver hands to the person.
func (s *Server) confirmChange(c *gin.Context) {
	p := person(c)
	out, err := s.cfg.Store.ConfirmChange(c.Request.Context(), c.Param("id"), p.ID, func(tx *sql.Tx, cf catalog.Confirmation) error {
		return s.auditTx(c, "person.confirm", func() map[string]any {
			return map[string]any{"change_id": cf.Change.ID, "person": cf.Change.Person, "kind": cf.Change.Kind, "roles": cf.Change.Roles,
				"active": cf.Change.Active, "requested_by": cf.Change.RequestedBy, "enrolment_confirmed": cf.Code != ""}
		})(tx)
	})
	if err != nil {
		s.refuse(c, p, "person.confirm", err)
		return
	}
	c.JSON(http.StatusOK, out)
}

func (s *Server) rejectChange(c *gin.Context) {
	p := person(c)
	var body struct {
		Reason string `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "person.reject", badJSON(err))
		return
	}
	ch, err := s.cfg.Store.RejectChange(c.Request.Context(), c.Param("id"), p.ID, body.Reason, func(tx *sql.Tx, ch catalog.PersonChange) error {
		return s.auditTx(c, "person.reject", func() map[string]any {
			return map[string]any{"change_id": ch.ID, "person": ch.Person, "kind": ch.Kind, "reason": ch.Reason}
		})(tx)
	})
	if err != nil {
		s.refuse(c, p, "person.reject", err)
		return
	}
	c.JSON(http.StatusOK, ch)
}

// enrol redeems a one-time enrolment secret for the person's first (or
// replacement) token. It needs no token; failures count against the
// caller's address like any unauthenticated request.
func (s *Server) enrol(c *gin.Context) {
	var body struct {
		Secret string `json:"secret"`
		Code   string `json:"confirmation_code"`
	}
	if err := c.ShouldBindJSON(&body); err != nil || body.Secret == "" {
		s.refuseAnonymous(c, "enrol", catalog.Person{}, "", invalid("send {\"secret\": \"...\", \"confirmation_code\": \"...\"}; the code comes from the approver who confirmed you"))
		return
	}
	out, who, err := s.cfg.Store.Redeem(c.Request.Context(), strings.TrimSpace(body.Secret), strings.TrimSpace(body.Code))
	if err != nil {
		s.refuseAnonymous(c, "enrol", catalog.Person{ID: who}, "", err)
		return
	}
	c.Request = c.Request.WithContext(withToken(c.Request.Context(), out.TokenID))
	s.audit(c.Request.Context(), audit.Entry{Actor: out.Person.ID, Role: roleText(out.Person), Action: "enrol", Outcome: "ok",
		Detail: detail(map[string]any{"person": out.Person.ID, "token_id": out.TokenID})})
	c.JSON(http.StatusCreated, gin.H{"person": out.Person, "token_id": out.TokenID, "token": out.Token,
		"note": "the token is shown once; only its SM3 hash is kept. Rotate it yourself with POST /v1/tokens/{id}/rotate"})
}

func (s *Server) listTokens(c *gin.Context) {
	ts, err := s.cfg.Store.Tokens(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts})
}

// ownToken checks that token id belongs to the caller.
func (s *Server) ownToken(c *gin.Context, id string) error {
	p := person(c)
	ts, err := s.cfg.Store.Tokens(c.Request.Context(), p.ID)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.ID == id {
			return nil
		}
	}
	return fault.E(fault.NotFound, "no token %s of yours", id)
}

// revokeToken revokes a token: an admin's, for anyone (taking access away
// needs no second person), or the holder's own.
func (s *Server) revokeToken(c *gin.Context) {
	p := person(c)
	if !p.Has(catalog.Admin) {
		if err := s.ownToken(c, c.Param("id")); err != nil {
			s.refuse(c, p, "token.revoke", err)
			return
		}
	}
	t, err := s.cfg.Store.RevokeToken(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.refuse(c, p, "token.revoke", err)
		return
	}
	s.done(c, "token.revoke", map[string]any{"revoked_token_id": t.ID, "person": t.Person}, http.StatusOK, t)
}

// rotateToken issues a new token for the same person and label and revokes
// the old one; only the token's holder rotates it.
func (s *Server) rotateToken(c *gin.Context) {
	p := person(c)
	if err := s.ownToken(c, c.Param("id")); err != nil {
		s.refuse(c, p, "token.rotate", err)
		return
	}
	old, err := s.cfg.Store.RevokeToken(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.refuse(c, p, "token.rotate", err)
		return
	}
	id, tok, err := s.cfg.Store.IssueToken(c.Request.Context(), old.Person, old.Label)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.done(c, "token.rotate", map[string]any{"person": old.Person, "old_token_id": old.ID, "new_token_id": id}, http.StatusCreated,
		gin.H{"id": id, "token": tok, "revoked": old.ID})
}

// postExportAssessment records an approved cross-border export assessment
// for an organisation (Art. 22(4)); approvers only.
func (s *Server) postExportAssessment(c *gin.Context) {
	p := person(c)
	var body struct {
		Approved  bool   `json:"approved"`
		Reference string `json:"reference"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "org.export_assessment", badJSON(err))
		return
	}
	if body.Approved && body.Reference == "" {
		s.refuse(c, p, "org.export_assessment", invalid("give the reference of the approved export assessment"))
		return
	}
	if err := s.cfg.Store.SetExportAssessment(c.Request.Context(), c.Param("id"), body.Approved); err != nil {
		s.refuse(c, p, "org.export_assessment", err)
		return
	}
	s.done(c, "org.export_assessment", map[string]any{"org": c.Param("id"), "approved": body.Approved, "reference": body.Reference}, http.StatusOK,
		gin.H{"org": c.Param("id"), "export_assessment": body.Approved})
}
