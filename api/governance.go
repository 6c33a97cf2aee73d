package api

import (
	"database/sql"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/release"
)

// budgetLine is one grant's budget in GET /v1/budgets: epsilon_spent is
// the accountant's (see package accountant), epsilon_sum the plain sum
// of the history's epsilons.
type budgetLine struct {
	GrantID          string    `json:"grant_id"`
	Researcher       string    `json:"researcher"`
	Dataset          string    `json:"dataset"`
	Datasets         []string  `json:"datasets"`
	EpsilonTotal     float64   `json:"epsilon_total"`
	EpsilonSpent     float64   `json:"epsilon_spent"`
	EpsilonRemaining float64   `json:"epsilon_remaining"`
	DeltaTotal       float64   `json:"delta_total"`
	DeltaSpent       float64   `json:"delta_spent"`
	DeltaRemaining   float64   `json:"delta_remaining"`
	EpsilonSum       float64   `json:"epsilon_sum"`
	DeltaSum         float64   `json:"delta_sum"`
	RhoSpent         float64   `json:"rho_spent"`
	Accounting       string    `json:"accounting"`
	EpsilonSpentBy   string    `json:"epsilon_spent_by"`
	ExpiresAt        time.Time `json:"expires_at"`
	Live             bool      `json:"live"`
}

func (s *Server) getBudgets(c *gin.Context) {
	p := person(c)
	who := p.ID
	if p.Has(catalog.Auditor) {
		who = ""
	}
	grants, err := s.cfg.Store.Grants(c.Request.Context(), who)
	if err != nil {
		s.fail(c, err)
		return
	}
	now := s.cfg.Store.Now()
	out := []budgetLine{}
	for _, g := range grants {
		b := catalog.BalanceOf(g)
		out = append(out, budgetLine{
			GrantID: g.ID, Researcher: g.Researcher, Dataset: g.Dataset(), Datasets: g.Datasets,
			EpsilonTotal: g.EpsilonTotal, EpsilonSpent: g.EpsilonSpent, EpsilonRemaining: b.EpsilonRemaining,
			DeltaTotal: g.DeltaTotal, DeltaSpent: g.DeltaSpent, DeltaRemaining: b.DeltaRemaining,
			EpsilonSum: g.EpsilonSum, DeltaSum: g.DeltaSum, RhoSpent: g.RhoSpent, Accounting: g.Accounting, EpsilonSpentBy: g.EpsilonSpentBy,
			ExpiresAt: g.ExpiresAt, Live: g.Live(now),
		})
	}
	c.JSON(http.StatusOK, gin.H{"budgets": out})
}

// getDatasets lists the datasets the caller may see: stewards, approvers and
// auditors see all; researchers those of their grants. Never data values.
func (s *Server) getDatasets(c *gin.Context) {
	ctx := c.Request.Context()
	p := person(c)
	all, err := s.cfg.Store.Datasets(ctx)
	if err != nil {
		s.fail(c, err)
		return
	}
	visible := map[string]bool{}
	seeAll := p.Has(catalog.Steward) || p.Has(catalog.Approver) || p.Has(catalog.Auditor) || p.Has(catalog.Admin)
	if !seeAll {
		grants, err := s.cfg.Store.Grants(ctx, p.ID)
		if err != nil {
			s.fail(c, err)
			return
		}
		for _, g := range grants {
			for _, d := range g.Datasets {
				visible[d] = true
			}
		}
	}
	out := []catalog.Dataset{}
	for _, d := range all {
		if seeAll || visible[d.Name] || p.Has(catalog.Researcher) {
			// Researchers see every dataset's description and policy so
			// that they can apply for access; never any value.
			out = append(out, d)
		}
	}
	c.JSON(http.StatusOK, gin.H{"datasets": out})
}

type accessRequestBody struct {
	Datasets  []string  `json:"datasets"`
	Columns   []string  `json:"columns"`
	Purpose   string    `json:"purpose"`
	Method    string    `json:"processing_method"`
	Epsilon   float64   `json:"epsilon"`
	Delta     *float64  `json:"delta"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) postRequest(c *gin.Context) {
	ctx := c.Request.Context()
	p := person(c)
	var body accessRequestBody
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "request.create", badJSON(err))
		return
	}
	// Without a delta, the request gets what the noisy k rules of the
	// grade's expected number of queries need (release.DefaultDelta).
	var delta float64
	if body.Delta != nil {
		delta = *body.Delta
	} else if s.cfg.Release != nil {
		var err error
		if delta, err = s.cfg.Release.DefaultDelta(ctx, body.Datasets); err != nil {
			s.refuse(c, p, "request.create", err)
			return
		}
	} else {
		delta = release.DefaultDelta(nil, privacy.Limits{})
	}
	r, err := s.cfg.Store.CreateRequest(ctx, catalog.AccessRequest{
		Researcher: p.ID, Datasets: body.Datasets, Columns: body.Columns, Purpose: body.Purpose, Method: body.Method,
		Epsilon: body.Epsilon, Delta: delta, ExpiresAt: body.ExpiresAt,
	})
	if err != nil {
		s.refuse(c, p, "request.create", err)
		return
	}
	s.audit(ctx, audit.Entry{Actor: p.ID, Role: roleText(p), Action: "request.create", Outcome: "ok",
		Detail: detail(map[string]any{"request_id": r.ID, "datasets": r.Datasets, "purpose": r.Purpose, "epsilon": r.Epsilon})})
	c.JSON(http.StatusCreated, gin.H{"id": r.ID, "state": r.State})
}

func (s *Server) listRequests(c *gin.Context) {
	p := person(c)
	who := p.ID
	if p.Has(catalog.Steward) || p.Has(catalog.Approver) || p.Has(catalog.Auditor) {
		who = ""
	}
	rs, err := s.cfg.Store.Requests(c.Request.Context(), who)
	if err != nil {
		s.fail(c, err)
		return
	}
	if rs == nil {
		rs = []catalog.AccessRequest{}
	}
	c.JSON(http.StatusOK, gin.H{"access_requests": rs})
}

func (s *Server) getRequest(c *gin.Context) {
	p := person(c)
	r, err := s.cfg.Store.Request(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if r.Researcher != p.ID && !p.Has(catalog.Steward) && !p.Has(catalog.Approver) && !p.Has(catalog.Auditor) {
		s.fail(c, fault.E(fault.NotFound, "no access request %s", r.ID))
		return
	}
	c.JSON(http.StatusOK, r)
}

// auditTx returns a hook that writes the audit entry of a governance change
// inside the change's own transaction, when the audit log supports it.
func (s *Server) auditTx(c *gin.Context, action string, fields func() map[string]any) func(*sql.Tx) error {
	p := person(c)
	return func(tx *sql.Tx) error {
		e := audit.Entry{Actor: p.ID, Role: roleText(p), Action: action, Outcome: "ok", Detail: detail(fields())}
		if s.cfg.Audit == nil {
			return nil
		}
		_, err := s.cfg.Audit.AppendTx(c.Request.Context(), tx, stamp(c.Request.Context(), e))
		return err
	}
}

func (s *Server) approveRequest(c *gin.Context) {
	p := person(c)
	var r catalog.AccessRequest
	r, err := s.cfg.Store.Approve(c.Request.Context(), c.Param("id"), p.ID, func(tx *sql.Tx, r catalog.AccessRequest) error {
		return s.auditTx(c, "request.approve", func() map[string]any { return map[string]any{"request_id": r.ID, "datasets": r.Datasets} })(tx)
	})
	if err != nil {
		s.refuse(c, p, "request.approve", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": r.ID, "state": r.State})
}

func (s *Server) verifyRequest(c *gin.Context) {
	p := person(c)
	r, err := s.cfg.Store.Verify(c.Request.Context(), c.Param("id"), p.ID, func(tx *sql.Tx, r catalog.AccessRequest) error {
		return s.auditTx(c, "request.verify", func() map[string]any {
			return map[string]any{"request_id": r.ID, "grant_id": r.GrantID, "datasets": r.Datasets, "epsilon": r.Epsilon}
		})(tx)
	})
	if err != nil {
		s.refuse(c, p, "request.verify", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": r.ID, "state": r.State, "grant_id": r.GrantID})
}

func (s *Server) rejectRequest(c *gin.Context) {
	p := person(c)
	var body struct {
		Reason string `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "request.reject", badJSON(err))
		return
	}
	r, err := s.cfg.Store.Reject(c.Request.Context(), c.Param("id"), p.ID, body.Reason, func(tx *sql.Tx, r catalog.AccessRequest) error {
		return s.auditTx(c, "request.reject", func() map[string]any { return map[string]any{"request_id": r.ID, "reason": r.Reason} })(tx)
	})
	if err != nil {
		s.refuse(c, p, "request.reject", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"id": r.ID, "state": r.State, "reason": r.Reason})
}

func (s *Server) revokeGrant(c *gin.Context) {
	p := person(c)
	g, err := s.cfg.Store.Revoke(c.Request.Context(), c.Param("id"), func(tx *sql.Tx, g catalog.Grant) error {
		return s.auditTx(c, "grant.revoke", func() map[string]any { return map[string]any{"grant_id": g.ID, "researcher": g.Researcher} })(tx)
	})
	if err != nil {
		s.refuse(c, p, "grant.revoke", err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"grant_id": g.ID, "revoked_at": g.RevokedAt})
}

func (s *Server) getQuota(c *gin.Context) {
	name := c.Query("dataset")
	if name == "" {
		s.fail(c, fault.E(fault.Invalid, "name the dataset: GET /v1/quota?dataset=NAME"))
		return
	}
	if s.cfg.Quota == nil {
		s.fail(c, fault.E(fault.NotFound, "the Article 11 quota is not tracked by this gateway"))
		return
	}
	st, err := s.cfg.Quota.Status(c.Request.Context(), name)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, st)
}

// postAssessment records an approved Article 11 risk assessment, which
// raises the year's line for the dataset.
func (s *Server) postAssessment(c *gin.Context) {
	p := person(c)
	var body struct {
		Dataset   string  `json:"dataset"`
		Threshold float64 `json:"threshold"`
		Reference string  `json:"reference"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "quota.assessment", badJSON(err))
		return
	}
	if s.cfg.Quota == nil {
		s.fail(c, fault.E(fault.NotFound, "the Article 11 quota is not tracked by this gateway"))
		return
	}
	st, err := s.cfg.Quota.RecordAssessment(c.Request.Context(), body.Dataset, body.Threshold, body.Reference, p.ID)
	if err != nil {
		s.refuse(c, p, "quota.assessment", err)
		return
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "quota.assessment", Dataset: body.Dataset,
		Grade: string(policy.Core), Outcome: "ok", Detail: detail(map[string]any{"threshold": body.Threshold, "reference": body.Reference})})
	c.JSON(http.StatusOK, st)
}

// getGrantHistory is a grant's budget over time: each line with its
// epsilon and rho, the running plain sum (epsilon_cumulative, which ends
// at the grant's epsilon_sum), the running rho, and what the accountant
// charged after it (epsilon_spent_after). Auditors see every grant;
// researchers their own.
func (s *Server) getGrantHistory(c *gin.Context) {
	p := person(c)
	g, err := s.cfg.Store.Grant(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.fail(c, err)
		return
	}
	if !p.Has(catalog.Auditor) && g.Researcher != p.ID {
		s.fail(c, fault.E(fault.NotFound, "no grant %s", g.ID))
		return
	}
	qs, err := s.cfg.Store.History(c.Request.Context(), g.ID)
	if err != nil {
		s.fail(c, err)
		return
	}
	type point struct {
		catalog.QueryRecord
		EpsilonCumulative float64 `json:"epsilon_cumulative"`
		RhoCumulative     float64 `json:"rho_cumulative"`
		EpsilonSpentAfter float64 `json:"epsilon_spent_after"`
		EpsilonSpentBy    string  `json:"epsilon_spent_by"`
	}
	out := []point{}
	var sum accountant.Spent
	for _, q := range qs {
		sum = sum.Plus(q.Units)
		pos := g.Budget().Position(sum)
		out = append(out, point{q, accountant.Figure(sum.EpsilonSum, accountant.EpsilonScale), accountant.Figure(sum.Rho, accountant.RhoScale),
			pos.EpsilonSpent, pos.By})
	}
	c.JSON(http.StatusOK, gin.H{"grant_id": g.ID, "epsilon_total": g.EpsilonTotal, "epsilon_spent": g.EpsilonSpent,
		"epsilon_sum": g.EpsilonSum, "rho_spent": g.RhoSpent, "delta_total": g.DeltaTotal, "delta_spent": g.DeltaSpent, "delta_sum": g.DeltaSum,
		"accounting": g.Accounting, "epsilon_spent_by": g.EpsilonSpentBy, "queries": out})
}
