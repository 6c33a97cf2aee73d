package api_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/catalog"
)

// TestAnswersReadAgain has a researcher read back what they were released,
// receipt and all, from their history; nobody else reads it, and the
// read is audited.
func TestAnswersReadAgain(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	type answer struct {
		QueryID string              `json:"query_id"`
		GrantID string              `json:"grant_id"`
		Rows    [][]any             `json:"rows"`
		Receipt map[string]any      `json:"receipt"`
		Privacy map[string]any      `json:"privacy"`
		History catalog.QueryRecord `json:"history"`
		Budget  *catalog.Balance    `json:"budget"`
		Cached  bool                `json:"cached"`
	}
	q := map[string]any{"sql": "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", "epsilon": 0.2}
	var first, repeat answer
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", q, &first); status != 200 || err != nil {
		t.Fatalf("query: %d %v", status, err)
	}
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", q, &repeat); status != 200 || err != nil || !repeat.Cached {
		t.Fatalf("repeat: %d %v cached %v", status, err, repeat.Cached)
	}
	var hist struct {
		Queries []catalog.QueryRecord `json:"queries"`
	}
	if status, err := env.Do("GET", "/v1/grants/"+first.GrantID+"/history", "researcher_internal", nil, &hist); status != 200 || err != nil || len(hist.Queries) != 2 {
		t.Fatalf("history: %d %v %+v", status, err, hist)
	}
	lines := hist.Queries
	if lines[0].ID != first.QueryID || lines[0].AnswerID != first.QueryID || lines[1].ID == first.QueryID || lines[1].AnswerID != first.QueryID {
		t.Fatalf("history lines %+v do not name the answer %s they received", lines, first.QueryID)
	}

	for _, line := range lines {
		var got answer
		if status, err := env.Do("GET", "/v1/queries/"+line.ID, "researcher_internal", nil, &got); status != 200 || err != nil {
			t.Fatalf("read %s: %d %v", line.ID, status, err)
		}
		if got.QueryID != first.QueryID || !reflect.DeepEqual(got.Rows, first.Rows) || !reflect.DeepEqual(got.Receipt, first.Receipt) ||
			!reflect.DeepEqual(got.Privacy, first.Privacy) {
			t.Errorf("read %s: %+v, released %+v", line.ID, got, first)
		}
		if got.History.ID != line.ID || got.History.SQL != line.SQL || got.History.Cached != line.Cached || got.Budget != nil {
			t.Errorf("read %s: history %+v, budget %v", line.ID, got.History, got.Budget)
		}
		// The answer read back is still the gateway's, by its receipt.
		var raw map[string]any
		env.Do("GET", "/v1/queries/"+line.ID, "researcher_internal", nil, &raw)
		var v struct {
			Valid bool `json:"valid"`
		}
		if status, err := env.Do("POST", "/v1/receipts/verify", "auditor", raw, &v); status != 200 || err != nil || !v.Valid {
			t.Errorf("receipt of the answer read back: %d %v %+v", status, err, v)
		}
	}

	refusals := []struct {
		name, who, id string
		status        int
		code, message string
	}{
		{"another researcher", "researcher", first.QueryID, 404, "not_found", "no query"},
		{"an auditor", "auditor", first.QueryID, 403, "forbidden", "researcher"},
		{"a steward", "steward", first.QueryID, 403, "forbidden", "researcher"},
		{"no such query", "researcher_internal", "qry_none", 404, "not_found", "no query"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			var e errorBody
			if status, _ := env.Do("GET", "/v1/queries/"+tc.id, tc.who, nil, &e); status != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.message) {
				t.Errorf("%d %+v, want %d %s", status, e, tc.status, tc.code)
			}
		})
	}

	t.Run("a line that released nothing", func(t *testing.T) {
		failed := catalog.QueryRecord{ID: catalog.NewID("qry"), GrantID: first.GrantID, Researcher: "researcher_internal", Datasets: []string{"demo_hospital"},
			SQL: "SELECT 1", Epsilon: 0.1, Outcome: "resource_limit", Time: time.Now().UTC()}
		if err := env.Store.RecordQuery(context.Background(), failed, nil); err != nil {
			t.Fatal(err)
		}
		var e errorBody
		if status, _ := env.Do("GET", "/v1/queries/"+failed.ID, "researcher_internal", nil, &e); status != 404 || !strings.Contains(e.Error.Message, "released no answer") {
			t.Errorf("%d %+v", status, e)
		}
	})

	t.Run("the read is audited", func(t *testing.T) {
		var log struct {
			Entries []struct {
				Actor   string          `json:"actor"`
				Action  string          `json:"action"`
				Outcome string          `json:"outcome"`
				Detail  json.RawMessage `json:"detail"`
			} `json:"entries"`
		}
		env.Do("GET", "/v1/audit?limit=1000", "auditor", nil, &log)
		var read, refused bool
		for _, e := range log.Entries {
			d := string(e.Detail)
			read = read || (e.Actor == "researcher_internal" && e.Action == "read" && strings.Contains(d, "/v1/queries/"+first.QueryID))
			refused = refused || (e.Actor == "researcher" && e.Action == "query.read" && e.Outcome == "not_found" && strings.Contains(d, first.QueryID))
		}
		if !read || !refused {
			t.Errorf("audit log: read by its researcher %v, refusal of another %v", read, refused)
		}
	})
}
