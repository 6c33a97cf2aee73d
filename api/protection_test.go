package api_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/demo"
)

type change struct {
	Dataset map[string]any `json:"dataset"`
	Change  *struct {
		ID     string   `json:"id"`
		State  string   `json:"state"`
		Lowers []string `json:"lowers"`
	} `json:"change"`
}

// TestLoweringProtectionNeedsTwoPeople: every change that lowers a
// dataset's protection waits, with the old rules in force, until a
// different person with the approver role verifies it; tightening applies
// at once; and the history is in the catalog report.
func TestLoweringProtectionNeedsTwoPeople(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 300})
	policyOf := func(edit func(p map[string]any)) map[string]any {
		var ds struct {
			Datasets []map[string]any `json:"datasets"`
		}
		env.Do("GET", "/v1/datasets", "steward", nil, &ds)
		for _, d := range ds.Datasets {
			if d["name"] == demo.Dataset {
				p := d["policy"].(map[string]any)
				edit(p)
				return p
			}
		}
		t.Fatal("no demo dataset")
		return nil
	}
	grade := func() string {
		var ds struct {
			Datasets []map[string]any `json:"datasets"`
		}
		env.Do("GET", "/v1/datasets", "steward", nil, &ds)
		for _, d := range ds.Datasets {
			if d["name"] == demo.Dataset {
				return fmt.Sprint(d["grade"], "/", d["exact_answers"], "/", d["policy"])
			}
		}
		return ""
	}
	path := "/v1/datasets/" + demo.Dataset
	cases := []struct {
		name    string
		path    string
		body    map[string]any
		pending bool
	}{
		{"lower grade", path + "/grade", map[string]any{"grade": "general", "reason": "r"}, true},
		{"exact answers on", path + "/exact", map[string]any{"exact_answers": true, "reason": "r"}, true},
		{"smaller k", path + "/policy", map[string]any{"reason": "r", "policy": policyOf(func(p map[string]any) { p["k"] = 5.0 })}, true},
		{"more contribution per patient", path + "/policy", map[string]any{"reason": "r", "policy": policyOf(func(p map[string]any) {
			p["contribution"].(map[string]any)["max_rows"] = 100.0
		})}, true},
		{"wider bounds", path + "/policy", map[string]any{"reason": "r", "policy": policyOf(func(p map[string]any) {
			cols := p["tables"].([]any)[1].(map[string]any)["columns"].([]any)
			for _, c := range cols {
				if c.(map[string]any)["name"] == "cost_yuan" {
					c.(map[string]any)["max"] = 1e6
				}
			}
		})}, true},
		{"identifier released", path + "/policy", map[string]any{"reason": "r", "policy": policyOf(func(p map[string]any) {
			p["tables"].([]any)[0].(map[string]any)["columns"].([]any)[1].(map[string]any)["role"] = "attribute"
		})}, true},
		{"same grade applies at once", path + "/grade", map[string]any{"grade": "core", "reason": "reviewed"}, false},
		{"larger k applies at once", path + "/policy", map[string]any{"reason": "r", "policy": policyOf(func(p map[string]any) { p["k"] = 15.0 })}, false},
	}
	var pending []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := grade()
			var o change
			status, _ := env.Do("POST", tc.path, "steward", tc.body, &o)
			if tc.pending {
				if status != 202 || o.Change == nil || o.Change.State != "pending" || len(o.Change.Lowers) == 0 {
					t.Fatalf("status %d %+v, want a pending change", status, o)
				}
				if after := grade(); after != before {
					t.Fatalf("protection changed before verification: %s -> %s", before, after)
				}
				pending = append(pending, o.Change.ID)
				return
			}
			if status != 200 {
				t.Fatalf("status %d, want 200", status)
			}
		})
	}
	// Until verified, the old rules apply: no exact answer.
	var e errorBody
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex", "exact": true}, &e); status != 400 {
		t.Fatalf("exact before verification: %d", status)
	}
	// The steward cannot verify; the approver can, once; a proposal made
	// against rules that have since changed is refused.
	if status, _ := env.Do("POST", "/v1/protection-changes/"+pending[0]+"/verify", "steward", nil, &e); status != 403 {
		t.Fatalf("steward verifying: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/protection-changes/"+pending[0]+"/verify", "approver", nil, &e); status != 409 {
		t.Fatalf("verifying a proposal made before k was raised: %d %+v", status, e)
	}
	var o change
	if status, _ := env.Do("POST", path+"/grade", "steward", map[string]any{"grade": "important", "reason": "r"}, &o); status != 202 {
		t.Fatalf("propose: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/protection-changes/"+o.Change.ID+"/verify", "approver", nil, &e); status != 200 {
		t.Fatalf("verify: %d %+v", status, e)
	}
	if g := grade(); !strings.HasPrefix(g, "important/") {
		t.Fatalf("grade after verification %s", g)
	}
	if status, _ := env.Do("POST", "/v1/protection-changes/"+o.Change.ID+"/verify", "approver", nil, &e); status != 409 {
		t.Fatalf("verifying twice: %d", status)
	}
	var rep struct {
		Datasets []struct {
			Dataset      string           `json:"dataset"`
			GradeHistory []map[string]any `json:"grade_history"`
			Changes      []map[string]any `json:"protection_changes"`
		} `json:"datasets"`
	}
	env.Do("GET", "/v1/catalog/report", "auditor", nil, &rep)
	for _, d := range rep.Datasets {
		if d.Dataset != demo.Dataset {
			continue
		}
		if len(d.Changes) != len(pending)+1 {
			t.Errorf("report lists %d changes, want %d", len(d.Changes), len(pending)+1)
		}
		last := d.GradeHistory[len(d.GradeHistory)-1]
		if last["grade"] != "important" || !strings.Contains(last["changed_by"].(string), "verified by approver") {
			t.Errorf("grade history %v", d.GradeHistory)
		}
	}
}

// TestReloadCannotLowerProtection: a reload with a lower grade keeps the
// grade in force and files a proposal.
func TestReloadCannotLowerProtection(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	if status, out := upload(t, env, "steward", visitsCSV(100)); status != 201 {
		t.Fatalf("upload: %d %v", status, out)
	}
	general := strings.Replace(clinicManifest, `"grade": "important"`, `"grade": "general"`, 1)
	status := uploadParts(t, env, general, [][2]string{{"table:visits", "visits.csv"}}, visitsCSV(100))
	if status != 201 {
		t.Fatalf("reload: %d", status)
	}
	var ds struct {
		Datasets []map[string]any `json:"datasets"`
	}
	env.Do("GET", "/v1/datasets", "steward", nil, &ds)
	for _, d := range ds.Datasets {
		if d["name"] == "clinic" && d["grade"] != "important" {
			t.Fatalf("a reload lowered the grade: %v", d["grade"])
		}
	}
	var cs struct {
		Changes []map[string]any `json:"changes"`
	}
	env.Do("GET", "/v1/protection-changes?dataset=clinic", "approver", nil, &cs)
	if len(cs.Changes) != 1 || cs.Changes[0]["state"] != "pending" {
		t.Fatalf("changes %v", cs.Changes)
	}
}
