package release

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
)

// trace is what the audit entry and the detectors learn of a request as
// it goes through the steps.
type trace struct {
	datasets   []string
	shape, key string
	grade      policy.Grade
	grantID    string
	grantTotal float64
	epsilon    float64 // spent, when the answer was released afresh
}

// Answer runs a researcher's question through every step (see the package
// comment) and returns the protected answer. Every outcome is audited and
// every query's outcome observed; a refusal says why with a stable code. A
// dry run reads no data and releases nothing, so the abnormal-use
// detectors do not count it: trying a query's cost is not probing.
func (s *Service) Answer(ctx context.Context, p catalog.Person, req Request) (*Result, error) {
	tr := &trace{}
	res, err := s.answer(ctx, p, req, tr)
	if !req.DryRun {
		s.observe(ctx, p, tr, err)
	}
	if err != nil {
		s.auditRefusal(ctx, p, "query", req.TokenID, tr, err, map[string]any{"sql": req.SQL, "grant_id": req.GrantID, "message": fault.Message(err)})
		return nil, err
	}
	return res, nil
}

func (s *Service) answer(ctx context.Context, p catalog.Person, req Request, tr *trace) (*Result, error) {
	if err := s.running.acquire(p.ID); err != nil {
		return nil, err
	}
	defer s.running.release(p.ID)
	// One wall-clock limit covers the request up to its release:
	// admission (and a ranking it waits for), the Article 11 turn,
	// binding, bounding, the run and the noise. The reservation and the
	// commit, which record what is spent and released, run outside it, so
	// that their outcome is always known.
	timed, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	clock := newStepClock()
	adm, err := s.admit(timed, p, req.SQL, req.GrantID, tr)
	if err != nil {
		return nil, fault.In("release.admit", beforeData(timed, err))
	}
	clock.done("admit")
	plan, want, err := s.plan(adm, req)
	if err != nil {
		return nil, fault.In("release.plan", err)
	}
	if req.DryRun {
		return s.dryRun(ctx, p, req, adm, plan)
	}
	clock.done("plan")
	key := answerKey(adm, want, req.Exact)
	if res, err := s.repeat(ctx, p, req, adm, key); res != nil || err != nil {
		return res, fault.In("release.repeat", err)
	}
	clock.done("repeat")

	measured, err := s.checkQuota(timed, p, adm, plan)
	if err != nil {
		return nil, fault.In("release.quota", beforeData(timed, err))
	}
	defer measured.Done()
	clock.done("quota")
	prep, err := s.cfg.Engine.PrepareFor(timed, adm.grant.ID, plan.SQL)
	if err != nil {
		return nil, fault.In("release.prepare", beforeData(timed, err))
	}
	clock.done("prepare")
	defer func() { prep.Close() }()
	rec := record(p, adm, catalog.NewID("qry"), plan.Charge(), "ok")
	bal, err := s.reserve(ctx, adm.grant, rec, req.Exact)
	if err != nil {
		return nil, fault.In("release.reserve", err)
	}
	clock.done("reserve")
	if err := s.bound(timed, plan, adm, &prep); err != nil {
		s.recordFailure(ctx, rec, !req.Exact, err)
		return nil, fault.In("release.bound", err)
	}
	clock.done("bound")
	out, err := run(timed, prep, plan, measured)
	if err != nil {
		s.recordFailure(ctx, rec, !req.Exact, err)
		return nil, fault.In("release.run", err)
	}
	clock.done("run")
	ans, err := s.protect(timed, plan, out, rec.ID, adm)
	if err != nil {
		return nil, fault.In("release.protect", err)
	}
	body, err := json.Marshal(ans)
	if err != nil {
		return nil, fmt.Errorf("encode answer: %w", err)
	}
	clock.done("protect")
	entry := s.entry(p, req.TokenID, adm, "ok", map[string]any{"query_id": rec.ID, "grant_id": adm.grant.ID, "sql": req.SQL,
		"epsilon": rec.Epsilon, "delta": rec.Delta, "rho": rec.Rho, "org": p.Org.ID, "org_kind": p.Org.Kind,
		"groups": len(ans.Rows), "suppressed": ans.Privacy.SuppressedGroups})
	stored, err := s.commit(ctx, commitment{measured: measured, rec: rec, reserved: !req.Exact, entry: entry, key: key, body: body})
	if err != nil {
		s.recordFailure(ctx, rec, !req.Exact, err)
		return nil, fault.In("release.commit", err)
	}
	clock.done("commit")
	tr.epsilon = plan.Cost.Epsilon
	res := NewResult(stored, bal, false, adm.q.Datasets)
	res.Steps = clock.steps
	res.Epsilon = ans.Privacy.Epsilon
	if !bytes.Equal(stored, body) {
		// Another request stored the same question's answer first: that
		// one is the answer, and what it spent is its own.
		a, err := res.Answer()
		if err != nil {
			return nil, err
		}
		res.Epsilon = a.Privacy.Epsilon
	}
	return res, nil
}

// dryRun answers what the query would cost and how noisy it would be,
// from the plan alone: it reads no data, releases nothing and spends
// nothing. It is audited like every request.
func (s *Service) dryRun(ctx context.Context, p catalog.Person, req Request, adm *admission, plan *privacy.Plan) (*Result, error) {
	c := plan.Charge()
	cost := estimatedCost{Epsilon: c.Epsilon, Delta: c.Delta, Rho: c.Rho}
	cost.DeltaPartition, cost.DeltaGaussian = plan.DeltaSplit()
	body, err := json.Marshal(estimate{DryRun: true, Cost: cost, Privacy: plan.Expected(), BudgetAfter: catalog.BalanceAfter(adm.grant, c)})
	if err != nil {
		return nil, fmt.Errorf("encode estimate: %w", err)
	}
	if s.cfg.Audit != nil {
		e := s.entry(p, req.TokenID, adm, "ok", map[string]any{"grant_id": adm.grant.ID, "sql": req.SQL, "dry_run": true,
			"epsilon": plan.Cost.Epsilon, "delta": plan.Cost.Delta})
		e.Action = "query.dry_run"
		if _, err := s.cfg.Audit.Append(ctx, e); err != nil {
			return nil, fmt.Errorf("audit dry run: %w", err)
		}
	}
	return &Result{Body: body, Budget: catalog.BalanceOf(adm.grant), DryRun: true, Datasets: adm.q.Datasets}, nil
}

// plan protects the admitted query at the requested cost, or plans an
// exact answer where the grade rules and the dataset's steward and
// approver allow it.
func (s *Service) plan(adm *admission, req Request) (*privacy.Plan, privacy.Cost, error) {
	q := adm.q
	if req.Exact {
		if !adm.rule.ExactAllowed {
			return nil, privacy.Cost{}, fault.E(fault.QueryRejected, "exact answers are not allowed for %s-grade data; drop \"exact\" to get a differentially private answer", q.Grade)
		}
		for _, d := range adm.used {
			if !d.ExactAnswers {
				return nil, privacy.Cost{}, fault.E(fault.QueryRejected, "exact answers are not switched on for %s (a steward proposes them, an approver verifies); drop \"exact\" to get a differentially private answer", d.Name)
			}
		}
		plan, err := privacy.NewExactPlan(q, adm.limits)
		return plan, privacy.Cost{}, err
	}
	want := privacy.Cost{Epsilon: adm.grant.DefaultEpsilon}
	if req.Epsilon != nil {
		want.Epsilon = *req.Epsilon
	}
	if req.Delta != nil {
		want.Delta = *req.Delta
	}
	plan, err := privacy.NewPlanWith(q, want, privacy.Options{Bound: req.ContributionBound, Choose: true}, adm.limits)
	return plan, want, err
}

// answerKey identifies the question for the answer cache: the canonical
// query and what was asked to spend on it.
func answerKey(adm *admission, want privacy.Cost, exact bool) string {
	if exact {
		return cacheKey(adm.q.Key+"\x00exact", want)
	}
	return cacheKey(adm.q.Key, want)
}

// repeat returns the stored answer to a question the grant already had
// answered, at no cost: repeating a query and averaging reveals nothing.
// Cached answers are releases too: recorded and audited. It returns nil
// when there is none.
func (s *Service) repeat(ctx context.Context, p catalog.Person, req Request, adm *admission, key string) (*Result, error) {
	st := s.cfg.Store
	body, ok, err := st.Answer(ctx, adm.grant.ID, key)
	if err != nil || !ok {
		return nil, err
	}
	g, err := st.Grant(ctx, adm.grant.ID)
	if err != nil {
		return nil, err
	}
	res := NewResult(body, catalog.BalanceOf(g), true, adm.q.Datasets)
	a, err := res.Answer()
	if err != nil {
		return nil, err
	}
	rec := record(p, adm, catalog.NewID("qry"), accountant.Charge{}, "ok")
	rec.Cached, rec.AnswerID = true, a.QueryID
	entry := s.entry(p, req.TokenID, adm, "ok", map[string]any{"query_id": a.QueryID, "grant_id": adm.grant.ID, "sql": req.SQL, "cached": true})
	if _, err := s.commit(ctx, commitment{rec: rec, entry: entry}); err != nil {
		return nil, fmt.Errorf("record cached release: %w", err)
	}
	return res, nil
}

// checkQuota refuses a release to another legal entity from a dataset
// whose Article 11 line was reached, before any budget is spent; a release
// that must be measured returns its contributing patients in the same
// DuckDB pass. The returned measure (nil when the release is not
// measured) holds the dataset's turn until Done.
func (s *Service) checkQuota(ctx context.Context, p catalog.Person, adm *admission, plan *privacy.Plan) (*quota.Pending, error) {
	if s.cfg.Quota == nil {
		return nil, nil
	}
	measured, err := s.cfg.Quota.Check(ctx, p.Org, adm.used)
	if err != nil || measured == nil {
		return nil, err
	}
	plan.MeasureUnits(measured.Range())
	return measured, nil
}

// reserve charges the grant before any data is read, and writes the
// query's history line as charged and not released in the same
// transaction, which the commit turns into its outcome; exact answers
// spend no budget.
func (s *Service) reserve(ctx context.Context, g catalog.Grant, rec catalog.QueryRecord, exact bool) (catalog.Balance, error) {
	if exact {
		return catalog.BalanceOf(g), nil
	}
	return s.cfg.Store.ReserveFor(ctx, rec, g)
}

// beforeData is err from a step before the reservation: past the time
// limit, whatever failed is query_timeout, which costs nothing and, like
// the step, depends on the load and the SQL, not on data read.
func beforeData(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	if k := fault.KindOf(err); k != fault.Internal && k != fault.Timeout {
		return err // a refusal decided before the limit ran out
	}
	return fault.Wrap(fault.Timeout, err, "the query ran past its time limit before it read any data (waiting for its turn or for the gateway); nothing was spent; retry")
}

// runLimitMessage is the one text of a query stopped while it ran.
const runLimitMessage = "the query was stopped by the sandbox's run-time limits (time or memory); its budget is spent; narrow it, filter it or group on coarser keys"

// run executes a prepared plan and reads the patients it measured.
// Whatever stops it once it runs (the time limit, the memory limit, the
// group cap, anything DuckDB raises) is one refusal with one code and one
// text, and the budget stays spent: which limit a query hits, and when,
// can depend on the data, so the cause is not told. Errors that depend on
// the SQL and the schemas alone are raised before, by the plan and
// Prepare, and spend nothing.
// bound chooses the plan's contribution bound, once its cost is reserved,
// from the counts of rows per patient of the table it bounds (which only
// the plan's noisy histogram reads), and prepares the plan's new SQL in
// place of prep. A table that cannot be counted (not ranked when the query
// was admitted, or its ranking failed) keeps the maximum bound. A failure
// here comes after the charge and keeps it.
func (s *Service) bound(ctx context.Context, plan *privacy.Plan, adm *admission, prep **engine.Prepared) error {
	ref, upTo, ok := plan.Bounded()
	if !ok {
		return nil
	}
	before, owner := plan.SQL, adm.grant.ID
	if !adm.counted {
		plan.KeepMax()
		return s.prepareAgain(ctx, plan, owner, before, prep)
	}
	counts, err := s.cfg.Engine.RankCounts(ctx, ref.Dataset, ref.Table, upTo)
	if err != nil {
		if ctx.Err() != nil {
			return fault.Wrap(fault.ResourceLimit, err, runLimitMessage)
		}
		plan.KeepMax()
		return s.prepareAgain(ctx, plan, owner, before, prep)
	}
	if err := plan.Choose(counts); err != nil {
		return err
	}
	return s.prepareAgain(ctx, plan, owner, "", prep)
}

// prepareAgain prepares the plan's SQL for owner in place of prep when it
// is no longer before, what prep was prepared from.
func (s *Service) prepareAgain(ctx context.Context, plan *privacy.Plan, owner, before string, prep **engine.Prepared) error {
	if plan.SQL == before {
		return nil
	}
	next, err := s.cfg.Engine.PrepareFor(ctx, owner, plan.SQL)
	if err != nil {
		return fault.Wrap(fault.ResourceLimit, err, runLimitMessage)
	}
	(*prep).Close()
	*prep = next
	return nil
}

func run(ctx context.Context, prep *engine.Prepared, plan *privacy.Plan, measured *quota.Pending) (*engine.Result, error) {
	out, err := prep.Query(ctx, plan.MaxRows)
	if err != nil {
		return nil, fault.Wrap(fault.ResourceLimit, err, runLimitMessage)
	}
	if measured != nil {
		if err := measured.Measure(out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// protect noises the result into the answer and signs it. The noise is
// drawn within the time limit too: past it, the answer is not released
// and the run-time refusal is given.
func (s *Service) protect(ctx context.Context, plan *privacy.Plan, out *engine.Result, queryID string, adm *admission) (Answer, error) {
	pa, err := plan.Release(out)
	if err != nil {
		return Answer{}, err
	}
	if ctx.Err() != nil {
		return Answer{}, fault.Wrap(fault.ResourceLimit, ctx.Err(), runLimitMessage)
	}
	ans := Answer{QueryID: queryID, GrantID: adm.grant.ID, Grade: adm.q.Grade, Answer: *pa}
	if err := s.sign(&ans); err != nil {
		return Answer{}, err
	}
	return ans, nil
}

// commitment is what one release writes.
type commitment struct {
	measured *quota.Pending // nil when the release is not measured
	rec      catalog.QueryRecord
	reserved bool // rec was written by the reservation, as charged and not released
	entry    audit.Entry
	key      string // with body, the answer to store
	body     []byte
}

// commit writes a release in one transaction: its Article 11 measure, the
// answer, its history line and its audit entry, together or not at all,
// and returns the answer stored. A release that would cross the Article 11
// line blocks the later ones; warnings go out once it has committed.
func (s *Service) commit(ctx context.Context, c commitment) ([]byte, error) {
	stored, warnings, err := s.write(ctx, c)
	if err != nil {
		if c.measured != nil && fault.Is(err, fault.QuotaExceeded) {
			c.measured.Block(context.WithoutCancel(ctx))
		}
		if fault.KindOf(err) == fault.Internal {
			err = fmt.Errorf("release answer: %w", err)
		}
		return nil, err
	}
	if c.measured != nil {
		c.measured.Warn(ctx, warnings)
	}
	return stored, nil
}

func (s *Service) write(ctx context.Context, c commitment) ([]byte, []quota.Warning, error) {
	st := s.cfg.Store
	var stored []byte
	var warnings []quota.Warning
	err := st.Write(ctx, func(tx *sql.Tx) error {
		rec := c.rec
		var err error
		if c.measured != nil {
			if warnings, err = c.measured.CommitTx(ctx, tx, rec.ID); err != nil {
				return err
			}
		}
		if c.body != nil {
			if stored, rec.AnswerID, err = st.StoreAnswerTx(ctx, tx, rec.GrantID, c.key, rec.ID, c.body); err != nil {
				return err
			}
		}
		if c.reserved {
			err = st.FinishQueryTx(ctx, tx, rec.ID, rec.Outcome, rec.AnswerID)
		} else {
			err = st.RecordQueryTx(ctx, tx, rec)
		}
		if err != nil {
			return err
		}
		return s.auditTx(ctx, tx, c.entry)
	})
	if err != nil {
		return nil, nil, err
	}
	return stored, warnings, nil
}

// recordFailure sets the history line of a query that failed after its
// data was read: charged and not released (the outcome the reservation
// wrote stays), with the refusal's code. An exact answer, which charges
// nothing, gets a line with the code as its outcome.
func (s *Service) recordFailure(ctx context.Context, rec catalog.QueryRecord, reserved bool, err error) {
	code := fault.KindOf(err).Code()
	var rerr error
	if reserved {
		rerr = s.cfg.Store.FailQuery(context.WithoutCancel(ctx), rec.ID, code)
	} else {
		rec.Outcome = code
		rerr = s.cfg.Store.RecordQuery(context.WithoutCancel(ctx), rec, nil)
	}
	if rerr != nil {
		s.cfg.Log.Error("record query history", "err", rerr)
	}
}

// record is a history line charging c (see privacy.Plan.Charge).
func record(p catalog.Person, adm *admission, id string, c accountant.Charge, outcome string) catalog.QueryRecord {
	return catalog.QueryRecord{
		ID: id, GrantID: adm.grant.ID, Researcher: p.ID, Datasets: adm.q.Datasets, SQL: adm.q.SQL,
		Epsilon: c.Epsilon, Delta: c.Delta, Rho: c.Rho, DeltaPartition: c.DeltaPartition, Outcome: outcome, Time: time.Now().UTC(),
	}
}

// entry is the audit entry of a release by p.
func (s *Service) entry(p catalog.Person, tokenID string, adm *admission, outcome string, detail map[string]any) audit.Entry {
	return audit.Entry{Actor: p.ID, Role: roleText(p), Action: "query", Dataset: strings.Join(adm.q.Datasets, ","),
		Grade: string(adm.q.Grade), Outcome: outcome, Detail: details(tokenID, detail)}
}

func (s *Service) auditTx(ctx context.Context, tx *sql.Tx, e audit.Entry) error {
	if s.cfg.Audit == nil {
		return nil
	}
	_, err := s.cfg.Audit.AppendTx(ctx, tx, e)
	return err
}

// auditRefusal records a refused request.
func (s *Service) auditRefusal(ctx context.Context, p catalog.Person, action, tokenID string, tr *trace, refusal error, detail map[string]any) {
	if s.cfg.Audit == nil {
		return
	}
	e := audit.Entry{Actor: p.ID, Role: roleText(p), Action: action, Outcome: fault.KindOf(refusal).Code(),
		Dataset: strings.Join(tr.datasets, ","), Grade: string(tr.grade), Detail: details(tokenID, detail)}
	if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.cfg.Log.Error("audit append failed", "action", action, "err", err)
	}
}

func details(tokenID string, m map[string]any) json.RawMessage {
	if tokenID != "" {
		m["token_id"] = tokenID
	}
	b, _ := json.Marshal(m)
	return b
}

func roleText(p catalog.Person) string {
	var rs []string
	for _, r := range p.Roles {
		rs = append(rs, string(r))
	}
	return strings.Join(rs, ",")
}

// observe hands a request's outcome to the abnormal-use detectors.
func (s *Service) observe(ctx context.Context, p catalog.Person, tr *trace, err error) {
	if s.cfg.Alerts == nil {
		return
	}
	e := alerts.Event{Person: p.ID, Outcome: "ok", Dataset: strings.Join(tr.datasets, ","), Shape: tr.shape, Key: tr.key,
		GrantID: tr.grantID, GrantTotal: tr.grantTotal, Epsilon: tr.epsilon}
	if err != nil {
		e.Outcome, e.Epsilon = fault.KindOf(err).Code(), 0
	}
	s.cfg.Alerts.Observe(ctx, e)
}
