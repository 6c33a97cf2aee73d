package audit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"
)

// postgresEnv names the variable holding a PostgreSQL DSN for the tests.
const postgresEnv = "GATEWAY_TEST_POSTGRES"

// store is an empty, migrated audit store for one test.
type store struct {
	d      Dialect
	driver string
	dsn    string
	db     *sql.DB
}

// open returns another handle on the same store, as a second gateway
// process would have.
func (s store) open(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open(s.driver, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// forEachStore runs fn against SQLite, and against PostgreSQL when
// GATEWAY_TEST_POSTGRES holds a DSN.
func forEachStore(t *testing.T, fn func(t *testing.T, s store)) {
	t.Helper()
	for _, d := range []Dialect{SQLite, Postgres} {
		t.Run(d.String(), func(t *testing.T) {
			fn(t, newStore(t, d))
		})
	}
}

func newStore(t testing.TB, d Dialect) store {
	t.Helper()
	var s store
	if d == SQLite {
		s = store{d: SQLite, driver: "sqlite", dsn: sqliteDSN(filepath.Join(t.TempDir(), "audit.db"))}
	} else {
		s = postgresStore(t)
	}
	s.db = s.open(t)
	if err := Migrate(context.Background(), s.db, s.d); err != nil {
		t.Fatal(err)
	}
	return s
}

func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_txlock=immediate"
}

// postgresStore makes a schema of its own for the test, dropped afterwards.
func postgresStore(t testing.TB) store {
	t.Helper()
	base := os.Getenv(postgresEnv)
	if base == "" {
		t.Skipf("set %s to a PostgreSQL DSN to run this test against PostgreSQL", postgresEnv)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "audit_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		admin.Close()
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop test schema: %v", err)
		}
		admin.Close()
	})
	dsn := base + " search_path=" + schema
	if strings.Contains(base, "://") {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	return store{d: Postgres, driver: "pgx", dsn: dsn}
}

// testClock is a clock the test sets; each reading advances it by step.
type testClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.step)
	return t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func newKey(t testing.TB) *sm2.PrivateKey {
	t.Helper()
	k, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newLog(t testing.TB, db *sql.DB, cfg Config) *Log {
	t.Helper()
	l, err := New(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// queryEntry is a typical entry: a researcher's query.
func queryEntry(i int) Entry {
	d, _ := json.Marshal(map[string]any{"sql": fmt.Sprintf("SELECT count(*) FROM patients WHERE age > %d", i), "epsilon": 0.1})
	return Entry{Actor: "researcher", Role: "researcher", Action: "query", Dataset: "demo", Grade: "general", Outcome: "ok", Detail: d}
}

// fill appends n entries made by mk and returns them as stored.
func fill(t testing.TB, l *Log, n int, mk func(i int) Entry) []Entry {
	t.Helper()
	out := make([]Entry, 0, n)
	for i := range n {
		e, err := l.Append(context.Background(), mk(i))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// dropTriggers removes the guards, as an attacker with access to the
// database files or superuser rights could.
func dropTriggers(t testing.TB, s store) {
	t.Helper()
	names := map[string][]string{
		"audit_entries": {"audit_entries_no_update", "audit_entries_retention", "audit_entries_no_truncate"},
		"audit_heads":   {"audit_heads_no_update", "audit_heads_no_delete", "audit_heads_no_change", "audit_heads_no_truncate"},
		"audit_prunes":  {"audit_prunes_no_update", "audit_prunes_no_delete", "audit_prunes_no_change", "audit_prunes_no_truncate"},
	}
	for table, triggers := range names {
		for _, tr := range triggers {
			q := `DROP TRIGGER IF EXISTS ` + tr
			if s.d == Postgres {
				q += ` ON ` + table
			}
			mustExec(t, s.db, q)
		}
	}
}

func countEntries(t testing.TB, db *sql.DB) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(`SELECT count(*) FROM audit_entries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustVerify(t testing.TB, l *Log) Report {
	t.Helper()
	rep, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("log does not verify: entry %d: %s", rep.FirstBad.Seq, rep.FirstBad.Reason)
	}
	return rep
}
