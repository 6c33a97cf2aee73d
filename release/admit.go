package release

import (
	"context"
	"slices"
	"strings"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// admission is what the checks before any planning establish: the
// analysed query, the one grant that covers it, the datasets it reads and
// the limits its grade allows.
type admission struct {
	q      *sandbox.Query
	grant  catalog.Grant
	used   []catalog.Dataset
	rule   policy.GradeRule
	limits privacy.Limits
	// counted: the table whose rows per patient choose the contribution
	// bound (q.Counted) was ranked when the query was admitted, so the
	// counts can be read (see bound).
	counted bool
}

// admit runs the checks every query passes before it is planned: a live
// grant, the analysis against the grant's scope, one grant covering what is
// read, the cross-border rule and the grade rules (Art. 5, 10, 13, 22(4)).
// It fills tr with what the audit entry and the detectors need.
func (s *Service) admit(ctx context.Context, p catalog.Person, sqlText, grantID string, tr *trace) (*admission, error) {
	live, err := s.liveGrants(ctx, p, grantID)
	if err != nil {
		return nil, err
	}
	datasets, err := s.datasetsOf(ctx, live)
	if err != nil {
		return nil, err
	}
	// The grant is the one that covers what the query reads. With one
	// candidate its column scope applies in the analysis; with several,
	// the query is analysed once over all their datasets, and the columns
	// it reads are then checked against the chosen grant's.
	scope := scopeOf(live, datasets)
	for i, src := range scope.Sources {
		// The engine's own types decide which filters need no TRY; they
		// are part of the analysis cache's key, so a reload that changes
		// them is analysed afresh.
		if scope.Sources[i].Types, err = s.cfg.Engine.ColumnTypes(ctx, src.Dataset, src.Table.Name); err != nil {
			return nil, fault.Wrap(fault.Unavailable, err, "the engine could not read the tables' columns")
		}
		// So are the code columns built so far (until they are, keys
		// are grouped on their strings).
		scope.Sources[i].Codes = s.cfg.Engine.Codes(src.Dataset, src.Table.Name)
	}
	q, err := s.analyses.analyze(ctx, s.cfg.Engine, sqlText, live, scope, datasets)
	if err != nil {
		return nil, err
	}
	tr.datasets, tr.shape, tr.key, tr.grade = q.Datasets, q.Shape, q.Key, q.Grade
	grant, err := covering(live, q.Datasets)
	if err != nil {
		return nil, err
	}
	if len(live) > 1 {
		if err := inColumns(q, grant); err != nil {
			return nil, err
		}
	}
	tr.grantID, tr.grantTotal = grant.ID, grant.EpsilonTotal
	adm := &admission{q: q, grant: grant}
	for _, name := range q.Datasets {
		adm.used = append(adm.used, datasets[name])
	}
	if err := policy.CrossBorder(p.Org.Name, p.Org.Kind, p.Org.ExportAssessment, q.Grade); err != nil {
		return nil, err
	}
	adm.rule = s.cfg.GradeRules[q.Grade]
	q.Policy = adm.rule.Apply(q.Policy)
	adm.limits = s.cfg.Limits
	adm.limits.MaxEpsilon = adm.rule.CapEpsilon(adm.limits.MaxEpsilon)
	s.rank(q, adm)
	return adm, nil
}

// liveGrants are the person's grants that may answer: the named one, or
// every live one.
func (s *Service) liveGrants(ctx context.Context, p catalog.Person, grantID string) ([]catalog.Grant, error) {
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
	return live, nil
}

func (s *Service) datasetsOf(ctx context.Context, grants []catalog.Grant) (map[string]catalog.Dataset, error) {
	out := map[string]catalog.Dataset{}
	for _, g := range grants {
		for _, name := range g.Datasets {
			if _, ok := out[name]; ok {
				continue
			}
			d, err := s.cfg.Store.DatasetFor(ctx, g.Researcher, name)
			if err != nil {
				return nil, err
			}
			out[name] = d
		}
	}
	return out, nil
}

// scopeOf is what the grants let a query see: with one grant, its
// datasets under its column scope; with several, all their datasets.
func scopeOf(grants []catalog.Grant, datasets map[string]catalog.Dataset) sandbox.Scope {
	var scope sandbox.Scope
	if len(grants) == 1 {
		cols := columnsOf(grants[0])
		for _, name := range grants[0].Datasets {
			scope.Sources = append(scope.Sources, sources(datasets[name], cols)...)
		}
		return scope
	}
	names := make([]string, 0, len(datasets))
	for name := range datasets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		scope.Sources = append(scope.Sources, sources(datasets[name], nil)...)
	}
	return scope
}

func columnsOf(g catalog.Grant) map[string]bool {
	if len(g.Columns) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, c := range g.Columns {
		m[strings.ToLower(c)] = true
	}
	return m
}

// inColumns checks the columns q reads against g's column scope (the
// privacy unit is always in scope).
func inColumns(q *sandbox.Query, g catalog.Grant) error {
	cols := columnsOf(g)
	if cols == nil {
		return nil
	}
	for _, c := range q.Columns {
		if c.Role != policy.Unit && !cols[strings.ToLower(c.Name)] {
			return fault.E(fault.QueryRejected, "column %s is outside the columns of your grant; request access to it", c.Name)
		}
	}
	return nil
}

// rank switches q to bounding by rank when the engine has ranked the
// table q could bound by rank, and notes whether the table whose rows per
// patient choose the bound is ranked. The rank only makes bounding
// cheaper and the bound tighter: a query never waits for it. While the
// engine is still ranking (it starts when a dataset is loaded, or here,
// for a table it has not ranked), or when the ranking failed, the query
// is planned without it, and keeps the policy's maximum bound.
func (s *Service) rank(q *sandbox.Query, adm *admission) {
	if c := q.Counted; c != nil {
		adm.counted = s.cfg.Engine.Ranked(c.Dataset, c.Table, c.Unit)
	}
	if r := q.Rank; r != nil && s.cfg.Engine.Ranked(r.Dataset, r.Table, r.Unit) {
		q.UseRank()
	}
}

// covering is the one grant that covers every dataset read.
func covering(live []catalog.Grant, datasets []string) (catalog.Grant, error) {
	var cands []catalog.Grant
	for _, g := range live {
		if coversAll(g, datasets) {
			cands = append(cands, g)
		}
	}
	switch {
	case len(cands) == 0:
		return catalog.Grant{}, fault.E(fault.Forbidden, "no single grant of yours covers %s", strings.Join(datasets, ", "))
	case len(cands) > 1:
		return catalog.Grant{}, fault.E(fault.Invalid, "several of your grants cover %s; name one with \"grant_id\"", strings.Join(datasets, ", "))
	}
	return cands[0], nil
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

// DefaultDelta is the delta of an access request for datasets that names
// none: what the noisy k rules of the expected number of queries need
// (the highest grade's expected_queries, each query spending the
// partition delta), beside the share the accountant keeps to convert zCDP
// back to (epsilon, delta) (accountant.DeltaFor).
func (s *Service) DefaultDelta(ctx context.Context, datasets []string) (float64, error) {
	var grades []policy.Grade
	for _, name := range datasets {
		d, err := s.cfg.Store.Dataset(ctx, name)
		if err != nil {
			return 0, err
		}
		grades = append(grades, d.Grade)
	}
	return DefaultDelta(s.cfg.GradeRules, s.cfg.Limits, grades...), nil
}

// DefaultDelta is the default delta of a grant on data of the grades
// under rules and limits (see Service.DefaultDelta).
func DefaultDelta(rules policy.GradeRules, limits privacy.Limits, grades ...policy.Grade) float64 {
	if rules == nil {
		rules = policy.DefaultGradeRules()
	}
	pd := limits.PartitionDelta
	if pd <= 0 {
		pd = privacy.DefaultLimits.PartitionDelta
	}
	g := policy.Core
	if len(grades) > 0 {
		g = policy.Highest(grades...)
	}
	return accountant.DeltaFor(pd, rules[g].Expected())
}
