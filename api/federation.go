package api

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
)

// FederatedQuery is one node's part of a federated query, as the
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

// FederatedShare is this node's noised share of a federated query.
type FederatedShare struct {
	QueryID string // this node's id of its part
	GrantID string
	Values  []float64
	// Layout identifies the share's layout and noise calibration; the
	// coordinator adds only shares of one layout.
	Layout string
	K      int
	Cost   privacy.Cost
	Budget catalog.Balance
}

// FederatedShare runs this hospital's part of a federated query under its
// own governance: the researcher's grant here, the analysis, the grade
// rules, the Article 11 quota, the budget (reserved before the data is
// read, kept when anything fails afterwards), the query history and the
// audit log. What it returns is already noised (see privacy.FederatedPlan);
// the caller encrypts it or sends it to the coordinator.
func (s *Server) FederatedShare(ctx context.Context, fq FederatedQuery) (*FederatedShare, error) {
	p, err := s.cfg.Store.Person(ctx, fq.Researcher)
	if err != nil && !fault.Is(err, fault.NotFound) {
		return nil, err
	}
	if err != nil || !p.Active || !p.Has(catalog.Researcher) {
		err = fault.E(fault.Forbidden, "%s is not a researcher at this hospital", fq.Researcher)
		s.audit(ctx, audit.Entry{Actor: fq.Researcher, Action: "federated_query", Outcome: fault.KindOf(err).Code(),
			Detail: detail(map[string]any{"query_id": fq.QueryID, "coordinator": fq.Coordinator, "sql": fq.SQL, "message": fault.Message(err)})})
		return nil, err
	}
	res := &queryResult{}
	share, err := s.federatedShare(ctx, p, fq, res)
	s.observe(ctx, p, res, err)
	if err != nil {
		e := audit.Entry{Actor: p.ID, Role: roleText(p), Action: "federated_query", Outcome: fault.KindOf(err).Code(),
			Dataset: strings.Join(res.datasets, ","), Grade: string(res.Grade),
			Detail: detail(map[string]any{"query_id": fq.QueryID, "coordinator": fq.Coordinator, "sql": fq.SQL, "message": fault.Message(err)})}
		s.audit(ctx, e)
		return nil, err
	}
	return share, nil
}

func (s *Server) federatedShare(ctx context.Context, p catalog.Person, fq FederatedQuery, res *queryResult) (*FederatedShare, error) {
	st := s.cfg.Store
	adm, err := s.admit(ctx, p, fq.SQL, fq.GrantID, res)
	if err != nil {
		return nil, err
	}
	want := privacy.Cost{Epsilon: adm.grant.DefaultEpsilon, Delta: fq.Delta}
	if fq.Epsilon != nil {
		want.Epsilon = *fq.Epsilon
	}
	plan, err := privacy.NewFederatedPlan(adm.q, want, adm.limits, fq.Nodes, fq.Aggregation)
	if err != nil {
		return nil, err
	}
	var measured *quota.Pending
	if s.cfg.Quota != nil {
		if measured, err = s.cfg.Quota.Check(ctx, p.Org, adm.used); err != nil {
			return nil, err
		}
		if measured != nil {
			defer measured.Done()
			plan.MeasureUnits(measured.Range())
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	prep, err := s.cfg.Engine.Prepare(ctx, plan.SQL)
	if err != nil {
		return nil, err
	}
	defer prep.Close()
	bal, err := st.Reserve(ctx, adm.grant.ID, plan.Cost.Epsilon, plan.Cost.Delta)
	if err != nil {
		return nil, err
	}
	res.QueryID, res.Budget = catalog.NewID("qry"), bal
	rec := s.record(p, adm.grant, adm.q, res, plan.Cost, "ok")
	fail := func(err error) (*FederatedShare, error) {
		rec.Outcome = fault.KindOf(err).Code()
		if rerr := st.RecordQuery(context.WithoutCancel(ctx), rec, nil); rerr != nil {
			s.cfg.Log.Error("record query history", "err", rerr)
		}
		return nil, err
	}

	out, err := execute(runCtx, prep, plan.Plan)
	if err == nil && measured != nil {
		err = measured.Measure(out)
	}
	if err != nil {
		return fail(err)
	}
	values, err := plan.Share(out)
	if err != nil {
		return fail(err)
	}
	// The history line, the audit entry and the quota measure commit
	// together before the share leaves the node.
	auditShare := s.auditHook(ctx, audit.Entry{
		Actor: p.ID, Role: roleText(p), Action: "federated_query", Dataset: strings.Join(adm.q.Datasets, ","), Grade: string(adm.q.Grade), Outcome: "ok",
		Detail: detail(map[string]any{"query_id": res.QueryID, "federated_query_id": fq.QueryID, "coordinator": fq.Coordinator,
			"grant_id": adm.grant.ID, "sql": fq.SQL, "epsilon": plan.Cost.Epsilon, "delta": plan.Cost.Delta, "nodes": fq.Nodes,
			"aggregation": fq.Aggregation, "org": p.Org.ID, "org_kind": p.Org.Kind}),
	})
	err = s.commitRelease(ctx, measured, res.QueryID, auditShare, func(inTx func(*sql.Tx) error) error {
		return st.RecordQuery(ctx, rec, inTx)
	})
	if err != nil {
		if fault.KindOf(err) == fault.Internal {
			err = fmt.Errorf("record federated share: %w", err)
		}
		return nil, err
	}
	return &FederatedShare{QueryID: res.QueryID, GrantID: adm.grant.ID, Values: values, Layout: plan.Layout(),
		K: plan.K, Cost: plan.Cost, Budget: bal}, nil
}

// FederatedDatasets lists this hospital's datasets for a federation's
// coordinator: names, grades and column policies, which the coordinator
// needs to analyse queries, without their scale or any data value.
func (s *Server) FederatedDatasets(ctx context.Context) ([]catalog.Dataset, error) {
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
