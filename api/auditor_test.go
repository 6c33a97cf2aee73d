package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/audit"
)

func TestAuditorViews(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT count(*) FROM patients", "epsilon": 0.1}, nil)
	env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT phone, count(*) FROM patients GROUP BY phone"}, nil)

	var list struct {
		Entries []audit.Entry `json:"entries"`
	}
	if status, _ := env.Do("GET", "/v1/audit?actor=researcher_internal&action=query", "auditor", nil, &list); status != 200 || len(list.Entries) != 2 {
		t.Fatalf("filtered log: %d %d", status, len(list.Entries))
	}
	if list.Entries[0].Outcome != "ok" || list.Entries[1].Outcome != "query_rejected" || list.Entries[0].Grade != "core" {
		t.Errorf("entries %+v", list.Entries)
	}
	if status, _ := env.Do("GET", "/v1/audit", "researcher", nil, nil); status != 403 {
		t.Errorf("researcher read the audit log: %d", status)
	}
	var v struct {
		Intact bool `json:"intact"`
	}
	if status, _ := env.Do("GET", "/v1/audit/verify", "auditor", nil, &v); status != 200 || !v.Intact {
		t.Fatalf("verify: %d %+v", status, v)
	}

	from, to := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	var exp audit.Export
	if status, _ := env.Do("GET", "/v1/audit/export?from="+from+"&to="+to, "auditor", nil, &exp); status != 200 || len(exp.Entries) < 10 {
		t.Fatalf("export: %d %d", status, len(exp.Entries))
	}
	if err := audit.VerifyExport(exp, &env.AuditKey.PublicKey); err != nil {
		t.Fatalf("export does not verify: %v", err)
	}
	req, _ := http.NewRequest("GET", env.URL+"/v1/audit/export?format=csv&from="+from+"&to="+to, nil)
	req.Header.Set("Authorization", "Bearer "+env.Tokens["auditor"])
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := audit.VerifyCSV(b, &env.AuditKey.PublicKey); err != nil || !bytes.Contains(b, []byte("query_rejected")) {
		t.Fatalf("csv export: %v", err)
	}

	var budgets struct {
		Budgets []struct {
			GrantID    string `json:"grant_id"`
			Researcher string `json:"researcher"`
		} `json:"budgets"`
	}
	env.Do("GET", "/v1/budgets", "researcher_internal", nil, &budgets)
	var hist struct {
		Queries []map[string]any `json:"queries"`
	}
	if status, _ := env.Do("GET", "/v1/grants/"+budgets.Budgets[0].GrantID+"/history", "auditor", nil, &hist); status != 200 || len(hist.Queries) != 1 {
		t.Fatalf("history: %d %v", status, hist)
	}
	if fmt.Sprint(hist.Queries[0]["epsilon_cumulative"]) != "0.1" {
		t.Errorf("history %v", hist.Queries)
	}
	if status, _ := env.Do("GET", "/v1/grants/"+budgets.Budgets[0].GrantID+"/history", "researcher", nil, nil); status != 404 {
		t.Errorf("another researcher read the history: %d", status)
	}
}

func TestReceipts(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	var a map[string]any
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT sex, avg(age) AS a FROM patients GROUP BY sex", "epsilon": 1.0}, &a); status != 200 || a["receipt"] == nil {
		t.Fatalf("answer: %d %v", status, a)
	}
	var v map[string]any
	if status, _ := env.Do("POST", "/v1/receipts/verify", "auditor", a, &v); status != 200 || v["valid"] != true || v["researcher"] != "researcher_internal" {
		t.Fatalf("genuine answer: %d %v", status, v)
	}
	// The cached repeat carries the same receipt.
	var again map[string]any
	env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT sex, avg(age) AS a FROM patients GROUP BY sex", "epsilon": 1.0}, &again)
	if fmt.Sprint(again["receipt"]) != fmt.Sprint(a["receipt"]) {
		t.Errorf("cached answer has another receipt")
	}
	// An edited number fails.
	rows := a["rows"].([]any)
	rows[0].([]any)[1] = 99.5
	if status, _ := env.Do("POST", "/v1/receipts/verify", "auditor", a, &v); status != 200 || v["valid"] != false {
		t.Fatalf("edited answer: %d %v", status, v)
	}
}
