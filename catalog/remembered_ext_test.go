package catalog_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/demo"
)

// TestRememberedDatasetFollowsChanges: a dataset read once and
// remembered is read anew after a reload and after a protection change,
// and what a caller does to the policy it was given stays its own.
func TestRememberedDatasetFollowsChanges(t *testing.T) {
	ctx := context.Background()
	s, err := catalog.Open(ctx, filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := demo.Description(1000, 100)
	if err := s.PutDataset(ctx, d, "steward"); err != nil {
		t.Fatal(err)
	}
	read := func() catalog.Dataset {
		t.Helper()
		got, err := s.DatasetFor(ctx, "res", d.Name)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := read()
	first.Policy.K = 1 // a caller's change
	if got := read(); got.Policy.K != d.Policy.K || got.Units != 100 {
		t.Fatalf("k %d, units %d; want %d and 100", got.Policy.K, got.Units, d.Policy.K)
	}
	d.Units = 200
	if _, err := s.Reload(ctx, d, "steward"); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.Units != 200 {
		t.Fatalf("units %d after a reload, want 200", got.Units)
	}
	o, err := s.ProposeProtection(ctx, d.Name, "steward", "stricter", func(p catalog.Protection) (catalog.Protection, error) {
		p.Policy.K++
		return p, nil
	}, nil)
	if err != nil || o.Change != nil {
		t.Fatalf("a stricter k: %+v %v", o.Change, err)
	}
	if got := read(); got.Policy.K != d.Policy.K+1 {
		t.Fatalf("k %d after the change, want %d", got.Policy.K, d.Policy.K+1)
	}
}
