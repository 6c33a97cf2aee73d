package catalog

import (
	"context"
	"database/sql"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hospital/gateway/accountant"
)

// TestGrantCacheFollowsTheDatabase: what Grants returns from its cache is
// what the database holds, after charges (one at a time and concurrent,
// on known reads that are current and that are not), a new grant and a
// revocation.
func TestGrantCacheFollowsTheDatabase(t *testing.T) {
	ctx := context.Background()
	s := researcherStore(t)
	if s.grants == nil {
		t.Fatal("no grant cache with SQLite")
	}
	add := func(id string) {
		t.Helper()
		defer s.grants.forget() // as Verify does
		err := s.tx(ctx, func(tx *sql.Tx) error {
			return insertGrant(ctx, tx, Grant{ID: id, RequestID: "req", Researcher: "res", Datasets: []string{"ds"}, Purpose: "p",
				EpsilonTotal: 100, DeltaTotal: 1e-3, DefaultEpsilon: 0.1, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	same := func(when string) {
		t.Helper()
		cached, err := s.Grants(ctx, "res")
		if err != nil {
			t.Fatal(err)
		}
		read, err := s.readGrants(ctx, "res")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cached, read) {
			t.Fatalf("%s: cached grants\n%+v\nthe database's\n%+v", when, cached, read)
		}
	}
	reserve := func(known Grant) {
		t.Helper()
		c := accountant.Charge{Epsilon: 0.1, Delta: 1e-8, Rho: 0.005, DeltaPartition: 1e-8}
		_, err := s.ReserveFor(ctx, QueryRecord{ID: NewID("qry"), GrantID: known.ID, Researcher: "res", Datasets: []string{"ds"},
			Epsilon: c.Epsilon, Delta: c.Delta, Rho: c.Rho, DeltaPartition: c.DeltaPartition, Time: time.Now()}, known)
		if err != nil {
			t.Fatal(err)
		}
	}
	current := func() Grant {
		t.Helper()
		gs, err := s.Grants(ctx, "res")
		if err != nil || len(gs) == 0 {
			t.Fatal(gs, err)
		}
		return gs[0]
	}
	add("grt_a")
	same("a new grant")
	first := current()
	for i := range 5 {
		reserve(current())
		same("a charge on the cached grant")
		if i == 2 {
			reserve(first) // a known read that moved: read again
			same("a charge on an old read")
		}
	}
	if got := current(); got.Spent == first.Spent {
		t.Fatal("the charges are not in the cached grant")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				reserve(current())
			}
		}()
	}
	wg.Wait()
	same("concurrent charges")
	add("grt_b")
	same("a second grant")
	if _, err := s.Revoke(ctx, "grt_a", nil); err != nil {
		t.Fatal(err)
	}
	same("a revocation")
	if gs, _ := s.Grants(ctx, "res"); gs[0].RevokedAt == nil {
		t.Fatal("the revoked grant is live in the cache")
	}
	// What a caller does to the grants it was given stays its own.
	gs, _ := s.Grants(ctx, "res")
	gs[1].Datasets[0] = "other"
	gs[1].EpsilonTotal = 1e6
	same("a caller's changes")
}
