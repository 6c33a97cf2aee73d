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
