package release

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/metadb"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

// service is a release service over a fresh metadata database with the
// demo's people and grants, and no engine: enough for the steps that do
// not read data.
func service(t *testing.T) (*Service, *catalog.Store, catalog.Grant) {
	t.Helper()
	ctx := context.Background()
	meta, err := metadb.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	store, err := catalog.New(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.Open(ctx, meta, audit.Config{Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(context.Background()) })
	if _, err := demo.Seed(ctx, store, demo.Description(0, 0), demo.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	grants, err := store.Grants(ctx, "researcher_internal")
	if err != nil || len(grants) != 1 {
		t.Fatalf("grants %v %v", grants, err)
	}
	return New(Config{Store: store, Audit: log, Signer: key}), store, grants[0]
}

// TestCommitIsOneTransaction: when the audit entry cannot be written, the
// answer and its history line are not kept either; when it can, all three
// are.
func TestCommitIsOneTransaction(t *testing.T) {
	s, store, g := service(t)
	ctx := context.Background()
	rec := catalog.QueryRecord{ID: "qry_1", GrantID: g.ID, Researcher: "researcher_internal", Datasets: []string{"demo_hospital"}, Outcome: "ok", Time: time.Now()}
	bad := commitment{rec: rec, key: "k", body: []byte(`{"query_id":"qry_1"}`),
		entry: audit.Entry{Actor: "researcher_internal", Action: "query", Outcome: "ok", Detail: json.RawMessage(`not an object`)}}
	if _, err := s.commit(ctx, bad); err == nil {
		t.Fatal("a release whose audit entry failed was committed")
	}
	if _, ok, _ := store.Answer(ctx, g.ID, "k"); ok {
		t.Error("the answer was kept without its audit entry")
	}
	if h, _ := store.History(ctx, g.ID); len(h) != 0 {
		t.Errorf("history kept %d lines without their audit entry", len(h))
	}
	good := bad
	good.entry.Detail = json.RawMessage(`{}`)
	stored, err := s.commit(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored) != string(good.body) {
		t.Errorf("stored %s", stored)
	}
	if h, _ := store.History(ctx, g.ID); len(h) != 1 {
		t.Errorf("history has %d lines, want 1", len(h))
	}
}

// TestRepeatIsFree: a stored answer comes back with the grant's balance,
// marked cached, and its release is recorded at no cost.
func TestRepeatIsFree(t *testing.T) {
	s, store, g := service(t)
	ctx := context.Background()
	adm := &admission{q: &sandbox.Query{Key: "k", SQL: "SELECT 1", Datasets: []string{"demo_hospital"}}, grant: g}
	p := catalog.Person{ID: "researcher_internal", Roles: []catalog.PersonRole{catalog.Researcher}}
	if res, err := s.repeat(ctx, p, Request{}, adm, "key"); res != nil || err != nil {
		t.Fatalf("a question never asked came back: %v %v", res, err)
	}
	body, _ := json.Marshal(Answer{QueryID: "qry_first", GrantID: g.ID, Answer: privacy.Answer{Rows: [][]any{}}})
	if _, err := s.commit(ctx, commitment{rec: catalog.QueryRecord{ID: "qry_first", GrantID: g.ID, Time: time.Now()}, key: "key", body: body,
		entry: audit.Entry{Action: "query", Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.repeat(ctx, p, Request{}, adm, "key")
	if err != nil || res == nil || !res.Cached || res.Budget.EpsilonSpent != 0 {
		t.Fatalf("repeat: %+v %v", res, err)
	}
	if a, err := res.Answer(); err != nil || a.QueryID != "qry_first" {
		t.Fatalf("repeat's answer: %+v %v", a, err)
	}
	if h, _ := store.History(ctx, g.ID); len(h) != 2 || !h[1].Cached || h[1].Epsilon != 0 {
		t.Errorf("history %+v, want the repeat recorded as cached at no cost", h)
	}
}

// TestPlanExact: exact answers need both the grade's rule and the
// dataset's own switch; otherwise the query is refused before planning.
func TestPlanExact(t *testing.T) {
	q := func() *sandbox.Query {
		return &sandbox.Query{Grade: policy.General, Base: "SELECT 1", GroupBound: 1, PerUnitRows: true, Limit: -1,
			Aggs:    []sandbox.Agg{{Name: "n", Kind: sandbox.Count, Star: true}},
			Outputs: []sandbox.Output{{Name: "n", Group: -1, Agg: 0}},
			Policy:  policy.Policy{K: 5, SpecialK: 5, SpecialShare: 1}}
	}
	s := New(Config{})
	cases := []struct {
		name  string
		rule  bool
		on    bool
		plans bool
	}{{"grade forbids", false, true, false}, {"dataset not switched on", true, false, false}, {"both allow", true, true, true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			adm := &admission{q: q(), rule: policy.GradeRule{ExactAllowed: tc.rule}, used: []catalog.Dataset{{Name: "d", ExactAnswers: tc.on}}}
			plan, cost, err := s.plan(adm, Request{Exact: true})
			if tc.plans {
				if err != nil || plan.Mechanism != privacy.None || cost != (privacy.Cost{}) {
					t.Fatalf("plan %v cost %v err %v", plan, cost, err)
				}
				return
			}
			if fault.KindOf(err) != fault.QueryRejected {
				t.Fatalf("got %v, want query_rejected", err)
			}
		})
	}
}
