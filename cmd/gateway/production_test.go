package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProduction runs the README's Production section: from nothing to a
// served, registered dataset and a first researcher's answer, using only
// gateway init, gateway serve, gateway dataset register --url and API
// calls. It runs on SQLite, and on PostgreSQL as well when
// GATEWAY_TEST_POSTGRES holds a postgres:// URL (in a fresh schema).
func TestProduction(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { production(t, "") })
	dsn := os.Getenv("GATEWAY_TEST_POSTGRES")
	if dsn == "" {
		t.Log("GATEWAY_TEST_POSTGRES is not set: PostgreSQL skipped")
		return
	}
	t.Run("postgres", func(t *testing.T) { production(t, freshSchema(t, dsn)) })
}

func production(t *testing.T, metadata string) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	etc := t.TempDir()
	addr := freeAddr(t)
	base := "http://" + addr
	cfg := filepath.Join(etc, "gateway.yaml")
	conf := "addr: " + addr + "\ndir: data\nkeys: keys\nquery_timeout: 10s\n"
	if metadata != "" {
		conf += "metadata: " + metadata + "\n"
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	// 1. init: store, keys, the first admin and approver.
	var out bytes.Buffer
	if err := run(ctx, []string{"init", "--config", cfg, "--json"}, &out, log); err != nil {
		t.Fatal(err)
	}
	var founders struct {
		Admin, Approver struct{ Secret string }
	}
	if err := json.Unmarshal(out.Bytes(), &founders); err != nil {
		t.Fatalf("init printed %q: %v", out.String(), err)
	}

	// 2. serve.
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(sctx, []string{"serve", "--config", cfg}, io.Discard, log) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitUp(t, base)

	call := func(method, path, token string, body, into any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if into != nil {
			if err := json.Unmarshal(b, into); err != nil {
				t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
			}
		}
		if resp.StatusCode >= 300 && resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode
	}
	enrol := func(secret, code string) string {
		t.Helper()
		var e struct{ Token string }
		call("POST", "/v1/enrol", "", map[string]string{"secret": secret, "confirmation_code": code}, &e)
		return e.Token
	}
	// 3. The founders enrol.
	admin := enrol(founders.Admin.Secret, "")
	approver := enrol(founders.Approver.Secret, "")

	// 4. The admin adds a steward and a researcher; the approver confirms
	// each; each enrols with the admin's secret and the approver's code.
	addPerson := func(id string, role string) string {
		t.Helper()
		var o struct {
			Change    struct{ ID string }
			Enrolment struct{ Secret string }
		}
		if status := call("POST", "/v1/people", admin, map[string]any{"id": id, "name": id, "org_id": "hospital", "roles": []string{role}}, &o); status != http.StatusAccepted {
			t.Fatalf("adding %s: %d, want 202 (waiting for confirmation)", id, status)
		}
		var c struct {
			Code string `json:"confirmation_code"`
		}
		call("POST", "/v1/person-changes/"+o.Change.ID+"/confirm", approver, nil, &c)
		return enrol(o.Enrolment.Secret, c.Code)
	}
	steward := addPerson("steward-1", "steward")
	researcher := addPerson("researcher-1", "researcher")

	// 5. The steward registers a dataset into the running gateway.
	out.Reset()
	if err := run(ctx, []string{"dataset", "register", "--url", base, "--token", steward, "testdata/clinic.yaml"}, &out, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "registered clinic_visits") {
		t.Fatalf("register printed %q", out.String())
	}

	// 6. The researcher asks for access; the steward approves and the
	// approver verifies.
	var req struct{ ID string }
	call("POST", "/v1/access-requests", researcher, map[string]any{"datasets": []string{"clinic_visits"}, "purpose": "service planning",
		"epsilon": 1.0, "expires_at": time.Now().AddDate(0, 6, 0).UTC().Format(time.RFC3339)}, &req)
	call("POST", "/v1/access-requests/"+req.ID+"/approve", steward, nil, nil)
	var granted struct {
		GrantID string `json:"grant_id"`
	}
	call("POST", "/v1/access-requests/"+req.ID+"/verify", approver, nil, &granted)
	if granted.GrantID == "" {
		t.Fatal("verification gave no grant")
	}

	// 7. The first answer.
	var a struct {
		Rows   [][]any `json:"rows"`
		Budget struct {
			Spent float64 `json:"epsilon_spent"`
		} `json:"budget"`
	}
	call("POST", "/v1/queries", researcher, map[string]any{"sql": "SELECT clinic, count(*) AS n FROM visits GROUP BY clinic", "epsilon": 0.9}, &a)
	if len(a.Rows) != 3 || a.Budget.Spent != 0.9 {
		t.Fatalf("answer %+v", a)
	}
	var ds struct {
		Datasets []struct {
			Name         string
			RegisteredAt time.Time `json:"registered_at"`
			Policy       struct {
				Tables []struct{ Columns []struct{ Name, Type string } }
			}
		}
	}
	call("GET", "/v1/datasets", researcher, nil, &ds)
	if len(ds.Datasets) != 1 || ds.Datasets[0].RegisteredAt.IsZero() || ds.Datasets[0].Policy.Tables[0].Columns[0].Type == "" {
		t.Fatalf("datasets %+v", ds)
	}
}

func waitUp(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freshSchema creates an empty schema in the PostgreSQL database at dsn and
// returns a URL that uses it.
func freshSchema(t *testing.T, dsn string) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	schema := "gw_test_" + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if db, err := sql.Open("pgx", dsn); err == nil {
			db.Exec("DROP SCHEMA " + schema + " CASCADE")
			db.Close()
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%ssearch_path=%s", dsn, sep, schema)
}
