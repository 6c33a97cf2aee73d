package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
)

const clinicManifest = `{"name": "clinic", "grade": "important", "source": "clinic export", "category": "visits",
 "purpose": "planning", "processing_method": "DP aggregates", "responsible_party": "Clinic Office", "cross_border": "none",
 "protection_measures": "SM4 at rest",
 "policy": {"tables": [{"name": "visits", "columns": [
   {"name": "patient_id", "role": "unit"}, {"name": "name", "role": "identifier"},
   {"name": "clinic", "role": "attribute", "public": ["North", "South"]}, {"name": "fee", "role": "attribute", "min": 0, "max": 100}]}],
  "contribution": {"max_groups": 1, "max_rows": 2}, "k": 5, "special_k": 10, "special_share": 0.5}}`

func upload(t *testing.T, env *apitest.Env, who, csv string) (int, map[string]any) {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	w.WriteField("manifest", clinicManifest)
	fw, _ := w.CreateFormFile("table:visits", "visits.csv")
	fw.Write([]byte(csv))
	w.Close()
	req, _ := http.NewRequest("POST", env.URL+"/v1/datasets/upload", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+env.Tokens[who])
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func visitsCSV(n int) string {
	var b strings.Builder
	b.WriteString("patient_id,name,clinic,fee\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d,Person %d,%s,%d\n", i, i, []string{"North", "South"}[i%2], i%90)
	}
	return b.String()
}

// TestRegisterOverAPI uploads a CSV as a steward, has it approved for a
// researcher, queries it, and reloads it with a different scale.
func TestRegisterOverAPI(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	if status, _ := upload(t, env, "researcher", visitsCSV(300)); status != 403 {
		t.Fatalf("researcher registering: %d", status)
	}
	status, out := upload(t, env, "steward", visitsCSV(300))
	if status != 201 {
		t.Fatalf("upload: %d %v", status, out)
	}
	if ds := out["dataset"].(map[string]any); ds["units"].(float64) != 300 || ds["grade"] != "important" {
		t.Fatalf("registered %v", ds)
	}
	// Grant access through the two-step approval and query it.
	st := struct{ GrantID string }{grantOn(t, env, "researcher_internal", "clinic")}
	var a map[string]any
	status, _ = env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT clinic, avg(fee) AS fee FROM visits GROUP BY clinic", "grant_id": st.GrantID, "epsilon": 1.0}, &a)
	if status != 200 || len(a["rows"].([]any)) != 2 || a["grade"] != "important" {
		t.Fatalf("query: %d %v", status, a)
	}
	// A reload at a third of the scale flags it for re-grading.
	status, out = upload(t, env, "steward", visitsCSV(100))
	if status != 201 || out["flagged_for_regrade"] != true {
		t.Fatalf("reload: %d %v", status, out)
	}
	var rep struct {
		Datasets []map[string]any `json:"datasets"`
	}
	env.Do("GET", "/v1/catalog/report", "auditor", nil, &rep)
	found := false
	for _, d := range rep.Datasets {
		if d["dataset"] == "clinic" {
			found = d["needs_regrade"] == true && strings.Contains(d["scale"].(string), "100 patients")
		}
	}
	if !found {
		t.Fatalf("report %v", rep)
	}
	lower(t, env, "/v1/datasets/clinic/grade", map[string]string{"grade": "general", "reason": "reviewed after reload"})
	var d struct {
		Datasets []map[string]any `json:"datasets"`
	}
	env.Do("GET", "/v1/datasets", "steward", nil, &d)
	for _, ds := range d.Datasets {
		if ds["name"] == "clinic" && (ds["needs_regrade"] != false || ds["grade"] != "general") {
			t.Fatalf("after the verified regrade: %v", ds)
		}
	}
	// A manifest that does not match the file is refused with a clear message.
	bad := strings.Replace(visitsCSV(10), "fee", "price", 1)
	if status, out := upload(t, env, "steward", bad); status != 400 || !strings.Contains(fmt.Sprint(out), "price") {
		t.Fatalf("mismatched file: %d %v", status, out)
	}
}

// TestExactAnswersForGeneralData: the grade rules allow exact,
// small-cell-suppressed answers for general data only.
func TestExactAnswersForGeneralData(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 300})
	var e errorBody
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT sex, count(*) FROM patients GROUP BY sex", "exact": true}, &e); status != 400 || e.Error.Code != "query_rejected" {
		t.Fatalf("exact on core data: %d %+v", status, e)
	}
	if status, out := upload(t, env, "steward", visitsCSV(101)); status != 201 {
		t.Fatalf("upload: %d %v", status, out)
	}
	lower(t, env, "/v1/datasets/clinic/grade", map[string]string{"grade": "general", "reason": "aggregate statistics only"})
	st := struct{ GrantID string }{grantOn(t, env, "researcher_internal", "clinic")}
	exact := map[string]any{"sql": "SELECT clinic, count(*) AS n FROM visits GROUP BY clinic", "grant_id": st.GrantID, "exact": true}
	if status, _ := env.Do("POST", "/v1/queries", "researcher_internal", exact, &e); status != 400 || e.Error.Code != "query_rejected" {
		t.Fatalf("exact on general data before they are switched on: %d %+v", status, e)
	}
	lower(t, env, "/v1/datasets/clinic/exact", map[string]any{"exact_answers": true, "reason": "published statistics"})
	var a struct {
		Rows    [][]any `json:"rows"`
		Privacy struct {
			Mechanism string  `json:"mechanism"`
			Epsilon   float64 `json:"epsilon"`
		} `json:"privacy"`
		Budget struct {
			EpsilonSpent float64 `json:"epsilon_spent"`
		} `json:"budget"`
	}
	status, _ := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{
		"sql": "SELECT clinic, count(*) AS n, sum(fee) AS fees FROM visits GROUP BY clinic", "grant_id": st.GrantID, "exact": true}, &a)
	if status != 200 || a.Privacy.Mechanism != "none" || a.Budget.EpsilonSpent != 0 {
		t.Fatalf("exact answer: %d %+v", status, a)
	}
	// 101 patients: 50 in North (even ids), 51 in South; fees are id % 90.
	want := map[string][2]float64{}
	for i := 1; i <= 101; i++ {
		c := []string{"North", "South"}[i%2]
		w := want[c]
		w[0]++
		w[1] += float64(i % 90)
		want[c] = w
	}
	for _, r := range a.Rows {
		w := want[r[0].(string)]
		if r[1].(float64) != w[0] || r[2].(float64) != w[1] {
			t.Errorf("%v: got %v %v, want %v", r[0], r[1], r[2], w)
		}
	}
}

// lower has the steward propose a change that lowers protection, checks
// that it waits, and has the approver verify it.
func lower(t *testing.T, env *apitest.Env, path string, body any) {
	t.Helper()
	var o struct {
		Change struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"change"`
	}
	if status, _ := env.Do("POST", path, "steward", body, &o); status != 202 || o.Change.State != "pending" {
		t.Fatalf("propose %s: %d %+v", path, status, o)
	}
	if status, _ := env.Do("POST", "/v1/protection-changes/"+o.Change.ID+"/verify", "approver", nil, nil); status != 200 {
		t.Fatalf("verify %s: %d", path, status)
	}
}

// grantOn takes an access request for researcher on dataset through the
// two-step approval and returns the new grant's id.
func grantOn(t *testing.T, env *apitest.Env, researcher, dataset string) string {
	t.Helper()
	var req struct{ ID string }
	env.Do("POST", "/v1/access-requests", researcher, map[string]any{"datasets": []string{dataset}, "purpose": "study",
		"epsilon": 1, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, &req)
	env.Do("POST", "/v1/access-requests/"+req.ID+"/approve", "steward", nil, nil)
	var st struct {
		GrantID string `json:"grant_id"`
	}
	if status, _ := env.Do("POST", "/v1/access-requests/"+req.ID+"/verify", "approver", nil, &st); status != 200 || st.GrantID == "" {
		t.Fatalf("grant on %s: %d", dataset, status)
	}
	return st.GrantID
}
