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
	"sync"
	"testing"
	"time"
)

// TestBackupRestore backs a gateway up during a burst of queries, restores
// it into a new directory, and checks that the restored audit log
// verifies, that the restored history adds up to the restored budget, and
// that an answer released before the backup comes back identical.
func TestBackupRestore(t *testing.T) {
	root := t.TempDir()
	dir, keys := filepath.Join(root, "data"), filepath.Join(root, "keys")
	addr := freeAddr(t)
	stop := startDemo(t, dir, addr, "--keys", keys)
	b, err := os.ReadFile(filepath.Join(dir, "demo-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	first := `{"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "epsilon": 0.1}`
	status, before := post(t, c, "researcher_internal", first)
	if status != 200 {
		t.Fatalf("%d %v", status, before)
	}
	var wg sync.WaitGroup
	burst := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-burst:
					return
				default:
				}
				post(t, c, "researcher_internal", fmt.Sprintf(`{"sql": "SELECT count(*) AS n FROM patients WHERE age > %d", "epsilon": 0.001}`, (w*1000+i)%100))
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	out := filepath.Join(root, "backup")
	var log bytes.Buffer
	if err := run(context.Background(), []string{"backup", "--dir", dir, "--keys", keys, out}, &log, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	close(burst)
	wg.Wait()
	stop()
	if _, err := os.Stat(filepath.Join(out, "audit.key")); err == nil {
		t.Error("the backup holds a key")
	}

	restored := filepath.Join(root, "restored")
	if err := run(context.Background(), []string{"restore", "--dir", restored, "--keys", keys, out}, &log, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	// A tampered backup is refused whole.
	tampered := filepath.Join(root, "tampered")
	if err := os.CopyFS(tampered, os.DirFS(out)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tampered, "metadata.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"restore", "--dir", filepath.Join(root, "t2"), "--keys", keys, tampered}, &log, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("a tampered backup was restored")
	}
	// The snapshot's audit log verifies (a running gateway's unsigned tail
	// is allowed, as for the live one).
	var vout bytes.Buffer
	if err := run(context.Background(), []string{"audit", "verify", "--dir", restored, "--keys", keys, "--max-unsigned", "1h"}, &vout, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("restored audit log: %v\n%s", err, vout.String())
	}
	// The demo's credentials file is the demo's own, not the gateway's
	// state: a backup leaves it out with the keys, and the test hands it on.
	if err := os.WriteFile(filepath.Join(restored, "demo-credentials.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	stop = startDemo(t, restored, addr, "--keys", keys)
	defer stop()
	status, again := post(t, c, "researcher_internal", first)
	if status != 200 || again["cached"] != true || again["query_id"] != before["query_id"] || fmt.Sprint(again["rows"]) != fmt.Sprint(before["rows"]) {
		t.Fatalf("the stored answer after restore: %d %v, before %v", status, again, before)
	}
	req, _ := http.NewRequest("GET", c.BaseURL+"/v1/budgets", nil)
	req.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bud struct {
		Budgets []struct {
			GrantID string  `json:"grant_id"`
			Spent   float64 `json:"epsilon_sum"` // the plain sum, which the history adds up to
		} `json:"budgets"`
	}
	json.NewDecoder(resp.Body).Decode(&bud)
	if len(bud.Budgets) != 1 {
		t.Fatalf("budgets %+v", bud)
	}
	hreq, _ := http.NewRequest("GET", c.BaseURL+"/v1/grants/"+bud.Budgets[0].GrantID+"/history", nil)
	hreq.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer hresp.Body.Close()
	var hist map[string]any
	json.NewDecoder(hresp.Body).Decode(&hist)
	sum := 0.0
	lines, _ := hist["queries"].([]any)
	for _, l := range lines {
		sum += l.(map[string]any)["epsilon"].(float64)
	}
	if len(lines) < 2 || fmt.Sprintf("%.6f", sum) != fmt.Sprintf("%.6f", bud.Budgets[0].Spent) || hist["epsilon_sum"] != bud.Budgets[0].Spent {
		t.Errorf("restored history (%d lines) adds up to %g, the restored budget says %g", len(lines), sum, bud.Budgets[0].Spent)
	}
}
