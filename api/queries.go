package api

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
	"github.com/hospital/gateway/sandbox"
)

type queryRequest struct {
	SQL     string   `json:"sql"`
	Epsilon *float64 `json:"epsilon"`
	Delta   *float64 `json:"delta"`
	GrantID string   `json:"grant_id"`
	// Exact asks for an exact, small-cell-suppressed answer without noise,
	// which the grade rules allow for general data only.
	Exact bool `json:"exact"`
}

// queryResponse is the contract's query answer.
type queryResponse struct {
	QueryID string          `json:"query_id"`
	GrantID string          `json:"grant_id"`
	Grade   catalog.Grade   `json:"grade"`
	Columns []engine.Column `json:"columns"`
	Rows    [][]any         `json:"rows"`
	Privacy privacy.Report  `json:"privacy"`
	Budget  catalog.Balance `json:"budget"`
	Cached  bool            `json:"cached"`
	Receipt *Receipt        `json:"receipt,omitempty"`
}

func detail(m map[string]any) json.RawMessage {
	b, _ := json.Marshal(m)
	return b
}

func (s *Server) postQuery(c *gin.Context) {
	ctx := c.Request.Context()
	p := person(c)
	var req queryRequest
	if err := c.ShouldBindJSON(&req); err != nil {
		s.refuse(c, p, "query", badJSON(err))
		return
	}
	resp, err := s.runQuery(ctx, p, req)
	s.observe(ctx, p, resp, err)
	if err != nil {
		e := audit.Entry{Actor: p.ID, Role: roleText(p), Action: "query", Outcome: fault.KindOf(err).Code(),
			Detail: detail(map[string]any{"sql": req.SQL, "grant_id": req.GrantID, "message": fault.Message(err)})}
		if resp != nil {
			e.Dataset, e.Grade = strings.Join(resp.datasets, ","), string(resp.Grade)
		}
		s.audit(ctx, e)
		s.fail(c, err)
		return
	}
	if !resp.Cached {
		s.metrics.epsilon.WithLabelValues(strings.Join(resp.datasets, ",")).Add(resp.Privacy.Epsilon)
	}
	c.JSON(http.StatusOK, resp.queryResponse)
}

// queryResult carries the response and what the audit entry and the
// detectors need.
type queryResult struct {
	queryResponse
	datasets   []string
	shape, key string
	grantTotal float64
}

// observe hands a query's outcome to the abnormal-use detectors.
func (s *Server) observe(ctx context.Context, p catalog.Person, res *queryResult, err error) {
	if s.cfg.Alerts == nil {
		return
	}
	e := alerts.Event{Person: p.ID, Outcome: "ok"}
	if err != nil {
		e.Outcome = fault.KindOf(err).Code()
	}
	if res != nil {
		e.Dataset, e.Shape, e.Key, e.GrantID, e.GrantTotal = strings.Join(res.datasets, ","), res.shape, res.key, res.GrantID, res.grantTotal
		if err == nil && !res.Cached {
			e.Epsilon = res.Privacy.Epsilon
		}
	}
	s.cfg.Alerts.Observe(ctx, e)
}

func badJSON(err error) error {
	if strings.Contains(err.Error(), "too large") {
		return fault.Wrap(fault.TooLarge, err, "request body is too large")
	}
	return fault.Wrap(fault.Invalid, err, "the body must be JSON like {\"sql\": \"SELECT ...\", \"epsilon\": 0.1}")
}

// admission is what the checks before any planning establish: the
// analysed query, the one grant that covers it, the datasets it reads and
// the limits its grade allows.
type admission struct {
	q      *sandbox.Query
	grant  catalog.Grant
	used   []catalog.Dataset
	rule   catalog.GradeRule
	limits privacy.Limits
}

// runQuery is the query path: grant, analysis, plan, cache, quota, budget,
// execution, noise, storage, audit. Nothing leaves it but a protected answer.
func (s *Server) runQuery(ctx context.Context, p catalog.Person, req queryRequest) (*queryResult, error) {
	res := &queryResult{}
	adm, err := s.admit(ctx, p, req.SQL, req.GrantID, res)
	if err != nil {
		if res.datasets == nil { // refused before the analysis named what it reads
			return nil, err
		}
		return res, err
	}
	st := s.cfg.Store
	q, grant, used, rule, limits := adm.q, adm.grant, adm.used, adm.rule, adm.limits
	want := privacy.Cost{Epsilon: grant.DefaultEpsilon}
	if req.Epsilon != nil {
		want.Epsilon = *req.Epsilon
	}
	if req.Delta != nil {
		want.Delta = *req.Delta
	}
	var plan *privacy.Plan
	if req.Exact {
		if !rule.ExactAllowed {
			return res, fault.E(fault.QueryRejected, "exact answers are not allowed for %s-grade data; drop \"exact\" to get a differentially private answer", q.Grade)
		}
		for _, d := range used {
			if !d.ExactAnswers {
				return res, fault.E(fault.QueryRejected, "exact answers are not switched on for %s (a steward proposes them, an approver verifies); drop \"exact\" to get a differentially private answer", d.Name)
			}
		}
		if plan, err = privacy.NewExactPlan(q, limits); err != nil {
			return res, err
		}
		want = privacy.Cost{}
	} else if plan, err = privacy.NewPlan(q, want, limits); err != nil {
		return res, err
	}

	key := cacheKey(q.Key, want)
	if req.Exact {
		key = cacheKey(q.Key+"\x00exact", want)
	}
	if body, ok, err := st.Answer(ctx, grant.ID, key); err != nil {
		return res, err
	} else if ok {
		if err := json.Unmarshal(body, &res.queryResponse); err != nil {
			return res, fmt.Errorf("decode stored answer: %w", err)
		}
		g, err := st.Grant(ctx, grant.ID)
		if err != nil {
			return res, err
		}
		res.Budget, res.Cached = catalog.BalanceOf(g), true
		// Cached answers are releases too: recorded and audited, at no cost.
		err = st.RecordQuery(ctx, s.record(p, grant, q, res, privacy.Cost{}, "ok"), s.auditHook(ctx, audit.Entry{
			Actor: p.ID, Role: roleText(p), Action: "query", Dataset: strings.Join(q.Datasets, ","), Grade: string(q.Grade), Outcome: "ok",
			Detail: detail(map[string]any{"query_id": res.QueryID, "grant_id": grant.ID, "sql": req.SQL, "cached": true}),
		}))
		if err != nil {
			return res, fmt.Errorf("record cached release: %w", err)
		}
		return res, nil
	}

	// One wall-clock limit covers what the query makes DuckDB do.
	runCtx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	// A dataset whose Article 11 line was reached refuses other legal
	// entities before any budget is spent; a release that must be measured
	// returns its contributing units in the same DuckDB pass.
	var measured *quota.Pending
	if s.cfg.Quota != nil {
		if measured, err = s.cfg.Quota.Check(ctx, p.Org, used); err != nil {
			return res, err
		}
		if measured != nil {
			defer measured.Done()
			plan.MeasureUnits(measured.Range())
		}
	}
	prep, err := s.cfg.Engine.Prepare(ctx, plan.SQL)
	if err != nil {
		return res, err
	}
	defer prep.Close()
	var bal catalog.Balance
	if req.Exact {
		bal = catalog.BalanceOf(grant) // exact answers spend no budget
	} else if bal, err = st.Reserve(ctx, grant.ID, plan.Cost.Epsilon, plan.Cost.Delta); err != nil {
		return res, err
	}
	res.Budget = bal
	res.QueryID = catalog.NewID("qry")

	out, err := execute(runCtx, prep, plan)
	// A release refused because it would cross the line keeps its
	// reservation (fail closed); only the query that crosses pays, later
	// ones are refused above for free.
	if err == nil && measured != nil {
		err = measured.Measure(out)
	}
	if err != nil {
		if rerr := st.RecordQuery(context.WithoutCancel(ctx), s.record(p, grant, q, res, plan.Cost, fault.KindOf(err).Code()), nil); rerr != nil {
			s.cfg.Log.Error("record query history", "err", rerr)
		}
		return res, err
	}
	ans, err := plan.Release(out)
	if err != nil {
		return res, err
	}
	res.Columns, res.Rows, res.Privacy = ans.Columns, ans.Rows, ans.Privacy
	if err := s.sign(&res.queryResponse); err != nil {
		return res, err
	}
	body, err := json.Marshal(res.queryResponse)
	if err != nil {
		return res, fmt.Errorf("encode answer: %w", err)
	}
	// The answer, its history line and its audit entry commit together: an
	// answer whose audit entry cannot be written is not released.
	rec := s.record(p, grant, q, res, plan.Cost, "ok")
	auditRelease := s.auditHook(ctx, audit.Entry{
		Actor: p.ID, Role: roleText(p), Action: "query", Dataset: strings.Join(q.Datasets, ","), Grade: string(q.Grade), Outcome: "ok",
		Detail: detail(map[string]any{"query_id": res.QueryID, "grant_id": grant.ID, "sql": req.SQL, "epsilon": plan.Cost.Epsilon,
			"delta": plan.Cost.Delta, "org": p.Org.ID, "org_kind": p.Org.Kind, "groups": len(res.Rows), "suppressed": res.Privacy.SuppressedGroups}),
	})
	var stored []byte
	err = s.commitRelease(ctx, measured, res.QueryID, auditRelease, func(inTx func(*sql.Tx) error) (err error) {
		stored, err = st.Release(ctx, key, body, rec, inTx)
		return err
	})
	if err != nil {
		if fault.KindOf(err) == fault.Internal {
			err = fmt.Errorf("release answer: %w", err)
		}
		return res, err
	}
	if err := json.Unmarshal(stored, &res.queryResponse); err != nil {
		return res, fmt.Errorf("decode stored answer: %w", err)
	}
	res.Budget = bal
	return res, nil
}

// execute runs a prepared plan. Whatever stops it once it runs (the time
// limit, the memory limit, the group cap, anything DuckDB raises) is one
// refusal with one code and one text, and the budget stays spent: which
// limit a query hits, and when, can depend on the data, so the cause is
// not told. Errors that depend on the SQL and the schemas alone are
// raised before, by NewPlan and Prepare, and spend nothing.
func execute(ctx context.Context, prep *engine.Prepared, plan *privacy.Plan) (*engine.Result, error) {
	out, err := prep.Query(ctx, plan.MaxRows)
	if err != nil {
		return nil, fault.Wrap(fault.ResourceLimit, err, runLimitMessage)
	}
	return out, nil
}

// runLimitMessage is the one text of a query stopped while it ran.
const runLimitMessage = "the query was stopped by the sandbox's run-time limits (time or memory); its budget is spent; narrow it, filter it or group on coarser keys"

// admit runs the checks every query passes before it is planned: a live
// grant, the analysis against the grant's scope, one grant covering what is
// read, cross-border rules and the grade rules (Art. 5, 10, 13, 22(4)). It
// fills res with what the audit entry and the detectors need.
func (s *Server) admit(ctx context.Context, p catalog.Person, sqlText, grantID string, res *queryResult) (*admission, error) {
	st := s.cfg.Store
	now := st.Now()
	grants, err := st.Grants(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	var live []catalog.Grant
	for _, g := range grants {
		if grantID != "" && g.ID != grantID {
			continue
		}
		if grantID != "" && !g.Live(now) {
			return nil, fault.E(fault.Forbidden, "grant %s is revoked or expired", g.ID)
		}
		if g.Live(now) {
			live = append(live, g)
		}
	}
	if len(live) == 0 {
		if grantID != "" {
			return nil, fault.E(fault.Forbidden, "grant %s is not yours", grantID)
		}
		return nil, fault.E(fault.Forbidden, "you have no live grant; file an access request at POST /v1/access-requests")
	}

	// The scope is every dataset of the candidate grants; the grant is then
	// the one that covers what the query reads.
	datasets := map[string]catalog.Dataset{}
	var scope sandbox.Scope
	for _, g := range live {
		for _, name := range g.Datasets {
			if _, ok := datasets[name]; ok {
				continue
			}
			d, err := st.Dataset(ctx, name)
			if err != nil {
				return nil, err
			}
			datasets[name] = d
		}
	}
	columnsOf := func(g catalog.Grant) map[string]bool {
		if len(g.Columns) == 0 {
			return nil
		}
		m := map[string]bool{}
		for _, c := range g.Columns {
			m[strings.ToLower(c)] = true
		}
		return m
	}
	if len(live) == 1 {
		for _, name := range live[0].Datasets {
			scope.Sources = append(scope.Sources, sources(datasets[name], columnsOf(live[0]))...)
		}
	} else {
		for _, d := range datasets {
			scope.Sources = append(scope.Sources, sources(d, nil)...)
		}
	}
	q, err := sandbox.Analyze(ctx, s.cfg.Engine, sqlText, scope)
	if err != nil {
		return nil, err
	}
	res.datasets, res.shape, res.key, res.Grade = q.Datasets, q.Shape, q.Key, q.Grade
	var cands []catalog.Grant
	for _, g := range live {
		if coversAll(g, q.Datasets) {
			cands = append(cands, g)
		}
	}
	switch {
	case len(cands) == 0:
		return nil, fault.E(fault.Forbidden, "no single grant of yours covers %s", strings.Join(q.Datasets, ", "))
	case len(cands) > 1:
		return nil, fault.E(fault.Invalid, "several of your grants cover %s; name one with \"grant_id\"", strings.Join(q.Datasets, ", "))
	}
	grant := cands[0]
	if len(live) > 1 && len(grant.Columns) > 0 {
		// Re-check the column scope against the chosen grant.
		scope.Sources = nil
		for _, name := range grant.Datasets {
			scope.Sources = append(scope.Sources, sources(datasets[name], columnsOf(grant))...)
		}
		if q, err = sandbox.Analyze(ctx, s.cfg.Engine, sqlText, scope); err != nil {
			return nil, err
		}
	}
	res.GrantID, res.grantTotal = grant.ID, grant.EpsilonTotal
	adm := &admission{q: q, grant: grant}
	for _, name := range q.Datasets {
		adm.used = append(adm.used, datasets[name])
	}
	if err := crossBorder(p.Org, q.Grade); err != nil {
		return nil, err
	}

	// The grade rules bound what any dataset's policy allows (Art. 5).
	rules := s.cfg.GradeRules
	if rules == nil {
		rules = catalog.DefaultGradeRules()
	}
	adm.rule = rules[q.Grade]
	q.Policy.K, q.Policy.SpecialK = max(q.Policy.K, adm.rule.MinK), max(q.Policy.SpecialK, adm.rule.MinK)
	adm.limits = s.cfg.Limits
	if adm.limits.MaxEpsilon <= 0 || adm.limits.MaxEpsilon > adm.rule.MaxEpsilon {
		adm.limits.MaxEpsilon = adm.rule.MaxEpsilon
	}
	return adm, nil
}

// commitRelease runs commit, a store transaction that calls inTx, with the
// Article 11 measure and the audit entry (auditTx) inside it: the release,
// its measure and its record commit together or not at all. A release that
// would cross the Article 11 line blocks the later ones; warnings go out
// once it has committed.
func (s *Server) commitRelease(ctx context.Context, measured *quota.Pending, queryID string, auditTx func(*sql.Tx) error, commit func(inTx func(*sql.Tx) error) error) error {
	var warnings []quota.Warning
	err := commit(func(tx *sql.Tx) error {
		if measured != nil {
			var err error
			if warnings, err = measured.CommitTx(ctx, tx, queryID); err != nil {
				return err
			}
		}
		return auditTx(tx)
	})
	if err != nil {
		if measured != nil && fault.Is(err, fault.QuotaExceeded) {
			measured.Block(context.WithoutCancel(ctx))
		}
		return err
	}
	if measured != nil {
		measured.Warn(ctx, warnings)
	}
	return nil
}

// auditHook writes e inside a store transaction.
func (s *Server) auditHook(ctx context.Context, e audit.Entry) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		if s.cfg.Audit == nil {
			return nil
		}
		_, err := s.cfg.Audit.AppendTx(ctx, tx, stamp(ctx, e))
		return err
	}
}

func (s *Server) record(p catalog.Person, g catalog.Grant, q *sandbox.Query, res *queryResult, cost privacy.Cost, outcome string) catalog.QueryRecord {
	id := res.QueryID
	if id == "" || res.Cached {
		id = catalog.NewID("qry")
	}
	return catalog.QueryRecord{
		ID: id, GrantID: g.ID, Researcher: p.ID, Datasets: q.Datasets, SQL: q.SQL,
		Epsilon: cost.Epsilon, Delta: cost.Delta, Outcome: outcome, Cached: res.Cached, Time: time.Now().UTC(),
	}
}

// crossBorder applies Art. 22(4) and 29(7): overseas recipients get nothing
// from core or important data, nor personal information, unless an approved
// export assessment is recorded. Every dataset here holds patients' personal
// information, so without an assessment they get nothing at all.
func crossBorder(org catalog.Org, grade catalog.Grade) error {
	if org.Kind != catalog.Overseas || org.ExportAssessment {
		return nil
	}
	return fault.E(fault.Forbidden, "%s is an overseas organisation and the data is %s-grade personal health information; no answer can be provided abroad until an approved export assessment is recorded", org.Name, grade)
}

func coversAll(g catalog.Grant, datasets []string) bool {
	for _, d := range datasets {
		if !slices.Contains(g.Datasets, d) {
			return false
		}
	}
	return true
}

func sources(d catalog.Dataset, cols map[string]bool) []sandbox.Source {
	var out []sandbox.Source
	for _, t := range d.Policy.Tables {
		out = append(out, sandbox.Source{Dataset: d.Name, Grade: d.Grade, Table: t, Policy: d.Policy, Columns: cols})
	}
	return out
}

func cacheKey(canonical string, c privacy.Cost) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%s\x00%g\x00%g", canonical, c.Epsilon, c.Delta)))
	return hex.EncodeToString(h[:])
}
