package policy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hospital/gateway/policy"
)

func TestGradeRules(t *testing.T) {
	r, err := policy.LoadGradeRules("../grades.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r) != fmt.Sprint(policy.DefaultGradeRules()) {
		t.Errorf("grades.yaml %v differs from the built-in defaults %v", r, policy.DefaultGradeRules())
	}
	bad := filepath.Join(t.TempDir(), "g.yaml")
	os.WriteFile(bad, []byte("core: {max_epsilon_per_query: 1, min_k: 10, exact_allowed: true}\nimportant: {max_epsilon_per_query: 1, min_k: 5}\ngeneral: {max_epsilon_per_query: 1, min_k: 3}\n"), 0o600)
	if _, err := policy.LoadGradeRules(bad); err == nil {
		t.Fatal("exact answers for core data were accepted")
	}
	if got := policy.Highest(policy.General, policy.Core, policy.Important); got != policy.Core {
		t.Errorf("Highest = %s", got)
	}
}

// TestVocabularyStandsAlone: the vocabulary and the analyser link no
// database and no engine, so that what needs only the words does not.
func TestVocabularyStandsAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/hospital/gateway/policy", "github.com/hospital/gateway/sandbox").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, heavy := range []string{"duckdb", "pgx", "sqlite", "github.com/hospital/gateway/engine", "github.com/hospital/gateway/catalog"} {
			if strings.Contains(dep, heavy) {
				t.Errorf("policy or sandbox depends on %s", dep)
			}
		}
	}
}

func TestGradeRuleAndBorder(t *testing.T) {
	r := policy.DefaultGradeRules()[policy.Core]
	p := r.Apply(policy.Policy{K: 2, SpecialK: 20})
	if p.K != r.MinK || p.SpecialK != 20 {
		t.Errorf("k %d special_k %d under a minimum of %d", p.K, p.SpecialK, r.MinK)
	}
	for _, tc := range []struct{ gateway, want float64 }{{0, r.MaxEpsilon}, {r.MaxEpsilon * 2, r.MaxEpsilon}, {r.MaxEpsilon / 2, r.MaxEpsilon / 2}} {
		if got := r.CapEpsilon(tc.gateway); got != tc.want {
			t.Errorf("cap with gateway %g: %g, want %g", tc.gateway, got, tc.want)
		}
	}
	cases := []struct {
		kind     policy.OrgKind
		assessed bool
		refused  bool
	}{{policy.Internal, false, false}, {policy.Domestic, false, false}, {policy.Overseas, false, true}, {policy.Overseas, true, false}}
	for _, tc := range cases {
		if err := policy.CrossBorder("org", tc.kind, tc.assessed, policy.General); (err != nil) != tc.refused {
			t.Errorf("%s assessed %v: %v", tc.kind, tc.assessed, err)
		}
	}
}

// TestHiddenColumnNamesAreReserved: a policy cannot declare the engine's
// hidden rank columns, which researchers could otherwise name.
func TestHiddenColumnNamesAreReserved(t *testing.T) {
	for _, name := range []string{policy.RankColumn, "__RANK"} {
		p := policy.Policy{Tables: []policy.Table{{Name: "visits", Columns: []policy.Column{{Name: "patient_id", Role: policy.Unit}, {Name: name, Role: policy.Attribute}}}},
			Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 1}, K: 2, SpecialK: 2, SpecialShare: 1}
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("column %s: %v, want it refused as reserved", name, err)
		}
	}
}
