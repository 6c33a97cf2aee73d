package api_test

import (
	"context"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// TestStoreThatCannotWrite: while the metadata store refuses writes,
// /healthz fails and a change answers 503 unavailable with a message an
// operator can act on; once it writes again, both recover. The store's one
// writing connection is switched to read-only, as a full or read-only
// volume would leave it.
func TestStoreThatCannotWrite(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	readOnly := func(on string) {
		t.Helper()
		if _, err := env.Meta.Writer().ExecContext(context.Background(), "PRAGMA query_only = "+on); err != nil {
			t.Fatal(err)
		}
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if status, err := env.Do("GET", "/healthz", "", nil, nil); err != nil || status != 200 {
		t.Fatalf("healthz of a healthy store: %d %v", status, err)
	}
	readOnly("ON")
	if status, _ := env.Do("GET", "/healthz", "", nil, &e); status != 503 || e.Error.Code != "unavailable" || e.Error.Message == "" {
		t.Fatalf("healthz of a read-only store: %d %+v", status, e)
	}
	body := map[string]any{"datasets": []string{"demo_hospital"}, "purpose": "study", "epsilon": 1.0, "expires_at": "2030-01-01T00:00:00Z"}
	e.Error.Code = ""
	if status, _ := env.Do("POST", "/v1/access-requests", "researcher", body, &e); status != 503 || e.Error.Code != "unavailable" {
		t.Fatalf("a change on a read-only store: %d %+v", status, e)
	}
	t.Logf("message: %s", e.Error.Message)
	readOnly("OFF")
	if status, _ := env.Do("GET", "/healthz", "", nil, nil); status != 200 {
		t.Fatalf("healthz after recovery: %d", status)
	}
}
