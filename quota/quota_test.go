package quota_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/metadb"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/quota"
)

func TestStatusAndAssessment(t *testing.T) {
	ctx := context.Background()
	meta, err := metadb.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	s, err := catalog.New(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lo, hi := 0.0, 1.0
	pol := policy.Policy{
		Tables:       []policy.Table{{Name: "t", Columns: []policy.Column{{Name: "id", Role: policy.Unit}, {Name: "v", Role: policy.Attribute, Min: &lo, Max: &hi}}}},
		Contribution: policy.Contribution{MaxGroups: 1, MaxRows: 1}, K: 5, SpecialK: 5, SpecialShare: 1,
	}
	for _, d := range []catalog.Dataset{{Name: "core_ds", Grade: policy.Core, Units: 1000, Policy: pol}, {Name: "gen_ds", Grade: policy.General, Units: 10, Policy: pol}} {
		if err := s.PutDataset(ctx, d, "steward"); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := quota.New(ctx, meta, s, nil, quota.Config{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := tr.Status(ctx, "core_ds")
	if err != nil || st.StaticTotal != 1000 || st.Threshold != quota.Threshold || st.State != "ok" {
		t.Fatalf("core status %+v %v", st, err)
	}
	if st, _ := tr.Status(ctx, "gen_ds"); st.State != "not_core" {
		t.Errorf("general data status %+v", st)
	}
	cases := []struct {
		name      string
		dataset   string
		threshold float64
		ref       string
		ok        bool
	}{
		{"not core", "gen_ds", 0.5, "RA-1", false},
		{"no reference", "core_ds", 0.5, "", false},
		{"not higher", "core_ds", 0.3, "RA-1", false},
		{"over one", "core_ds", 1.5, "RA-1", false},
		{"raised", "core_ds", 0.6, "RA-1", true},
		{"whole dataset", "core_ds", 1.0, "RA-2", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tr.RecordAssessment(ctx, tc.dataset, tc.threshold, tc.ref, "approver")
			if (err == nil) != tc.ok {
				t.Fatalf("RecordAssessment: %v", err)
			}
			if tc.ok && (st.Threshold != tc.threshold || st.State != "ok") {
				t.Fatalf("status %+v", st)
			}
		})
	}
	// Internal use is never measured.
	if p, err := tr.Check(ctx, catalog.Org{Kind: policy.Internal}, []catalog.Dataset{{Name: "core_ds", Grade: policy.Core}}); p != nil || err != nil {
		t.Errorf("internal use measured: %v %v", p, err)
	}
	if p, err := tr.Check(ctx, catalog.Org{Kind: policy.Domestic}, []catalog.Dataset{{Name: "gen_ds", Grade: policy.General}}); p != nil || err != nil {
		t.Errorf("general data measured: %v %v", p, err)
	}
}
