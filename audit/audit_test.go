package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		prepare func(t *testing.T, s store)
		wantErr string
	}{
		{name: "again is a no-op", prepare: func(t *testing.T, s store) {}},
		{name: "restores dropped triggers", prepare: func(t *testing.T, s store) {
			dropTriggers(t, s)
		}},
		{name: "newer schema refused", prepare: func(t *testing.T, s store) {
			mustExec(t, s.db, `INSERT INTO audit_schema (version, applied_us) VALUES (99, 0)`)
		}, wantErr: "newer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store) {
				fill(t, newLog(t, s.db, Config{Dialect: s.d}), 3, queryEntry)
				tt.prepare(t, s)
				err := Migrate(ctx, s.db, s.d)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("Migrate: %v, want error containing %q", err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var versions int
				if err := s.db.QueryRow(`SELECT count(*) FROM audit_schema WHERE version = $1`, schemaVersion).Scan(&versions); err != nil || versions != 1 {
					t.Fatalf("schema version rows: %d, %v", versions, err)
				}
				if _, err := s.db.Exec(`UPDATE audit_entries SET actor = 'x'`); err == nil {
					t.Fatal("UPDATE allowed after Migrate")
				}
			})
		})
	}
	t.Run("legacy table refused", func(t *testing.T) {
		s := store{d: SQLite, driver: "sqlite", dsn: sqliteDSN(filepath.Join(t.TempDir(), "legacy.db"))}
		s.db = s.open(t)
		mustExec(t, s.db, `CREATE TABLE audit_entries (seq BIGINT PRIMARY KEY, hash TEXT)`)
		if err := Migrate(ctx, s.db, SQLite); err == nil || !strings.Contains(err.Error(), "predates") {
			t.Fatalf("Migrate over a legacy table: %v", err)
		}
	})
	t.Run("New before Migrate", func(t *testing.T) {
		s := store{d: SQLite, driver: "sqlite", dsn: sqliteDSN(filepath.Join(t.TempDir(), "empty.db"))}
		if _, err := New(ctx, s.open(t), Config{}); err == nil || !strings.Contains(err.Error(), "Migrate") {
			t.Fatalf("New on an empty database: %v", err)
		}
	})
}

func TestAppend(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		start := time.Date(2026, 3, 1, 8, 0, 0, 123456789, time.FixedZone("CST", 8*3600))
		clock := &testClock{now: start, step: time.Second}
		l := newLog(t, s.db, Config{Dialect: s.d, Now: clock.Now})
		first, err := l.Append(ctx, Entry{Actor: "alice", Action: "login", Outcome: "ok",
			Detail: json.RawMessage(` { "z": 1, "a": "x < y & z", "n": 1.50 } `)})
		if err != nil {
			t.Fatal(err)
		}
		second, err := l.Append(ctx, Entry{Actor: "bob", Action: "query", Grade: "core", Outcome: "forbidden"})
		if err != nil {
			t.Fatal(err)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"first seq", first.Seq, int64(1)},
			{"second seq", second.Seq, int64(2)},
			{"time is UTC, microseconds", first.Time, start.UTC().Truncate(time.Microsecond)},
			{"general retention", first.RetainUntil, first.Time.Add(366 * 24 * time.Hour)},
			{"core retention", second.RetainUntil, second.Time.Add(1096 * 24 * time.Hour)},
			{"canonical detail", string(first.Detail), `{"a":"x < y & z","n":1.50,"z":1}`},
			{"empty detail", string(second.Detail), `{}`},
			{"algorithm", first.Algorithm, HashSM3},
			{"first prev hash is zero", first.PrevHash.String(), strings.Repeat("00", 32)},
			{"chained", second.PrevHash.String(), first.Hash.String()},
		}
		for _, c := range checks {
			if !equal(c.got, c.want) {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		stored, err := l.List(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) != 2 || !equal(stored[0], first) || !equal(stored[1], second) {
			t.Fatalf("stored entries differ from returned ones:\n%+v\n%+v", stored, []Entry{first, second})
		}
	})
}

func equal(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestAppendRejects(t *testing.T) {
	s := newStore(t, SQLite)
	l := newLog(t, s.db, Config{})
	tests := []struct {
		name string
		e    Entry
		want string
	}{
		{"no action", Entry{Actor: "a", Outcome: "ok"}, "no action"},
		{"no outcome", Entry{Actor: "a", Action: "login"}, "no outcome"},
		{"unknown grade", Entry{Action: "query", Outcome: "ok", Grade: "secret"}, "unknown grade"},
		{"detail not an object", Entry{Action: "query", Outcome: "ok", Detail: json.RawMessage(`[1,2]`)}, "JSON object"},
		{"detail not JSON", Entry{Action: "query", Outcome: "ok", Detail: json.RawMessage(`{"sql":`)}, "not JSON"},
		{"detail with trailing data", Entry{Action: "query", Outcome: "ok", Detail: json.RawMessage(`{} {}`)}, "after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := l.Append(context.Background(), tt.e); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Append: %v, want error containing %q", err, tt.want)
			}
		})
	}
	if n := countEntries(t, s.db); n != 0 {
		t.Fatalf("%d entries written by rejected appends", n)
	}
}

func TestRetentionFor(t *testing.T) {
	const year = 366 * 24 * time.Hour
	tests := []struct {
		name  string
		e     Entry
		years int
	}{
		{"core query", Entry{Grade: "core", Action: "query"}, 3},
		{"core governance", Entry{Grade: "core", Action: "grant.approve"}, 3},
		{"core login", Entry{Grade: "core", Action: "login"}, 3},
		{"important query provides data", Entry{Grade: "important", Action: "query"}, 3},
		{"important export", Entry{Grade: "important", Action: "dataset.export"}, 3},
		{"important cached query", Entry{Grade: "important", Action: "query.cached"}, 3},
		{"important governance", Entry{Grade: "important", Action: "grant.approve"}, 1},
		{"important registration", Entry{Grade: "important", Action: "dataset.register"}, 1},
		{"general query", Entry{Grade: "general", Action: "query"}, 1},
		{"ungraded token use", Entry{Action: "token.issue"}, 1},
		{"ungraded refusal", Entry{Action: "query", Outcome: "forbidden"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RetentionFor(tt.e)
			// A calendar year has at most 366 days; three have at most 1096.
			minimum := map[int]time.Duration{1: year, 3: 1096 * 24 * time.Hour}[tt.years]
			if got < minimum {
				t.Fatalf("RetentionFor = %v, want at least %d years (%v)", got, tt.years, minimum)
			}
			if tt.years == 1 && got >= 2*year {
				t.Fatalf("RetentionFor = %v, want about one year", got)
			}
		})
	}
}

func TestAppendTx(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		mustExec(t, s.db, `CREATE TABLE grants (id TEXT PRIMARY KEY, state TEXT NOT NULL)`)
		l := newLog(t, s.db, Config{Dialect: s.d, Signer: newKey(t), SignEvery: 2})
		approve := func(id string, commit bool) (Entry, error) {
			tx, err := s.db.BeginTx(ctx, nil)
			if err != nil {
				return Entry{}, err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, state) VALUES ($1, 'approved')`, id); err != nil {
				return Entry{}, err
			}
			e, err := l.AppendTx(ctx, tx, Entry{Actor: "approver", Action: "grant.approve", Outcome: "ok",
				Detail: json.RawMessage(`{"grant":"` + id + `"}`)})
			if err != nil || !commit {
				return e, err
			}
			return e, tx.Commit()
		}
		tests := []struct {
			name    string
			id      string
			commit  bool
			wantSeq int64
		}{
			{"rolled back leaves nothing", "g1", false, 1},
			{"committed with its change", "g2", true, 1},
			{"rolled back after a commit", "g3", false, 2},
			{"next commit reuses the seq", "g4", true, 2},
			{"rolled back at a signing point", "g5", false, 3},
		}
		for _, tt := range tests {
			e, err := approve(tt.id, tt.commit)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			if e.Seq != tt.wantSeq {
				t.Errorf("%s: seq %d, want %d", tt.name, e.Seq, tt.wantSeq)
			}
		}
		var grants int
		if err := s.db.QueryRow(`SELECT count(*) FROM grants`).Scan(&grants); err != nil {
			t.Fatal(err)
		}
		if n := countEntries(t, s.db); n != 2 || grants != 2 {
			t.Fatalf("%d entries and %d grants, want 2 and 2", n, grants)
		}
		rep := mustVerify(t, l)
		if rep.Entries != 2 || rep.SignedHeadsChecked != 1 {
			t.Fatalf("report %+v, want 2 entries and 1 signed head", rep)
		}
	})
}

// TestConcurrentAppends appends from 20 goroutines through two handles on
// the database, as two gateway processes would.
func TestConcurrentAppends(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		key := newKey(t)
		logs := []*Log{
			newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 10}),
			newLog(t, s.open(t), Config{Dialect: s.d, Signer: key, SignEvery: 10}),
		}
		const goroutines, each = 20, 25
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seqs []int64
		)
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					e, err := logs[g%2].Append(ctx, queryEntry(g*1000+i))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					seqs = append(seqs, e.Seq)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		slices.Sort(seqs)
		for i, seq := range seqs {
			if seq != int64(i+1) {
				t.Fatalf("appends returned seq %d at position %d: not gap-free and unique", seq, i)
			}
		}
		rep := mustVerify(t, logs[0])
		if rep.Entries != goroutines*each || rep.SignedHeadsChecked != goroutines*each/10 {
			t.Fatalf("report %+v, want %d entries and %d signed heads", rep, goroutines*each, goroutines*each/10)
		}
	})
}

func TestList(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		clock := &testClock{now: start, step: time.Hour}
		l := newLog(t, s.db, Config{Dialect: s.d, Now: clock.Now})
		fill(t, l, 10, func(i int) Entry {
			e := queryEntry(i)
			e.Actor = []string{"alice", "bob"}[i%2]
			e.Dataset = []string{"demo", "demo,cancer", "cancer", "democratic"}[i%4]
			if i%3 == 0 {
				e.Outcome = "forbidden"
			}
			if i == 9 {
				e.Action = "grant.approve"
			}
			return e
		})
		tests := []struct {
			name string
			f    Filter
			want []int64
		}{
			{"all", Filter{}, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
			{"actor", Filter{Actor: "bob"}, []int64{2, 4, 6, 8, 10}},
			{"dataset alone or among several", Filter{Dataset: "demo"}, []int64{1, 2, 5, 6, 9, 10}},
			{"dataset second in a list", Filter{Dataset: "cancer"}, []int64{2, 3, 6, 7, 10}},
			{"action", Filter{Action: "grant.approve"}, []int64{10}},
			{"outcome", Filter{Outcome: "forbidden"}, []int64{1, 4, 7, 10}},
			{"time range", Filter{From: start.Add(2 * time.Hour), To: start.Add(5 * time.Hour)}, []int64{3, 4, 5}},
			{"paged", Filter{AfterSeq: 4, Limit: 3}, []int64{5, 6, 7}},
			{"combined", Filter{Actor: "alice", Outcome: "forbidden"}, []int64{1, 7}},
			{"no match", Filter{Actor: "mallory"}, []int64{}},
		}
		for _, tt := range tests {
			es, err := l.List(ctx, tt.f)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			got := []int64{}
			for _, e := range es {
				got = append(got, e.Seq)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
			}
		}
	})
}

func TestSigners(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name    string
		signer  crypto.Signer
		wantErr bool
	}{
		{name: "sm2", signer: newKey(t)},
		{name: "ecdsa p-256", signer: ecKey},
		{name: "ed25519", signer: edKey},
		{name: "rsa refused", signer: rsaKey, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t, SQLite)
			l, err := New(ctx, s.db, Config{Signer: tt.signer, SignEvery: 2})
			if tt.wantErr {
				if err == nil {
					t.Fatal("New accepted an unsupported key")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fill(t, l, 5, queryEntry)
			if _, err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			if rep := mustVerify(t, l); rep.SignedHeadsChecked != 3 || rep.LastSignedSeq != 5 {
				t.Fatalf("report %+v, want heads at 2, 4 and 5", rep)
			}
			for _, pub := range []crypto.PublicKey{tt.signer.Public(), nil} {
				rep, err := VerifyDB(ctx, s.db, SQLite, VerifyOptions{PublicKey: pub})
				if err != nil || !rep.OK() || rep.SignedHeadsChecked != 3 {
					t.Fatalf("VerifyDB with public key %T: %+v, %v", pub, rep, err)
				}
			}
		})
	}
	t.Run("checkpoint needs a signer", func(t *testing.T) {
		s := newStore(t, SQLite)
		l := newLog(t, s.db, Config{})
		if _, err := l.Checkpoint(context.Background()); !errors.Is(err, ErrNoSigner) {
			t.Fatalf("Checkpoint without a signer: %v", err)
		}
		if err := l.Close(context.Background()); err != nil {
			t.Fatalf("Close without a signer: %v", err)
		}
	})
}
