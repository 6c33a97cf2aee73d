package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/audit"
)

// TestKeysOutsideDataDir checks that the gateway's keys are written beside
// the data directory, never inside it, and that keys left inside it from an
// older layout stop the gateway until they are moved.
func TestKeysOutsideDataDir(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := filepath.Join(t.TempDir(), "data")
	g := newGateway(t, dir)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{dataKeyFile, auditKeyFile, auditPubFile} {
		if _, err := os.Stat(filepath.Join(dir+"-keys", f)); err != nil {
			t.Errorf("key file %s not beside the data directory: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keys")); err == nil {
		t.Error("the data directory has a keys directory")
	}
	// A second start reuses the keys: the data and the log still open.
	newGateway(t, dir).Close()
	if err := run(ctx, []string{"audit", "verify", "--dir", dir}, io.Discard, quiet); err != nil {
		t.Fatalf("verify after a second start: %v", err)
	}

	if _, err := openGateway(ctx, options{Dir: dir, Keys: filepath.Join(dir, "secrets")}, quiet); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Fatalf("a key directory inside the data directory: %v", err)
	}
	old := filepath.Join(dir, "keys")
	os.MkdirAll(old, 0o700)
	os.WriteFile(filepath.Join(old, dataKeyFile), []byte("x"), 0o600)
	if _, err := openGateway(ctx, options{Dir: dir}, quiet); err == nil || !strings.Contains(err.Error(), "move them out") {
		t.Fatalf("keys left in the data directory: %v", err)
	}
}

// TestAuditCheckpointCommand takes a checkpoint as an auditor would, then
// truncates the log and lets the gateway re-sign it with its own key, as
// someone holding both the database and the key directory can: verify
// alone passes, verify --since the checkpoint fails.
func TestAuditCheckpointCommand(t *testing.T) {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	g := newGateway(t, dir)
	for range 12 {
		if _, err := g.audit.Append(ctx, audit.Entry{Actor: "steward", Action: "dataset.register", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	g.Close()
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "checkpoint", "--dir", dir}, &out, quiet); err != nil {
		t.Fatal(err)
	}
	// The auditor keeps the checkpoint and a copy of the public key.
	kept := t.TempDir()
	cpPath, pubPath := filepath.Join(kept, "checkpoint.json"), filepath.Join(kept, "audit.pub")
	os.WriteFile(cpPath, out.Bytes(), 0o600)
	pub, _ := os.ReadFile(filepath.Join(dir+"-keys", auditPubFile))
	os.WriteFile(pubPath, pub, 0o600)
	var cp audit.Checkpoint
	if err := json.Unmarshal(out.Bytes(), &cp); err != nil || cp.Size != 12 {
		t.Fatalf("checkpoint %q: %v", out.String(), err)
	}

	g = newGateway(t, dir)
	g.audit.Append(ctx, audit.Entry{Actor: "auditor", Action: "read", Outcome: "ok"})
	g.Close()
	verify := []string{"audit", "verify", "--dir", dir, "--public-key", pubPath, "--since", cpPath}
	out.Reset()
	if err := run(ctx, verify, &out, quiet); err != nil || !strings.Contains(out.String(), "extends the checkpoint of 12 entries") {
		t.Fatalf("grown log against the checkpoint: %v %q", err, out.String())
	}

	db, err := sql.Open("sqlite", filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER audit_entries_retention", "DROP TRIGGER audit_heads_no_delete",
		"DELETE FROM audit_entries WHERE seq > 9", "DELETE FROM audit_heads WHERE seq > 9"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	newGateway(t, dir).Close() // signs the truncated head with the gateway's key
	out.Reset()
	if err := run(ctx, verify[:6], &out, quiet); err != nil {
		t.Fatalf("truncated and re-signed log without the checkpoint: %v %q", err, out.String())
	}
	out.Reset()
	err = run(ctx, verify, &out, quiet)
	if err == nil || !strings.Contains(out.String(), "entry 10") || !strings.Contains(out.String(), "short of the checkpoint") {
		t.Fatalf("truncated log against the checkpoint: %v %q", err, out.String())
	}
}

// TestAuditVerifyNeedsPublicKey checks that verify says where to give the
// public key when the key directory is not at hand.
func TestAuditVerifyNeedsPublicKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := filepath.Join(t.TempDir(), "elsewhere")
	g, err := openGateway(ctx, options{Dir: dir, Keys: keys}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	err = run(ctx, []string{"audit", "verify", "--dir", dir}, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--public-key") {
		t.Fatalf("verify without a public key: %v", err)
	}
	if err := run(ctx, []string{"audit", "verify", "--dir", dir, "--keys", keys}, io.Discard, nil); err != nil {
		t.Fatalf("verify with the key directory: %v", err)
	}
}

// TestCheckpointWebhook checks that the gateway posts signed checkpoints to
// the alert webhook, in a form verify --since takes as it is.
func TestCheckpointWebhook(t *testing.T) {
	ctx := context.Background()
	var (
		mu     sync.Mutex
		bodies [][]byte
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	g, err := openGateway(ctx, options{Dir: dir, Alerts: alerts.Config{Webhook: srv.URL}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.audit.Append(ctx, audit.Entry{Actor: "steward", Action: "dataset.register", Outcome: "ok"})
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) == 0 {
		t.Fatal("no checkpoint reached the webhook")
	}
	last := bodies[len(bodies)-1]
	var msg struct {
		Kind       string           `json:"kind"`
		Checkpoint audit.Checkpoint `json:"checkpoint"`
	}
	if err := json.Unmarshal(last, &msg); err != nil || msg.Kind != "audit.checkpoint" || msg.Checkpoint.Size != 3 {
		t.Fatalf("webhook got %s: %v", last, err)
	}
	path := filepath.Join(t.TempDir(), "posted.json")
	os.WriteFile(path, last, 0o600)
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "verify", "--dir", dir, "--since", path}, &out, nil); err != nil {
		t.Fatalf("verify --since the posted checkpoint: %v %q", err, out.String())
	}
}
