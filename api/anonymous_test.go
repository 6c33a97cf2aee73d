package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/audit"
)

// TestMetricsNeedAToken: /metrics answers admins (operators) and auditors
// only, and tells them where a release's time goes, step by step.
func TestMetricsNeedAToken(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	if status, _, _ := query(t, env, "researcher_internal", "SELECT sex, count(*) AS n FROM patients GROUP BY sex", 0.5); status != 200 {
		t.Fatalf("query: %d", status)
	}
	for _, tc := range []struct {
		who    string
		status int
	}{{"", 401}, {"researcher", 403}, {"steward", 403}, {"admin", 200}, {"auditor", 200}} {
		req, _ := http.NewRequest("GET", env.URL+"/metrics", nil)
		if tok := env.Tokens[tc.who]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%q: %d, want %d", tc.who, resp.StatusCode, tc.status)
		}
		if tc.status == 200 {
			for _, step := range []string{"admit", "prepare", "reserve", "run", "commit"} {
				if !strings.Contains(string(body), `gateway_release_step_seconds_count{step="`+step+`"} 1`) {
					t.Errorf("no time for the release step %s in the metrics", step)
				}
			}
		}
	}
}

// TestAnonymousRequestsAreLimited: requests without a valid token are
// rate-limited per address, and their audit entries hold a bounded
// summary of the path, however long it was.
func TestAnonymousRequestsAreLimited(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100, AnonymousPerMinute: 5})
	long := "/v1/access-requests/" + strings.Repeat("x", 100000)
	var e errorBody
	for i := range 5 {
		if status, _ := env.Do("GET", long, "gw_nonsense", nil, &e); status != 401 {
			t.Fatalf("request %d: %d %s", i, status, e.Error.Code)
		}
	}
	for range 3 {
		if status, _ := env.Do("GET", long, "gw_nonsense", nil, &e); status != 429 || e.Error.Code != "rate_limited" {
			t.Fatalf("over the limit: %d %s", status, e.Error.Code)
		}
	}
	if status, _ := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": "enr_guess"}, &e); status != 429 {
		t.Fatalf("enrolment over the limit: %d", status)
	}
	// A valid token still works from the same address.
	if status, _ := env.Do("GET", "/v1/datasets", "researcher", nil, nil); status != 200 {
		t.Fatalf("valid token: %d", status)
	}
	entries, err := env.Audit.List(context.Background(), audit.Filter{Action: "auth"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 6 { // five refusals and the first over the limit
		t.Errorf("%d auth entries, want 6", len(entries))
	}
	for _, en := range entries {
		if len(en.Detail) > 1000 {
			t.Errorf("audit entry of %d bytes", len(en.Detail))
		}
	}
}

// TestAuditNamesTheToken: entries of authenticated calls carry the token
// id as well as the person.
func TestAuditNamesTheToken(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 300})
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT count(*) FROM patients", "epsilon": 0.1}, nil); status != 200 {
		t.Fatalf("query: %d", status)
	}
	env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT name FROM patients"}, nil)
	tokens, err := env.Store.Tokens(context.Background(), "researcher_internal")
	if err != nil || len(tokens) != 1 {
		t.Fatalf("tokens %v %v", tokens, err)
	}
	entries, err := env.Audit.List(context.Background(), audit.Filter{Actor: "researcher_internal", Action: "query"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d query entries", len(entries))
	}
	for _, en := range entries {
		if !strings.Contains(string(en.Detail), tokens[0].ID) {
			t.Errorf("entry %s (%s) does not name token %s: %s", en.Action, en.Outcome, tokens[0].ID, en.Detail)
		}
	}
}
