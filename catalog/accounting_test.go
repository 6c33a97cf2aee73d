package catalog

import (
	"context"
	"database/sql"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hospital/gateway/accountant"
	"github.com/hospital/gateway/metadb"
)

// TestMigrateBudgetsToUnits opens a metadata store as it was before
// budgets were kept in integer units, with a grant that spent
// 0.1 + 0.2 in floats (0.30000000000000004) over two history lines, and
// checks that opening it migrates the sums exactly and charges the old
// spends conservatively in zCDP (rho = epsilon^2/2, all delta beside).
func TestMigrateBudgetsToUnits(t *testing.T) {
	ctx := context.Background()
	meta, err := metadb.Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	old := -1
	for i, m := range migrations {
		if strings.Contains(m, "epsilon_sum_u") {
			old = i
			break
		}
	}
	if old < 0 {
		t.Fatal("no units migration")
	}
	if err := meta.Migrate(ctx, "catalog", migrations[:old]); err != nil {
		t.Fatal(err)
	}
	db := meta.Writer()
	now := ts(time.Now())
	for _, stmt := range []string{
		`INSERT INTO orgs (id, name, kind) VALUES ('x', 'Institute', 'domestic')`,
		`INSERT INTO people (id, name, org_id, roles, active, created_at) VALUES ('res', 'R', 'x', '["researcher"]', TRUE, '` + now + `')`,
		`INSERT INTO grants (id, request_id, researcher, datasets, columns_json, purpose, epsilon_total, epsilon_spent, delta_total, delta_spent,
			default_epsilon, expires_at, created_at) VALUES ('grt_old', 'req', 'res', '["ds"]', 'null', 'p', 3, 0.30000000000000004, 1e-5, 2e-8, 0.1,
			'` + ts(time.Now().Add(time.Hour)) + `', '` + now + `')`,
		`INSERT INTO queries (id, grant_id, researcher, datasets, sql_text, epsilon, delta, outcome, cached, created_at)
			VALUES ('qry_a', 'grt_old', 'res', '["ds"]', 'SELECT 1', 0.1, 1e-8, 'ok', FALSE, '` + now + `')`,
		`INSERT INTO queries (id, grant_id, researcher, datasets, sql_text, epsilon, delta, outcome, cached, created_at)
			VALUES ('qry_b', 'grt_old', 'res', '["ds"]', 'SELECT 2', 0.2, 1e-8, 'ok', FALSE, '` + now + `')`,
	} {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	s, err := New(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Grant(ctx, "grt_old")
	if err != nil {
		t.Fatal(err)
	}
	if g.EpsilonSpent != 0.3 || g.EpsilonSum != 0.3 || g.DeltaSpent != 2e-8 || g.DeltaSum != 2e-8 || g.Accounting != "zcdp" {
		t.Errorf("migrated grant %+v", g)
	}
	if want := 0.3 * 0.3 / 2; g.RhoSpent < want || g.RhoSpent > want+2e-12 {
		t.Errorf("rho %v, want %v", g.RhoSpent, want)
	}
	if b := BalanceOf(g); b.EpsilonRemaining != 2.7 || b.EpsilonSpent != 0.3 {
		t.Errorf("balance %+v", b)
	}
	h, err := s.History(ctx, "grt_old")
	if err != nil || len(h) != 2 {
		t.Fatal(h, err)
	}
	if h[0].Epsilon+h[1].Epsilon != 0.30000000000000004 || h[0].Units.EpsilonSum+h[1].Units.EpsilonSum != g.Spent.EpsilonSum {
		t.Errorf("history %+v", h)
	}
	if h[1].Rho < 0.02 || h[1].Rho > 0.02+2e-12 || h[1].DeltaPartition != 1e-8 {
		t.Errorf("line %+v", h[1])
	}
	// The migrated grant keeps spending exactly.
	for i := 0; i < 26; i++ {
		if _, err := s.ReserveFor(ctx, QueryRecord{ID: NewID("qry"), GrantID: g.ID, Researcher: "res", Datasets: []string{"ds"},
			Epsilon: 0.1, Delta: 1e-8, Rho: 0.005, DeltaPartition: 1e-8, Time: time.Now()}, g); err != nil {
			t.Fatal(i, err)
		}
	}
	g, _ = s.Grant(ctx, g.ID)
	if g.EpsilonSum != 2.9 {
		t.Errorf("epsilon sum %v, want 2.9", g.EpsilonSum)
	}
}

// TestReserveByTheAccountant: with Laplace charges of 0.1 (rho 0.005),
// the first queries are charged their plain sum, exactly; past thirty the
// grant of epsilon 3 keeps paying, by zCDP; every reservation's history
// line carries its rho, and the lines add up to the grant's sums.
func TestReserveByTheAccountant(t *testing.T) {
	ctx := context.Background()
	s := researcherStore(t)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		return insertGrant(ctx, tx, Grant{ID: "grt", RequestID: "req", Researcher: "res", Datasets: []string{"ds"}, Purpose: "p",
			EpsilonTotal: 3, DeltaTotal: 1e-5, DefaultEpsilon: 0.1, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	c := accountant.Charge{Epsilon: 0.1, Delta: 1e-8, Rho: 0.005, DeltaPartition: 1e-8}
	// Every reservation is given the grant as it stood before the first:
	// each is then charged against a fresh read of it.
	known, err := s.Grant(ctx, "grt")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var last Balance
	for ; n < 1000; n++ {
		b, err := s.ReserveFor(ctx, QueryRecord{ID: NewID("qry"), GrantID: "grt", Researcher: "res", Datasets: []string{"ds"},
			Epsilon: c.Epsilon, Delta: c.Delta, Rho: c.Rho, DeltaPartition: c.DeltaPartition, Time: time.Now()}, known)
		if err != nil {
			if !strings.Contains(err.Error(), "epsilon") {
				t.Fatal(err)
			}
			break
		}
		if n == 2 && (b.EpsilonSpent != 0.3 || b.EpsilonRemaining != 2.7 || b.EpsilonSpentBy != "sum") {
			t.Errorf("after 3: %+v", b)
		}
		last = b
	}
	t.Logf("%d Laplace queries of epsilon 0.1 within 3; %+v", n, last)
	if n <= 30 || last.EpsilonSpentBy != "zcdp" || last.EpsilonSpent > 3 || last.Accounting != "zcdp" {
		t.Errorf("%d queries, last %+v", n, last)
	}
	g, _ := s.Grant(ctx, "grt")
	h, _ := s.History(ctx, "grt")
	var sum accountant.Spent
	for _, l := range h {
		sum = sum.Plus(l.Units)
	}
	if len(h) != n || sum != g.Spent || math.Abs(g.EpsilonSum-0.1*float64(n)) > 1e-9 || g.RhoSpent != 0.005*float64(n) {
		t.Errorf("%d lines adding up to %+v; grant %+v", len(h), sum, g)
	}
}

// researcherStore is a fresh SQLite catalog, closed when t ends, with one
// organisation x and its researcher res.
func researcherStore(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.PutOrg(ctx, Org{ID: "x", Name: "Institute", Kind: Domestic}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreatePerson(ctx, Person{ID: "res", Org: Org{ID: "x"}, Roles: []PersonRole{Researcher}, Active: true}); err != nil {
		t.Fatal(err)
	}
	return s
}
