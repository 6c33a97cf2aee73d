package audit_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
)

type env struct {
	store *catalog.Store
	log   *audit.Log
	key   *sm2.PrivateKey
	d     audit.Dialect
}

func open(t *testing.T, path string, now func() time.Time) env {
	t.Helper()
	ctx := context.Background()
	s, err := catalog.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := audit.Migrate(ctx, s.DB(), audit.SQLite); err != nil {
		t.Fatal(err)
	}
	key, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.New(ctx, s.DB(), audit.Config{Dialect: audit.SQLite, Signer: key, SignEvery: 10, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return env{s, l, key, audit.SQLite}
}

func fill(t *testing.T, e env, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		d, _ := json.Marshal(map[string]any{"sql": fmt.Sprintf("SELECT count(*) FROM patients WHERE age > %d", i)})
		if _, err := e.log.Append(context.Background(), audit.Entry{Actor: "researcher", Action: "query", Dataset: "demo", Grade: "core", Outcome: "ok", Detail: d}); err != nil {
			t.Fatal(err)
		}
	}
}

func exec1(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

func TestChainVerifies(t *testing.T) {
	for _, algo := range []string{"sm3", "sha256"} {
		t.Run(algo, func(t *testing.T) {
			s, err := catalog.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			audit.Migrate(context.Background(), s.DB(), audit.SQLite)
			l, err := audit.New(context.Background(), s.DB(), audit.Config{Hash: algo})
			if err != nil {
				t.Fatal(err)
			}
			fill(t, env{log: l}, 25)
			rep, err := l.Verify(context.Background())
			if err != nil || !rep.OK() || rep.Entries != 25 {
				t.Fatalf("report %+v err %v", rep, err)
			}
		})
	}
}

// TestTamperingDetected plays an attacker with write access to the database
// file: the triggers are dropped first, as such an attacker would.
func TestTamperingDetected(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, db *sql.DB)
		wantSeq int64
		reason  string
	}{
		{"edit detail", func(t *testing.T, db *sql.DB) {
			exec1(t, db, `UPDATE audit_entries SET detail = '{"sql":"SELECT 1"}' WHERE seq = 7`)
		}, 7, "edited"},
		{"edit actor", func(t *testing.T, db *sql.DB) {
			exec1(t, db, `UPDATE audit_entries SET actor = 'someone_else' WHERE seq = 12`)
		}, 12, "edited"},
		{"delete a middle entry", func(t *testing.T, db *sql.DB) {
			exec1(t, db, `DELETE FROM audit_entries WHERE seq = 15`)
		}, 15, "missing"},
		{"swap two entries", func(t *testing.T, db *sql.DB) {
			exec1(t, db, `UPDATE audit_entries SET seq = -1 WHERE seq = 4`)
			exec1(t, db, `UPDATE audit_entries SET seq = 4 WHERE seq = 5`)
			exec1(t, db, `UPDATE audit_entries SET seq = 5 WHERE seq = -1`)
		}, 4, ""},
		{"rewrite the tail consistently", func(t *testing.T, db *sql.DB) {
			// Recomputing hashes needs the chain algorithm; deleting the tail
			// past the last signature instead leaves a signed head dangling.
			exec1(t, db, `DELETE FROM audit_entries WHERE seq > 18`)
		}, 20, "missing from the chain"},
		{"forge a signed head", func(t *testing.T, db *sql.DB) {
			// Flip one hex digit inside the signature's r value.
			exec1(t, db, `UPDATE audit_heads SET signature = substr(signature, 1, 19) ||
				CASE substr(signature, 20, 1) WHEN '0' THEN '1' ELSE '0' END || substr(signature, 21) WHERE seq = 10`)
		}, 10, "signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := open(t, filepath.Join(t.TempDir(), "m.db"), nil)
			fill(t, e, 30)
			db := e.store.DB()
			if _, err := db.Exec(`UPDATE audit_entries SET actor = 'x' WHERE seq = 1`); err == nil {
				t.Fatal("the append-only trigger let an UPDATE through")
			}
			exec1(t, db, `DROP TRIGGER audit_entries_no_update`)
			exec1(t, db, `DROP TRIGGER audit_entries_retention`)
			tc.tamper(t, db)
			rep, err := e.log.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				t.Fatal("tampering went unnoticed")
			}
			if rep.FirstBad.Seq != tc.wantSeq || !strings.Contains(rep.FirstBad.Reason, tc.reason) {
				t.Fatalf("first bad %+v, want seq %d (%s)", rep.FirstBad, tc.wantSeq, tc.reason)
			}
		})
	}
}

func TestConcurrentAppends(t *testing.T) {
	e := open(t, filepath.Join(t.TempDir(), "m.db"), nil)
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				if _, err := e.log.Append(context.Background(), audit.Entry{Actor: fmt.Sprint(g), Action: "query", Outcome: "ok"}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	rep, err := e.log.Verify(context.Background())
	if err != nil || !rep.OK() || rep.Entries != 200 {
		t.Fatalf("report %+v err %v", rep, err)
	}
}

func TestAppendTxRollsBack(t *testing.T) {
	e := open(t, filepath.Join(t.TempDir(), "m.db"), nil)
	fill(t, e, 3)
	ctx := context.Background()
	tx, err := e.store.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.log.AppendTx(ctx, tx, audit.Entry{Actor: "steward", Action: "grant.revoke", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	fill(t, e, 1)
	rep, _ := e.log.Verify(ctx)
	if !rep.OK() || rep.Entries != 4 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRetentionAndPrune(t *testing.T) {
	// The fake clock runs in the past so that the one-year entries have
	// expired by the database's real clock too (its trigger uses it).
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	e := open(t, filepath.Join(t.TempDir(), "m.db"), clock)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		e.log.Append(ctx, audit.Entry{Actor: "a", Action: "login", Outcome: "ok"}) // kept 1 year
	}
	now = time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)
	e.log.Append(ctx, audit.Entry{Actor: "a", Action: "query", Grade: "core", Outcome: "ok"}) // kept 3 years

	now = time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.log.Prune(ctx, now); !errors.Is(err, audit.ErrRetention) {
		t.Fatalf("prune within retention: %v", err)
	}
	// The database refuses too, whoever asks: entry 6 is kept until 2027.
	if _, err := e.store.DB().Exec(`DELETE FROM audit_entries WHERE seq = 6`); err == nil {
		t.Fatal("the retention trigger let a DELETE through")
	}
	now = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.log.Prune(ctx, now); !errors.Is(err, audit.ErrRetention) {
		t.Fatalf("prune over a core entry: %v", err)
	}
	if n, err := e.log.Prune(ctx, time.Date(2024, 1, 15, 0, 0, 0, 0, time.UTC)); err != nil || n != 5 {
		t.Fatalf("prune of expired entries: %d %v", n, err)
	}
	e.log.Append(ctx, audit.Entry{Actor: "a", Action: "login", Outcome: "ok"})
	rep, err := e.log.Verify(ctx)
	if err != nil || !rep.OK() || rep.FirstSeq != 6 || rep.Entries != 2 {
		t.Fatalf("after prune: %+v %v", rep, err)
	}
}

func TestRetentionFor(t *testing.T) {
	year := 365 * 24 * time.Hour
	cases := []struct {
		e    audit.Entry
		want time.Duration
	}{
		{audit.Entry{Action: "login"}, year},
		{audit.Entry{Action: "query", Grade: "general"}, year},
		{audit.Entry{Action: "query", Grade: "core"}, 3 * year},
		{audit.Entry{Action: "grant.revoke", Grade: "core"}, 3 * year},
		{audit.Entry{Action: "query", Grade: "important"}, 3 * year},
		{audit.Entry{Action: "login", Grade: "important"}, year},
	}
	for _, c := range cases {
		if got := audit.RetentionFor(c.e); got != c.want {
			t.Errorf("%+v: %v, want %v", c.e, got, c.want)
		}
	}
}

// TestCrashMidWrite kills a process that appends in a tight loop; the chain
// it leaves behind must verify.
func TestCrashMidWrite(t *testing.T) {
	if os.Getenv("AUDIT_CRASH_CHILD") != "" {
		return
	}
	path := filepath.Join(t.TempDir(), "m.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAppendForever$")
	cmd.Env = append(os.Environ(), "AUDIT_CRASH_CHILD="+path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	s, err := catalog.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rep, err := audit.VerifyDB(context.Background(), s.DB(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Entries == 0 {
		t.Fatalf("after a crash: %+v", rep)
	}
	t.Logf("%d entries survived the kill and verify", rep.Entries)
}

func TestHelperAppendForever(t *testing.T) {
	path := os.Getenv("AUDIT_CRASH_CHILD")
	if path == "" {
		t.Skip("helper process for TestCrashMidWrite")
	}
	e := open(t, path, nil)
	for {
		fill(t, e, 1)
	}
}

func TestSignedReports(t *testing.T) {
	e := open(t, filepath.Join(t.TempDir(), "m.db"), nil)
	fill(t, e, 12)
	ctx := context.Background()
	r, err := e.log.SignedReport(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil || len(r.Entries) != 12 {
		t.Fatalf("report: %v %d", err, len(r.Entries))
	}
	if err := audit.VerifyExport(r, &e.key.PublicKey); err != nil {
		t.Fatalf("genuine report: %v", err)
	}
	r.Entries[3].Actor = "someone_else"
	if err := audit.VerifyExport(r, &e.key.PublicKey); err == nil {
		t.Fatal("an altered report verified")
	}
	other, _ := sm2.GenerateKey(rand.Reader)
	r2, _ := e.log.SignedReport(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := audit.VerifyExport(r2, &other.PublicKey); err == nil {
		t.Fatal("a report verified against another key")
	}
	b, err := e.log.CSV(r2)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyCSV(b, &e.key.PublicKey); err != nil {
		t.Fatalf("genuine csv: %v", err)
	}
	tampered := []byte(strings.Replace(string(b), "researcher", "r3searcher", 1))
	if err := audit.VerifyCSV(tampered, &e.key.PublicKey); err == nil {
		t.Fatal("an altered csv verified")
	}
}
