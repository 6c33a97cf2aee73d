package release

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

func TestCovering(t *testing.T) {
	a := catalog.Grant{ID: "a", Datasets: []string{"x"}}
	b := catalog.Grant{ID: "b", Datasets: []string{"x", "y"}}
	cases := []struct {
		name     string
		live     []catalog.Grant
		datasets []string
		want     string
		kind     fault.Kind
	}{
		{"one covers", []catalog.Grant{a, b}, []string{"y"}, "b", 0},
		{"several cover", []catalog.Grant{a, b}, []string{"x"}, "", fault.Invalid},
		{"none covers", []catalog.Grant{a}, []string{"x", "y"}, "", fault.Forbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := covering(tc.live, tc.datasets)
			if tc.want != "" {
				if err != nil || g.ID != tc.want {
					t.Fatalf("got %v %v, want %s", g.ID, err, tc.want)
				}
				return
			}
			if fault.KindOf(err) != tc.kind {
				t.Fatalf("got %v, want %s", err, tc.kind)
			}
		})
	}
}

func TestInColumns(t *testing.T) {
	q := &sandbox.Query{Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: "age", Role: policy.QuasiIdentifier}}}
	if err := inColumns(q, catalog.Grant{}); err != nil {
		t.Errorf("a grant without a column scope: %v", err)
	}
	if err := inColumns(q, catalog.Grant{Columns: []string{"AGE"}}); err != nil {
		t.Errorf("age is in scope, the unit always is: %v", err)
	}
	if err := inColumns(q, catalog.Grant{Columns: []string{"sex"}}); fault.KindOf(err) != fault.QueryRejected {
		t.Errorf("age out of scope: %v", err)
	}
}

func TestAnswerKey(t *testing.T) {
	adm := &admission{q: &sandbox.Query{Key: "k"}}
	keys := map[string]bool{}
	for _, c := range []struct {
		cost  privacy.Cost
		exact bool
	}{{privacy.Cost{Epsilon: 0.1}, false}, {privacy.Cost{Epsilon: 0.2}, false}, {privacy.Cost{Epsilon: 0.1, Delta: 1e-6}, false}, {privacy.Cost{}, true}} {
		keys[answerKey(adm, c.cost, c.exact)] = true
	}
	if len(keys) != 4 {
		t.Errorf("%d distinct keys for 4 distinct questions", len(keys))
	}
	if answerKey(adm, privacy.Cost{Epsilon: 0.1}, false) != answerKey(adm, privacy.Cost{Epsilon: 0.1}, false) {
		t.Error("the same question has two keys")
	}
}

func TestResultJSON(t *testing.T) {
	body, _ := json.Marshal(Answer{QueryID: "q", Answer: privacy.Answer{Rows: [][]any{}}})
	r := &Result{Body: body, Budget: catalog.Balance{EpsilonSpent: 0.5}, Cached: true}
	out, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if m["query_id"] != "q" || m["cached"] != true || m["budget"].(map[string]any)["epsilon_spent"] != 0.5 || m["rows"] == nil {
		t.Errorf("got %s", out)
	}
	if _, err := (&Result{Body: []byte("[]")}).JSON(); err == nil {
		t.Error("a body that is not an object was accepted")
	}
}

// TestRunIsOneRefusal: whatever stops a prepared plan while it runs, the
// refusal is the same.
func TestRunIsOneRefusal(t *testing.T) {
	ctx := context.Background()
	e, err := engine.Open(ctx, engine.Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, sql := range []string{
		"SELECT sum(range) FROM range(100000000000)", // stopped by the deadline
		"SELECT list(range) FROM range(400000000)",   // past the memory limit
	} {
		prep, err := e.Prepare(ctx, sql)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 200_000_000)
		_, err = run(runCtx, prep, &privacy.Plan{MaxRows: 10}, nil)
		cancel()
		prep.Close()
		if fault.KindOf(err) != fault.ResourceLimit || fault.Message(err) != runLimitMessage {
			t.Errorf("%s: %v", sql, err)
		}
	}
}

// TestConcurrentQueryCap: a person with as many queries running as the cap
// allows is refused the next with too_many_queries before anything is
// read, whatever adapter it came through; others are not; a place frees
// when a query ends.
func TestConcurrentQueryCap(t *testing.T) {
	s := New(Config{MaxConcurrentQueries: 2})
	alice := catalog.Person{ID: "alice", Roles: []catalog.PersonRole{catalog.Researcher}}
	for range 2 {
		if err := s.running.acquire("alice"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Answer(context.Background(), alice, Request{SQL: "SELECT count(*) FROM patients"}); fault.KindOf(err) != fault.TooManyQueries {
		t.Fatalf("a third query: %v", err)
	}
	if err := s.running.acquire("bob"); err != nil {
		t.Errorf("another person: %v", err)
	}
	s.running.release("alice")
	if err := s.running.acquire("alice"); err != nil {
		t.Errorf("after one ended: %v", err)
	}
}
