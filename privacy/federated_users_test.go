package privacy_test

// A federated plan noises the pooled patient count __users with Linf 1
// (FederatedPlan.quantitiesPerGroup). Under the filtered rank shape the
// central plan's __users counts only the K*m smallest ids' rows (exact
// below K, which is all its k rule needs): there one patient with a small
// id and m rows could push others out of the list and move the count by up
// to m-1. A federated plan counts its patients exactly.

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/sandbox"
)

func TestFederatedPatientCountIsExact(t *testing.T) {
	ctx := context.Background()
	// Patient 1 (the smallest id) has 3 visits, patients 2..30 one each.
	e := engineWith(t, engine.Config{MemoryLimit: "256MB", Threads: 1},
		"CREATE SCHEMA s",
		"CREATE TABLE s.visits AS SELECT range::BIGINT AS patient_id, 100 AS cost FROM range(1, 31) UNION ALL SELECT 1, 100 FROM range(2)")
	if err := e.RankRows(ctx, "s", "visits", "patient_id"); err != nil {
		t.Fatal(err)
	}
	lo, hi := 0.0, 1000.0
	pol := policy.Policy{
		Tables: []policy.Table{{Name: "visits", Columns: []policy.Column{
			{Name: "patient_id", Role: policy.Unit},
			{Name: "cost", Role: policy.Attribute, Min: &lo, Max: &hi},
		}}},
		Contribution: policy.Contribution{MaxGroups: 2, MaxRows: 3}, K: 2, SpecialK: 3, SpecialShare: 0.5,
	}
	scope := sandbox.Scope{Sources: []sandbox.Source{{Dataset: "s", Grade: policy.Core, Table: pol.Tables[0], Policy: pol}}}
	sql := "SELECT count(*) AS n FROM visits v WHERE v.cost > 5"
	q, err := sandbox.Analyze(ctx, e, sql, scope)
	if err != nil {
		t.Fatal(err)
	}
	rankIfAsked(t, e, q)
	fp, err := privacy.NewFederatedPlan(q, privacy.Cost{Epsilon: 1, Delta: 1e-7}, privacy.Limits{}, 3, privacy.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	full := groupsOf(t, e, fp.SQL)
	without := strings.Replace(fp.SQL, "WITH __base AS (", fmt.Sprintf("WITH __base AS MATERIALIZED (SELECT * FROM (%s) WHERE __pu IS DISTINCT FROM 1), __unused AS (", q.Base), 1)
	nb := groupsOf(t, e, without)
	t.Logf("with patient 1: %v\nwithout: %v", full, nb)
	if d := math.Abs(full[""]["__users"] - nb[""]["__users"]); d > 1 {
		t.Errorf("the federated pooled patient count moves by %g for one patient (noised with Linf 1); the exact count has 30 patients, __users says %v", d, full[""]["__users"])
	}
}
