package main

import (
	"bytes"
	"context"
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

	"github.com/hospital/gateway/catalog"
)

// runUntil runs the command until the returned stop is called, once url
// answers.
func runUntil(t *testing.T, url string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("%v exited: %v", args, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not start", args)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

type fedAnswer struct {
	Rows       [][]any `json:"rows"`
	Federation struct {
		Aggregation string `json:"aggregation"`
		Nodes       []struct {
			Node   string          `json:"node"`
			Budget catalog.Balance `json:"budget"`
		} `json:"nodes"`
	} `json:"federation"`
	Error struct{ Code, Message string } `json:"error"`
}

func askCoordinator(t *testing.T, base, token, body string) (int, fedAnswer) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/queries", bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a fedAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, a
}

// TestFederationCommands runs gateway federation demo, asks the coordinator
// in both aggregations, then serves the same hospitals with gateway node
// and gateway coordinator from YAML files: budgets spent under the demo
// stay spent.
func TestFederationCommands(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	stop := runUntil(t, "http://"+addr+"/healthz", "federation", "demo", "--dir", dir, "--addr", addr, "--patients", "600")
	var creds coordinatorCredentials
	b, err := os.ReadFile(filepath.Join(dir, "federation-credentials.json"))
	if err != nil || json.Unmarshal(b, &creds) != nil {
		t.Fatalf("credentials: %v", err)
	}
	tok := creds.Tokens["researcher"]
	for _, agg := range []string{"homomorphic", "plaintext"} {
		status, a := askCoordinator(t, "http://"+addr, tok, fmt.Sprintf(`{"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "epsilon": 0.5, "aggregation": %q}`, agg))
		if status != 200 || len(a.Rows) != 2 || a.Federation.Aggregation != agg || len(a.Federation.Nodes) != 3 {
			t.Fatalf("%s: %d %+v", agg, status, a)
		}
	}
	stop()

	// The same hospitals under gateway node and gateway coordinator.
	certs := filepath.Join(dir, "certs")
	members := "[hospital-1, hospital-2, hospital-3]"
	var nodes []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("hospital-%d", i)
		rest, fed := freeAddr(t), freeAddr(t)
		cfg := filepath.Join(dir, name+".yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("addr: %s\ndir: %s\nfederation:\n  name: %s\n  listen: %s\n  certs: %s\n  members: %s\n  coordinator: coordinator\n",
			rest, filepath.Join(dir, name), name, fed, certs, members)), 0o600)
		defer runUntil(t, "http://"+rest+"/healthz", "node", "--config", cfg)()
		nodes = append(nodes, fmt.Sprintf("  - {name: %s, url: \"https://%s\"}", name, fed))
	}
	coord := freeAddr(t)
	cfg := filepath.Join(dir, "coordinator.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("addr: %s\ncerts: %s\ntimeout: 1m\nnodes:\n%s\nresearchers:\n  - {id: researcher, token_sm3: %s}\n",
		coord, certs, strings.Join(nodes, "\n"), catalog.HashToken(tok))), 0o600)
	defer runUntil(t, "http://"+coord+"/healthz", "coordinator", "--config", cfg)()
	status, a := askCoordinator(t, "http://"+coord, tok, `{"sql": "SELECT department, count(*) AS n FROM encounters GROUP BY department", "epsilon": 0.5}`)
	if status != 200 || len(a.Rows) == 0 {
		t.Fatalf("coordinator from config: %d %+v", status, a.Error)
	}
	for _, n := range a.Federation.Nodes {
		if n.Budget.EpsilonSum < 1.5-1e-9 || n.Budget.EpsilonSpent > n.Budget.EpsilonSum {
			t.Errorf("%s: spent %g (sum %g) after three queries of 0.5", n.Node, n.Budget.EpsilonSpent, n.Budget.EpsilonSum)
		}
	}
	if status, a := askCoordinator(t, "http://"+coord, "not-a-token", `{"sql": "SELECT 1"}`); status != 401 {
		t.Errorf("bad token: %d %+v", status, a.Error)
	}
}
