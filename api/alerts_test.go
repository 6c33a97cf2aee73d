package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/api/apitest"
)

func TestAbnormalUseRaisesAlerts(t *testing.T) {
	var mu sync.Mutex
	delivered := map[string]int{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a alerts.Alert
		json.NewDecoder(r.Body).Decode(&a)
		mu.Lock()
		delivered[a.Kind]++
		mu.Unlock()
	}))
	defer hook.Close()
	env := apitest.New(t, apitest.Options{Patients: 1000, Epsilon: 2, Alerts: alerts.Config{
		Webhook: hook.URL, Policy: alerts.Policy{BurstQueries: 8, BurnShare: 0.5},
	}})
	ask := func(who, sql string, eps float64) int {
		status, err := env.Do("POST", "/v1/queries", who, map[string]any{"sql": sql, "epsilon": eps}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return status
	}
	// Probing: five refusals.
	for i := 0; i < 5; i++ {
		ask("researcher", fmt.Sprintf("SELECT name, count(*) FROM patients WHERE age = %d GROUP BY name", i), 0.01)
	}
	// Differencing: the same question with a narrower filter.
	if ask("researcher_internal", "SELECT count(*) FROM patients WHERE age >= 40", 0.1) != 200 ||
		ask("researcher_internal", "SELECT count(*) FROM patients WHERE age >= 41", 0.1) != 200 {
		t.Fatal("queries refused")
	}
	// Budget burn and a burst: more than half the budget, and more than 8
	// queries within a minute.
	for i := 0; i < 8; i++ {
		ask("researcher_internal", fmt.Sprintf("SELECT sex, count(*) FROM patients WHERE province = 'Guangdong' AND age < %d GROUP BY sex", 50+i), 0.15)
	}
	var list struct {
		Alerts []alerts.Alert `json:"alerts"`
	}
	if status, _ := env.Do("GET", "/v1/alerts", "auditor", nil, &list); status != 200 {
		t.Fatalf("list: %d", status)
	}
	kinds := map[string]alerts.Alert{}
	for _, a := range list.Alerts {
		kinds[a.Kind] = a
	}
	for _, k := range []string{"probing", "differencing", "budget_burn", "burst"} {
		if _, ok := kinds[k]; !ok {
			t.Errorf("no %s alert; got %v", k, list.Alerts)
		}
	}
	if kinds["probing"].Person != "researcher" || kinds["differencing"].Person != "researcher_internal" {
		t.Errorf("alerts name the wrong people: %+v", kinds)
	}
	env.Alerts.Close() // wait for webhook deliveries
	mu.Lock()
	if delivered["probing"] != 1 || delivered["differencing"] != 1 {
		t.Errorf("webhook got %v", delivered)
	}
	mu.Unlock()
	if status, _ := env.Do("GET", "/v1/alerts", "researcher", nil, nil); status != 403 {
		t.Errorf("a researcher listed alerts: %d", status)
	}
	id := kinds["probing"].ID
	if status, _ := env.Do("POST", "/v1/alerts/"+id+"/ack", "auditor", nil, nil); status != 200 {
		t.Fatalf("ack: %d", status)
	}
	var inc struct {
		IncidentID string `json:"incident_id"`
	}
	if status, _ := env.Do("POST", "/v1/alerts/"+kinds["differencing"].ID+"/incident", "auditor", map[string]string{"summary": "possible differencing attack on age"}, &inc); status != 201 || inc.IncidentID == "" {
		t.Fatalf("incident: %d %+v", status, inc)
	}
	env.Do("GET", "/v1/alerts?state=incident", "auditor", nil, &list)
	if len(list.Alerts) != 1 || list.Alerts[0].Incident != inc.IncidentID {
		t.Fatalf("incident alerts %+v", list.Alerts)
	}
}
