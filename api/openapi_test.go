package api_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/hospital/gateway/api"
	"github.com/hospital/gateway/api/apitest"
)

// TestOpenAPICoversRoutes keeps the served OpenAPI document in step with the
// routes: every route is documented, and nothing documented is missing.
func TestOpenAPICoversRoutes(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if status, err := env.Do("GET", "/v1/openapi.json", "", nil, &doc); err != nil || status != 200 {
		t.Fatalf("openapi: %d %v", status, err)
	}
	param := regexp.MustCompile(`[:*](\w+)`) // :id and a *path wildcard
	routes := map[string]bool{}
	for _, r := range api.New(api.Config{Store: env.Store}).Routes() {
		method, path, _ := strings.Cut(r, " ")
		path = param.ReplaceAllString(path, "{$1}")
		routes[strings.ToLower(method)+" "+path] = true
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s %s is not in the OpenAPI document", method, path)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if !routes[method+" "+path] {
				t.Errorf("documented %s %s has no route", method, path)
			}
		}
	}
	b, _ := json.Marshal(doc)
	if len(b) < 1000 {
		t.Errorf("document suspiciously small")
	}
}
