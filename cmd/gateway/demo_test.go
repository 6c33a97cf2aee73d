package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startDemo runs the demo command, with extra flags, until the test ends
// or stop is called.
func startDemo(t *testing.T, dir, addr string, extra ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		args := append([]string{"demo", "--dir", dir, "--addr", addr, "--patients", "2000"}, extra...)
		done <- run(ctx, args, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("demo exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("demo did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}
}

type creds struct {
	BaseURL string            `json:"base_url"`
	Tokens  map[string]string `json:"tokens"`
}

func post(t *testing.T, c creds, who, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", c.BaseURL+"/v1/queries", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.Tokens[who])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestDemoContract follows CONTRACT.md: the demo creates its data,
// credentials and grants, answers queries, and a second start on the same
// directory reuses everything with budgets still spent.
func TestDemoContract(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	stop := startDemo(t, dir, addr)
	b, err := os.ReadFile(filepath.Join(dir, "demo-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"admin", "steward", "approver", "auditor", "researcher", "researcher_internal", "researcher_overseas"} {
		if c.Tokens[who] == "" {
			t.Errorf("no token for %s", who)
		}
	}
	if c.BaseURL != "http://"+addr {
		t.Errorf("base_url %q", c.BaseURL)
	}
	status, out := post(t, c, "researcher_internal", `{"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "epsilon": 0.1}`)
	if status != 200 {
		t.Fatalf("query: %d %v", status, out)
	}
	if status, out := post(t, c, "researcher_overseas", `{"sql": "SELECT count(*) FROM patients WHERE age = 30"}`); status != 403 || out["error"].(map[string]any)["code"] != "forbidden" {
		t.Fatalf("overseas: %d %v", status, out)
	}
	stop()

	stop = startDemo(t, dir, addr)
	defer stop()
	status, out = post(t, c, "researcher_internal", `{"sql": "SELECT count(*) AS n FROM patients", "epsilon": 0.1}`)
	if status != 200 {
		t.Fatalf("after restart: %d %v", status, out)
	}
	spent := out["budget"].(map[string]any)["epsilon_spent"].(float64)
	if fmt.Sprintf("%.2f", spent) != "0.20" {
		t.Fatalf("budget after restart: spent %v, want 0.2", spent)
	}
}
