package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/audit"
)

// outcome is the answer to a change to a person.
type outcome struct {
	Person struct {
		ID     string   `json:"id"`
		Roles  []string `json:"roles"`
		Active bool     `json:"active"`
	} `json:"person"`
	Change *struct {
		ID    string `json:"id"`
		State string `json:"state"`
	} `json:"change"`
	Enrolment *struct {
		Secret            string `json:"secret"`
		NeedsConfirmation bool   `json:"needs_confirmation"`
	} `json:"enrolment"`
}

type enrolled struct {
	TokenID string `json:"token_id"`
	Token   string `json:"token"`
}

// TestEnrolment follows a researcher from being added to rotating their own
// token: the admin's secret alone redeems nothing, the approver's code
// alone neither, and nobody but the holder rotates a token.
func TestEnrolment(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 200})
	var e errorBody
	if status, _ := env.Do("POST", "/v1/people", "steward", map[string]any{"id": "x"}, &e); status != 403 {
		t.Fatalf("steward creating people: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_li", "name": "Dr Li", "org_id": "demo-hospital", "roles": []string{"researcher", "wizard"}}, &e); status != 400 {
		t.Fatalf("unknown role: %d %+v", status, e)
	}
	var add outcome
	if status, _ := env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_li", "name": "Dr Li", "org_id": "demo-hospital", "roles": []string{"researcher"}}, &add); status != 202 ||
		add.Change == nil || add.Enrolment == nil || !add.Enrolment.NeedsConfirmation || add.Person.Active {
		t.Fatalf("create: %d %+v", status, add)
	}
	secret := add.Enrolment.Secret
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": secret}, &e); status != 401 {
		t.Fatalf("enrol before confirmation: %d %+v", status, e)
	}
	if status, _ := env.Do("POST", "/v1/person-changes/"+add.Change.ID+"/confirm", "admin", nil, &e); status != 403 {
		t.Fatalf("admin confirming: %d", status)
	}
	var conf struct {
		Code string `json:"confirmation_code"`
	}
	if status, _ := env.Do("POST", "/v1/person-changes/"+add.Change.ID+"/confirm", "approver", nil, &conf); status != 200 || conf.Code == "" {
		t.Fatalf("confirm: %d %+v", status, conf)
	}
	if status, _ := env.Do("POST", "/v1/person-changes/"+add.Change.ID+"/confirm", "approver", nil, &e); status != 409 {
		t.Fatalf("confirming twice: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": secret, "confirmation_code": "cnf_wrong"}, &e); status != 401 {
		t.Fatalf("enrol with a wrong code: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": "enr_guess", "confirmation_code": conf.Code}, &e); status != 401 {
		t.Fatalf("enrol with the code alone: %d", status)
	}
	var tok enrolled
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": secret, "confirmation_code": conf.Code}, &tok); status != 201 || tok.Token == "" {
		t.Fatalf("enrol: %d %+v", status, tok)
	}
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": secret, "confirmation_code": conf.Code}, &e); status != 401 {
		t.Fatalf("enrolling twice: %d", status)
	}
	// The new researcher has no grant yet: forbidden, but authenticated.
	if status, _ := env.Do("POST", "/v1/queries", tok.Token, map[string]any{"sql": "SELECT count(*) FROM patients"}, &e); status != 403 || e.Error.Code != "forbidden" {
		t.Fatalf("query without grant: %d %+v", status, e)
	}
	if status, _ := env.Do("POST", "/v1/people/dr_li/tokens", "admin", nil, &e); status != 404 {
		t.Fatalf("admin issuing a token for someone: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/tokens/"+tok.TokenID+"/rotate", "admin", nil, &e); status != 404 {
		t.Fatalf("admin rotating someone's token: %d", status)
	}
	var list struct {
		Tokens []map[string]any `json:"tokens"`
	}
	env.Do("GET", "/v1/people/dr_li/tokens", "admin", nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0]["token"] != nil {
		t.Fatalf("token list %v", list)
	}
	var rot struct{ ID, Token string }
	if status, _ := env.Do("POST", "/v1/tokens/"+tok.TokenID+"/rotate", tok.Token, nil, &rot); status != 201 || rot.Token == "" {
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
	// The refused login is recorded against dr_li and the token used.
	entries, err := env.Audit.List(context.Background(), audit.Filter{Actor: "dr_li"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, en := range entries {
		found = found || en.Action == "auth" && strings.Contains(string(en.Detail), rot.ID)
	}
	if !found {
		t.Errorf("no auth refusal naming dr_li and token %s in %v", rot.ID, entries)
	}
	// Reactivation waits for an approver, and needs a new enrolment.
	var act outcome
	if status, _ := env.Do("POST", "/v1/people/dr_li/activate", "admin", nil, &act); status != 202 || act.Change == nil || act.Enrolment == nil {
		t.Fatalf("activate: %d %+v", status, act)
	}
	if status, _ := env.Do("POST", "/v1/person-changes/"+act.Change.ID+"/confirm", "approver", nil, &conf); status != 200 {
		t.Fatalf("confirm activation: %d", status)
	}
	if status, _ := env.Do("GET", "/v1/datasets", rot.Token, nil, &e); status != 401 {
		t.Fatalf("token from before the deactivation: %d", status)
	}
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": act.Enrolment.Secret, "confirmation_code": conf.Code}, &tok); status != 201 {
		t.Fatalf("enrol after reactivation: %d", status)
	}
}

// TestDutiesAndLastAdmin: one person holds roles of one duty only, and the
// last admin stays.
func TestDutiesAndLastAdmin(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	cases := []struct {
		name, path string
		body       any
		status     int
	}{
		{"admin also researcher", "/v1/people/admin/roles", map[string]any{"roles": []string{"admin", "researcher"}}, 400},
		{"admin also auditor", "/v1/people/admin/roles", map[string]any{"roles": []string{"admin", "auditor"}}, 400},
		{"steward also researcher", "/v1/people/steward/roles", map[string]any{"roles": []string{"steward", "researcher"}}, 400},
		{"approver also auditor", "/v1/people/approver/roles", map[string]any{"roles": []string{"approver", "auditor"}}, 400},
		{"new person approving and auditing", "/v1/people", map[string]any{"id": "p1", "name": "P", "org_id": "demo-hospital", "roles": []string{"steward", "auditor"}}, 400},
		{"last admin drops the role", "/v1/people/admin/roles", map[string]any{"roles": []string{"auditor"}}, 409},
		{"last admin deactivated", "/v1/people/admin/deactivate", nil, 409},
		{"steward and approver together is one duty", "/v1/people", map[string]any{"id": "p2", "name": "P", "org_id": "demo-hospital", "roles": []string{"steward", "approver"}}, 202},
		{"a second admin applies at once", "/v1/people", map[string]any{"id": "admin2", "name": "A", "org_id": "demo-hospital", "roles": []string{"admin"}}, 201},
		{"an admin who is not the last may be deactivated", "/v1/people/admin2/deactivate", nil, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e errorBody
			if status, _ := env.Do("POST", tc.path, "admin", tc.body, &e); status != tc.status {
				t.Fatalf("status %d, want %d: %+v", status, tc.status, e)
			}
		})
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
