package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/hospital/gateway/audit"
)

func TestHelpAndUsage(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil || !strings.Contains(out.String(), "audit verify") {
		t.Fatalf("help: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, &out, nil); err == nil {
		t.Fatal("an unknown command was accepted")
	}
}

// TestAuditVerifyCommand checks the contract: exit 0 when intact, an error
// naming the first bad entry when not.
func TestAuditVerifyCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := newGateway(t, dir)
	for i := 0; i < 5; i++ {
		if _, err := g.audit.Append(ctx, audit.Entry{Actor: "steward", Action: "dataset.register", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "verify", "--dir", dir}, &out, log); err != nil || !strings.Contains(out.String(), "intact: 5 entries") {
		t.Fatalf("intact log: %v %q", err, out.String())
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP TRIGGER audit_entries_no_update", "UPDATE audit_entries SET outcome = 'forbidden' WHERE seq = 3"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	out.Reset()
	err = run(ctx, []string{"audit", "verify", "--dir", dir}, &out, log)
	if err == nil || !strings.Contains(out.String(), "entry 3") {
		t.Fatalf("tampered log: %v %q", err, out.String())
	}
}

func TestCheckExportCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := newGateway(t, dir)
	for i := 0; i < 3; i++ {
		g.audit.Append(ctx, audit.Entry{Actor: "auditor", Action: "read", Outcome: "ok"})
	}
	exp, err := g.audit.SignedReport(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	b, _ := json.Marshal(exp)
	path := filepath.Join(t.TempDir(), "export.json")
	os.WriteFile(path, b, 0o600)
	pub := filepath.Join(dir+"-keys", "audit.pub")
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "check-export", "--public-key", pub, path}, &out, log); err != nil || !strings.Contains(out.String(), "3 entries") {
		t.Fatalf("genuine export: %v %q", err, out.String())
	}
	os.WriteFile(path, bytes.Replace(b, []byte(`"auditor"`), []byte(`"intruder"`), 1), 0o600)
	if err := run(ctx, []string{"audit", "check-export", "--public-key", pub, path}, &out, log); err == nil {
		t.Fatal("an altered export verified")
	}
}

func TestPruneRefusedWithinRetention(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	g := newGateway(t, dir)
	g.audit.Append(ctx, audit.Entry{Actor: "a", Action: "read", Outcome: "ok"})
	g.Close()
	tomorrow := time.Now().AddDate(0, 0, 1).Format(time.DateOnly)
	if err := run(ctx, []string{"audit", "prune", "--dir", dir, "--before", tomorrow}, io.Discard, log); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("prune within retention: %v", err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"audit", "verify", "--dir", dir}, &out, log); err != nil {
		t.Fatalf("verify after refused prune: %v", err)
	}
}

// newGateway opens a gateway on dir with a quiet logger.
func newGateway(t *testing.T, dir string) *gateway {
	t.Helper()
	g, err := openGateway(context.Background(), options{Dir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return g
}
