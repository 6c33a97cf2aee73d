package api_test

import (
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

func TestPeopleAndTokens(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 200})
	var e errorBody
	if status, _ := env.Do("POST", "/v1/people", "steward", map[string]any{"id": "x"}, &e); status != 403 {
		t.Fatalf("steward creating people: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_li", "name": "Dr Li", "org_id": "demo-hospital", "roles": []string{"researcher", "wizard"}}, &e); status != 400 {
		t.Fatalf("unknown role: %d %+v", status, e)
	}
	if status, _ := env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_li", "name": "Dr Li", "org_id": "demo-hospital", "roles": []string{"researcher"}}, nil); status != 201 {
		t.Fatalf("create: %d", status)
	}
	var tok struct{ ID, Token string }
	if status, _ := env.Do("POST", "/v1/people/dr_li/tokens", "admin", map[string]string{"label": "laptop"}, &tok); status != 201 || tok.Token == "" {
		t.Fatalf("issue: %d %+v", status, tok)
	}
	// The new researcher has no grant yet: forbidden, but authenticated.
	if status, _ := env.Do("POST", "/v1/queries", tok.Token, map[string]any{"sql": "SELECT count(*) FROM patients"}, &e); status != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("query without grant: %d %+v", status, e)
	}
	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	env.Do("GET", "/v1/people/dr_li/tokens", "admin", nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0]["token"] != nil {
		t.Fatalf("token list %v", list)
	}
	var rot struct{ ID, Token string }
	if status, _ := env.Do("POST", "/v1/tokens/"+tok.ID+"/rotate", "admin", nil, &rot); status != 201 || rot.Token == "" {
		t.Fatalf("rotate: %d", status)
	}
	if status, _ := env.Do("GET", "/v1/datasets", tok.Token, nil, &e); status != 401 {
		t.Fatalf("old token after rotation: %d", status)
	}
	if status, _ := env.Do("GET", "/v1/datasets", rot.Token, nil, nil); status != 200 {
		t.Fatalf("new token: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/people/dr_li/deactivate", "admin", nil, nil); status != 200 {
		t.Fatalf("deactivate: %d", status)
	}
	if status, _ := env.Do("GET", "/v1/datasets", rot.Token, nil, &e); status != 401 || e.Error.Code != "unauthenticated" {
		t.Fatalf("deactivated person: %d %+v", status, e)
	}
}

func TestExportAssessment(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 1000})
	narrow := map[string]any{"sql": "SELECT count(*) FROM patients WHERE age = 30", "epsilon": 0.1}
	var e errorBody
	if status, _ := env.Do("POST", "/v1/queries", "researcher_overseas", narrow, &e); status != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("overseas before assessment: %d %+v", status, e)
	}
	if status, _ := env.Do("POST", "/v1/orgs/overseas-lab/export-assessment", "steward", map[string]any{"approved": true, "reference": "EA-1"}, nil); status != 403 {
		t.Fatalf("steward recording an export assessment: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/orgs/overseas-lab/export-assessment", "approver", map[string]any{"approved": true, "reference": "EA-2026-007"}, nil); status != 200 {
		t.Fatalf("record: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/queries", "researcher_overseas", narrow, &e); status != 200 {
		t.Fatalf("overseas after assessment: %d %+v", status, e)
	}
}
