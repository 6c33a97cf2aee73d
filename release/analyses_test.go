package release

import (
	"context"
	"reflect"
	"testing"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/sandbox"
)

// countingParser counts the analyses that reached DuckDB.
type countingParser struct {
	*engine.Engine
	n int
}

func (c *countingParser) Serialize(ctx context.Context, sql string) ([]byte, error) {
	c.n++
	return c.Engine.Serialize(ctx, sql)
}

// TestAnalysesAreKeptPerGrantAndScope: a question asked again on the same
// grant and scope is not analysed again, and answers the same as a fresh
// analysis; a change of the caller's copy leaves the kept one alone; another
// grant, or another scope, is analysed afresh.
func TestAnalysesAreKeptPerGrantAndScope(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	p := &countingParser{Engine: e}
	a := newAnalyses(8)
	d := demo.Description(0, 0)
	g := catalog.Grant{ID: "grt_a", Datasets: []string{d.Name}}
	scope := scopeOf([]catalog.Grant{g}, map[string]catalog.Dataset{d.Name: d})
	const sql = "SELECT department, count(*) AS n FROM encounters GROUP BY department"
	fresh, err := sandbox.Analyze(ctx, e, sql, scope)
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.analyze(ctx, p, sql, []catalog.Grant{g}, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	first.UseRank()
	first.Policy.K = 1000
	first.Aggs[0].Name = "changed"
	again, err := a.analyze(ctx, p, sql, []catalog.Grant{g}, scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.n != 1 {
		t.Errorf("DuckDB analysed the repeated question %d times, want once", p.n)
	}
	if !reflect.DeepEqual(again, fresh) {
		t.Errorf("the kept analysis differs from a fresh one:\n%+v\n%+v", again, fresh)
	}
	other := catalog.Grant{ID: "grt_b", Datasets: g.Datasets}
	if _, err := a.analyze(ctx, p, sql, []catalog.Grant{other}, scope, nil); err != nil || p.n != 2 {
		t.Errorf("another grant's question: %v, %d analyses, want 2", err, p.n)
	}
	narrow := catalog.Grant{ID: g.ID, Datasets: g.Datasets, Columns: []string{"department", "patient_id"}}
	if _, err := a.analyze(ctx, p, sql, []catalog.Grant{narrow}, scopeOf([]catalog.Grant{narrow}, map[string]catalog.Dataset{d.Name: d}), nil); err != nil || p.n != 3 {
		t.Errorf("a narrower scope: %v, %d analyses, want 3", err, p.n)
	}
	for i := 0; i < 20; i++ {
		if _, err := a.analyze(ctx, p, sql+" LIMIT "+string(rune('1'+i%9)), []catalog.Grant{g}, scope, nil); err != nil {
			t.Fatal(err)
		}
	}
	if len(a.m) > a.max {
		t.Errorf("%d analyses kept, the most is %d", len(a.m), a.max)
	}
}

// TestAnalysisKeyCoversTheScope: the key changes with every input the
// analysis reads, and a source whose dataset has a policy digest is keyed
// by it instead of by its policy.
func TestAnalysisKeyCoversTheScope(t *testing.T) {
	d := demo.Description(0, 0)
	d.PolicyDigest = [32]byte{1}
	g := catalog.Grant{ID: "grt_a", Datasets: []string{d.Name}}
	const sql = "SELECT count(*) AS n FROM patients"
	type input struct {
		sql      string
		grants   []catalog.Grant
		scope    sandbox.Scope
		datasets map[string]catalog.Dataset
	}
	base := func() input {
		scope := scopeOf([]catalog.Grant{g}, map[string]catalog.Dataset{d.Name: d})
		for i := range scope.Sources {
			scope.Sources[i].Types = map[string]string{"age": "INTEGER"}
		}
		return input{sql, []catalog.Grant{g}, scope, map[string]catalog.Dataset{d.Name: d}}
	}
	key := func(in input) [32]byte {
		k, err := analysisKey(in.sql, in.grants, in.scope, in.datasets)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	cases := []struct {
		name   string
		change func(*input)
		same   bool
	}{
		{"nothing", func(*input) {}, true},
		{"the SQL", func(in *input) { in.sql += " WHERE age > 1" }, false},
		{"the grant", func(in *input) { in.grants = []catalog.Grant{{ID: "grt_b"}} }, false},
		{"a grade", func(in *input) { in.scope.Sources[0].Grade = "general" }, false},
		{"a column scope", func(in *input) { in.scope.Sources[0].Columns = map[string]bool{"age": true} }, false},
		{"a type", func(in *input) { in.scope.Sources[1].Types = map[string]string{"age": "BIGINT"} }, false},
		{"the field boundaries", func(in *input) { in.scope.Sources[0].Types = map[string]string{"ag": "eINTEGER"} }, false},
		{"the policy digest", func(in *input) {
			d := in.datasets[g.Datasets[0]]
			d.PolicyDigest[0] = 2
			in.datasets = map[string]catalog.Dataset{d.Name: d}
		}, false},
		{"the policy under the same digest", func(in *input) { in.scope.Sources[0].Policy.K++ }, true},
		{"the policy without a digest", func(in *input) { in.datasets = nil; in.scope.Sources[0].Policy.K++ }, false},
	}
	want := key(base())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := base()
			tc.change(&in)
			if same := key(in) == want; same != tc.same {
				t.Errorf("same key %v, want %v", same, tc.same)
			}
		})
	}
	noDigest := base()
	noDigest.datasets = nil
	if key(noDigest) == want {
		t.Error("a source keyed by its policy has the key of one keyed by its digest")
	}
}
