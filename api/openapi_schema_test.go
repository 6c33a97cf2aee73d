package api_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/hospital/gateway/api/apitest"
)

// TestOpenAPIResponsesMatch sends real calls and checks each answer
// against the schema the served document gives for that operation and
// status, so that the document cannot drift from what the handlers send.
// It also checks that every example in the document fits its schema.
func TestOpenAPIResponsesMatch(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 300})
	var raw json.RawMessage
	if status, err := env.Do("GET", "/v1/openapi.json", "", nil, &raw); err != nil || status != 200 {
		t.Fatalf("openapi: %d %v", status, err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	opts := []openapi3.SchemaValidationOption{openapi3.EnableJSONSchema2020(), openapi3.MultiErrors()}

	calls := []struct {
		method, path, route, person string
		body                        any
		status                      int
	}{
		{"POST", "/v1/queries", "/v1/queries", "researcher", map[string]any{"sql": "SELECT count(*) AS n FROM patients WHERE age = 40", "epsilon": 0.1}, 200},
		{"POST", "/v1/queries", "/v1/queries", "researcher", map[string]any{"sql": "SELECT sex, count(*) AS n FROM patients WHERE age = 41 GROUP BY sex", "epsilon": 0.1}, 200},
		{"POST", "/v1/queries", "/v1/queries", "researcher", map[string]any{"sql": "SELECT count(*) AS n FROM patients WHERE age = 42", "epsilon": 0.1, "dry_run": true}, 200},
		{"GET", "/v1/budgets", "/v1/budgets", "researcher", nil, 200},
		{"GET", "/v1/budgets", "/v1/budgets", "auditor", nil, 200},
		{"GET", "/v1/datasets", "/v1/datasets", "researcher", nil, 200},
		{"GET", "/v1/datasets", "/v1/datasets", "steward", nil, 200},
		{"GET", "/v1/quota?dataset=demo_hospital", "/v1/quota", "auditor", nil, 200},
		{"POST", "/v1/access-requests", "/v1/access-requests", "researcher", map[string]any{
			"datasets": []string{"demo_hospital"}, "purpose": "diabetes cost study", "epsilon": 1.0,
			"expires_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)}, 201},
		{"GET", "/v1/access-requests", "/v1/access-requests", "steward", nil, 200},
		{"GET", "/v1/audit?limit=20", "/v1/audit", "auditor", nil, 200},
		{"GET", "/healthz", "/healthz", "", nil, 200},
		{"GET", "/v1/audit/verify", "/v1/audit/verify", "auditor", nil, 200},
		{"GET", "/v1/people", "/v1/people", "admin", nil, 200},
		{"GET", "/v1/people/researcher/tokens", "/v1/people/{id}/tokens", "admin", nil, 200},
		{"GET", "/v1/person-changes", "/v1/person-changes", "approver", nil, 200},
		{"GET", "/v1/protection-changes", "/v1/protection-changes", "approver", nil, 200},
		{"GET", "/v1/catalog/report", "/v1/catalog/report", "steward", nil, 200},
		{"GET", "/v1/alerts", "/v1/alerts", "auditor", nil, 200},
	}
	for _, c := range calls {
		var got any
		status, err := env.Do(c.method, c.path, c.person, c.body, &got)
		if err != nil || status != c.status {
			t.Errorf("%s %s as %s: %d %v, want %d: %v", c.method, c.path, c.person, status, err, c.status, got)
			continue
		}
		item := doc.Paths.Find(c.route)
		if item == nil {
			t.Errorf("%s is not documented", c.route)
			continue
		}
		op := item.GetOperation(c.method)
		if op == nil {
			t.Errorf("%s %s is not documented", c.method, c.route)
			continue
		}
		resp := op.Responses.Status(status)
		if resp == nil || resp.Value == nil {
			t.Errorf("%s %s: status %d is not documented", c.method, c.route, status)
			continue
		}
		mt := resp.Value.Content.Get("application/json")
		if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
			t.Errorf("%s %s %d has no JSON schema", c.method, c.route, status)
			continue
		}
		if mt.Schema.Ref == "" && len(mt.Schema.Value.Properties) == 0 && mt.Schema.Value.OneOf == nil && mt.Schema.Value.AllOf == nil {
			t.Errorf("%s %s %d is documented as a bare object", c.method, c.route, status)
		}
		if err := mt.Schema.Value.VisitJSON(got, opts...); err != nil {
			b, _ := json.Marshal(got)
			t.Errorf("%s %s as %s: the answer does not match the documented schema: %v\n%s", c.method, c.path, c.person, err, b)
		}
	}

	// Every 2xx JSON answer is typed, and every example fits its schema.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for code, r := range op.Responses.Map() {
				if len(code) != 3 || code[0] != '2' || r.Value == nil {
					continue
				}
				mt := r.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil {
					continue
				}
				if s := mt.Schema.Value; mt.Schema.Ref == "" && len(s.Properties) == 0 && s.OneOf == nil && s.AllOf == nil && s.Items == nil {
					t.Errorf("%s %s %s is documented as a bare object", method, path, code)
				}
			}
		}
	}
	for name, s := range doc.Components.Schemas {
		if s.Value == nil || s.Value.Example == nil {
			continue
		}
		if err := s.Value.VisitJSON(s.Value.Example, opts...); err != nil {
			t.Errorf("the example of %s does not fit its schema: %v", name, err)
		}
	}

	// Every JSON request body is typed too; apitest.Env.Do checks each body
	// the gateway accepts against it.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			mt := op.RequestBody.Value.Content.Get("application/json")
			if mt == nil {
				continue
			}
			if mt.Schema == nil || mt.Schema.Ref == "" && len(mt.Schema.Value.Properties) == 0 {
				t.Errorf("the request body of %s %s is documented as a bare object", method, path)
			}
		}
	}
	// That check has teeth: a request schema that misses a field the
	// handler takes, or types one wrongly, refuses a body the gateway
	// accepts.
	body := []byte(`{"sql": "SELECT count(*) FROM patients", "epsilon": 0.1, "exact": false, "contribution_bound": 3}`)
	request := doc.Components.Schemas["QueryRequest"].Value
	if err := apitest.CheckSchema(request, body); err != nil {
		t.Errorf("a query request does not fit QueryRequest: %v", err)
	}
	noExact := *request
	noExact.Properties = maps.Clone(request.Properties)
	delete(noExact.Properties, "exact")
	if err := apitest.CheckSchema(&noExact, body); err == nil {
		t.Errorf("a request schema without exact passed a body with it")
	}
	stringEpsilon := *request
	stringEpsilon.Properties = maps.Clone(request.Properties)
	stringEpsilon.Properties["epsilon"] = openapi3.NewSchemaRef("", openapi3.NewStringSchema())
	if err := apitest.CheckSchema(&stringEpsilon, body); err == nil {
		t.Errorf("a request schema with a string epsilon passed a number")
	}

	// The check has teeth: a budget line with a wrong type is refused.
	bad := map[string]any{"budgets": []any{map[string]any{"grant_id": "g", "researcher": "r", "dataset": "d", "datasets": []any{"d"},
		"epsilon_total": "three", "epsilon_spent": 0.0, "epsilon_remaining": 3.0, "delta_total": 0.0, "delta_spent": 0.0,
		"expires_at": "2027-01-01T00:00:00Z", "live": true}}}
	budgets := doc.Paths.Find("/v1/budgets").Get.Responses.Status(http.StatusOK).Value.Content.Get("application/json").Schema.Value
	if err := budgets.VisitJSON(bad, opts...); err == nil {
		t.Errorf("a budget line with a string epsilon_total passed the schema")
	}
	delete(bad["budgets"].([]any)[0].(map[string]any), "epsilon_total")
	if err := budgets.VisitJSON(bad, opts...); err == nil {
		t.Errorf("a budget line without epsilon_total passed the schema")
	}
}
