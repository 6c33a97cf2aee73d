package audit

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The environment that makes TestHelperProcess append until killed.
const (
	helperDSNEnv     = "AUDIT_TEST_HELPER_DSN"
	helperDialectEnv = "AUDIT_TEST_HELPER_DIALECT"
)

// TestHelperProcess is not a test: run by TestCrashSafety in a child
// process, it appends in a tight loop until it is killed.
func TestHelperProcess(t *testing.T) {
	dsn := os.Getenv(helperDSNEnv)
	if dsn == "" {
		return
	}
	d, _ := strconv.Atoi(os.Getenv(helperDialectEnv))
	driver := "sqlite"
	if Dialect(d) == Postgres {
		driver = "pgx"
	}
	ctx := context.Background()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(ctx, db, Config{Dialect: Dialect(d), Signer: newKey(t), SignEvery: 7})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := l.Append(ctx, queryEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// crashHelperName is the PostgreSQL application name of the helper's
// connections.
const crashHelperName = "audit_crash_helper"

// waitForBackends waits until no server process of the helper is left.
func waitForBackends(t *testing.T, db *sql.DB, deadline time.Time) {
	t.Helper()
	for {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, crashHelperName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d server processes of the killed helper are still there", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCrashSafety kills a process in the middle of appending and checks
// that the log it leaves verifies and can be appended to.
func TestCrashSafety(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		dsn := s.dsn
		if s.d == Postgres {
			// Named, so that the test can wait for its server process.
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + "application_name=" + crashHelperName
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperDSNEnv+"="+dsn, helperDialectEnv+"="+strconv.Itoa(int(s.d)))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Wait until the child is appending, then let it run ~300 ms.
		deadline := time.Now().Add(30 * time.Second)
		for countEntries(t, s.db) == 0 {
			select {
			case err := <-exited:
				t.Fatalf("helper exited before appending: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("helper wrote nothing in 30 s")
			}
		}
		time.Sleep(300 * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-exited; err == nil {
			t.Fatal("helper exited cleanly; it should have been killed")
		}
		if s.d == Postgres {
			// The killed client's server process may still be committing
			// its last append; the log is final once that process is gone.
			waitForBackends(t, s.db, deadline)
		}
		rep, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{Tail: LiveTail(Config{SignEvery: 7})})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() || rep.Entries == 0 {
			t.Fatalf("log after a crash: %+v", rep)
		}
		t.Logf("%d entries appended before the kill, %d signed heads", rep.Entries, rep.SignedHeadsChecked)
		l := newLog(t, s.db, Config{Dialect: s.d})
		e, err := l.Append(ctx, queryEntry(0))
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != rep.Entries+1 {
			t.Fatalf("first seq after the crash %d, want %d", e.Seq, rep.Entries+1)
		}
		mustVerify(t, l)
	})
}
