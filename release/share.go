package release

import (
	"context"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
)

// FederatedQuery is one hospital's part of a federated query, as the
// coordinator asks for it on behalf of a researcher.
type FederatedQuery struct {
	// QueryID is the coordinator's id of the whole query.
	QueryID string
	// Coordinator is the coordinator's name from its certificate.
	Coordinator string
	// Researcher is the person at this hospital the query is asked for.
	Researcher string
	SQL        string
	Epsilon    *float64
	Delta      float64
	GrantID    string
	// Nodes is the size of the federation, which calibrates the share's
	// noise; the node has checked it against its own member list.
	Nodes       int
	Aggregation privacy.Aggregation
}

// FederatedShare is this hospital's noised share of a federated query.
type FederatedShare struct {
	QueryID string // this hospital's id of its part
	GrantID string
	Values  []float64
	// Layout identifies the share's layout and noise calibration; the
	// coordinator adds only shares of one layout.
	Layout string
	K      int
	Cost   privacy.Cost
	Budget catalog.Balance
}

// Share runs this hospital's part of a federated query under its own
// governance: the researcher's grant here, the analysis, the grade rules,
// the Article 11 quota, the budget (reserved before the data is read, kept
// when anything fails afterwards), the query history and the audit log.
// What it returns is already noised (see privacy.FederatedPlan); the caller
// encrypts it or sends it to the coordinator.
func (s *Service) Share(ctx context.Context, fq FederatedQuery) (*FederatedShare, error) {
	tr := &trace{}
	detail := func(err error) map[string]any {
		return map[string]any{"query_id": fq.QueryID, "coordinator": fq.Coordinator, "sql": fq.SQL, "message": fault.Message(err)}
	}
	p, err := s.cfg.Store.Person(ctx, fq.Researcher)
	if err != nil && !fault.Is(err, fault.NotFound) {
		return nil, err
	}
	if err != nil || !p.Active || !p.Has(catalog.Researcher) {
		err = fault.E(fault.Forbidden, "%s is not a researcher at this hospital", fq.Researcher)
		s.auditRefusal(ctx, catalog.Person{ID: fq.Researcher}, "federated_query", "", tr, err, detail(err))
		return nil, err
	}
	share, err := s.share(ctx, p, fq, tr)
	s.observe(ctx, p, tr, err)
	if err != nil {
		s.auditRefusal(ctx, p, "federated_query", "", tr, err, detail(err))
		return nil, err
	}
	return share, nil
}

func (s *Service) share(ctx context.Context, p catalog.Person, fq FederatedQuery, tr *trace) (*FederatedShare, error) {
	// The time limit covers the steps as in answer.
	timed, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	adm, err := s.admit(timed, p, fq.SQL, fq.GrantID, tr)
	if err != nil {
		return nil, beforeData(timed, err)
	}
	want := privacy.Cost{Epsilon: adm.grant.DefaultEpsilon, Delta: fq.Delta}
	if fq.Epsilon != nil {
		want.Epsilon = *fq.Epsilon
	}
	plan, err := privacy.NewFederatedPlan(adm.q, want, adm.limits, fq.Nodes, fq.Aggregation)
	if err != nil {
		return nil, err
	}
	measured, err := s.checkQuota(timed, p, adm, plan.Plan)
	if err != nil {
		return nil, beforeData(timed, err)
	}
	defer measured.Done()
	prep, err := s.cfg.Engine.PrepareFor(timed, adm.grant.ID, plan.SQL)
	if err != nil {
		return nil, beforeData(timed, err)
	}
	defer prep.Close()
	rec := record(p, adm, catalog.NewID("qry"), plan.Charge(), "ok")
	bal, err := s.reserve(ctx, adm.grant, rec, false)
	if err != nil {
		return nil, err
	}
	out, err := run(timed, prep, plan.Plan, measured)
	if err != nil {
		s.recordFailure(ctx, rec, true, err)
		return nil, err
	}
	values, err := plan.Share(out)
	if err != nil {
		s.recordFailure(ctx, rec, true, err)
		return nil, err
	}
	// The history line, the audit entry and the quota measure commit
	// together before the share leaves the hospital.
	entry := s.entry(p, "", adm, "ok", map[string]any{"query_id": rec.ID, "federated_query_id": fq.QueryID, "coordinator": fq.Coordinator,
		"grant_id": adm.grant.ID, "sql": fq.SQL, "epsilon": plan.Cost.Epsilon, "delta": plan.Cost.Delta, "nodes": fq.Nodes,
		"aggregation": fq.Aggregation, "org": p.Org.ID, "org_kind": p.Org.Kind})
	entry.Action = "federated_query"
	if _, err := s.commit(ctx, commitment{measured: measured, rec: rec, reserved: true, entry: entry}); err != nil {
		s.recordFailure(ctx, rec, true, err)
		return nil, err
	}
	tr.epsilon = plan.Cost.Epsilon
	return &FederatedShare{QueryID: rec.ID, GrantID: adm.grant.ID, Values: values, Layout: plan.Layout(),
		K: plan.K, Cost: plan.Cost, Budget: bal}, nil
}

// Datasets lists this hospital's datasets for a federation's coordinator:
// names, grades and column policies, which the coordinator needs to
// analyse queries, without their scale or any data value.
func (s *Service) Datasets(ctx context.Context) ([]catalog.Dataset, error) {
	ds, err := s.cfg.Store.Datasets(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]catalog.Dataset, 0, len(ds))
	for _, d := range ds {
		out = append(out, catalog.Dataset{Name: d.Name, Grade: d.Grade, Policy: d.Policy})
	}
	return out, nil
}
