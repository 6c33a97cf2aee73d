package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
)

// People and tokens are the admins' job (Art. 16, 17, 22(6)): admins hold no
// data rights of their own, and every change here is audited.

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
	if err := catalog.CheckRoles(body.Roles); err != nil {
		s.refuse(c, p, "person.create", err)
		return
	}
	np := catalog.Person{ID: body.ID, Name: body.Name, Org: catalog.Org{ID: body.Org}, Roles: body.Roles, Active: true}
	if body.ID == "" || body.Org == "" {
		s.refuse(c, p, "person.create", invalid("give id, name, org_id and roles"))
		return
	}
	if err := s.cfg.Store.CreatePerson(c.Request.Context(), np); err != nil {
		s.refuse(c, p, "person.create", invalid("could not create %s: check that the id is new and org %s exists", body.ID, body.Org))
		return
	}
	s.done(c, "person.create", map[string]any{"person": body.ID, "roles": body.Roles, "org": body.Org}, http.StatusCreated, np)
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
	np, err := s.cfg.Store.SetRoles(c.Request.Context(), c.Param("id"), body.Roles)
	if err != nil {
		s.refuse(c, p, "person.roles", err)
		return
	}
	s.done(c, "person.roles", map[string]any{"person": np.ID, "roles": np.Roles}, http.StatusOK, np)
}

func (s *Server) setActive(active bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := person(c)
		action := "person.deactivate"
		if active {
			action = "person.activate"
		}
		np, err := s.cfg.Store.SetActive(c.Request.Context(), c.Param("id"), active)
		if err != nil {
			s.refuse(c, p, action, err)
			return
		}
		s.done(c, action, map[string]any{"person": np.ID}, http.StatusOK, np)
	}
}

func (s *Server) issueToken(c *gin.Context) {
	p := person(c)
	var body struct {
		Label string `json:"label"`
	}
	c.ShouldBindJSON(&body)
	who := c.Param("id")
	if _, err := s.cfg.Store.Person(c.Request.Context(), who); err != nil {
		s.refuse(c, p, "token.issue", err)
		return
	}
	id, tok, err := s.cfg.Store.IssueToken(c.Request.Context(), who, body.Label)
	if err != nil {
		s.fail(c, err)
		return
	}
	s.done(c, "token.issue", map[string]any{"person": who, "token_id": id, "label": body.Label}, http.StatusCreated,
		gin.H{"id": id, "token": tok, "note": "the token is shown once; only its SM3 hash is kept"})
}

func (s *Server) listTokens(c *gin.Context) {
	ts, err := s.cfg.Store.Tokens(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"tokens": ts})
}

func (s *Server) revokeToken(c *gin.Context) {
	p := person(c)
	t, err := s.cfg.Store.RevokeToken(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.refuse(c, p, "token.revoke", err)
		return
	}
	s.done(c, "token.revoke", map[string]any{"token_id": t.ID, "person": t.Person}, http.StatusOK, t)
}

// rotateToken issues a new token for the same person and label and revokes
// the old one.
func (s *Server) rotateToken(c *gin.Context) {
	p := person(c)
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
	s.done(c, "token.rotate", map[string]any{"person": old.Person, "old_token_id": old.ID, "token_id": id}, http.StatusCreated,
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
