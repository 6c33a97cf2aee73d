package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/policy"
)

func withSteward(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	g, err := openGateway(ctx, options{Dir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.store.PutOrg(ctx, catalog.Org{ID: "h", Name: "Hospital", Kind: policy.Internal}); err != nil {
		t.Fatal(err)
	}
	if err := g.store.CreatePerson(ctx, catalog.Person{ID: "steward", Org: catalog.Org{ID: "h"}, Roles: []catalog.PersonRole{catalog.Steward}, Active: true}); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterDataset(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	withSteward(t, dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out bytes.Buffer
	if err := run(ctx, []string{"dataset", "register", "--as", "steward", "--dir", dir, "testdata/clinic.yaml"}, &out, log); err != nil {
		t.Fatalf("register: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "registered clinic_visits (important)") || !strings.Contains(out.String(), "400 patients") {
		t.Fatalf("output %q", out.String())
	}
	// The file at rest is encrypted: no plaintext name appears in it.
	b, err := os.ReadFile(filepath.Join(dir, "datasets", "clinic_visits", "visits.gwat"))
	if err != nil || bytes.Contains(b, []byte("Person 1")) {
		t.Fatalf("table file: %v, plaintext found: %v", err, bytes.Contains(b, []byte("Person 1")))
	}
	out.Reset()
	if err := run(ctx, []string{"catalog", "report", "--dir", dir}, &out, log); err != nil || !strings.Contains(out.String(), "clinic_visits") || strings.Contains(out.String(), "Person") {
		t.Fatalf("report: %v %q", err, out.String())
	}

	// Reloading a much smaller file flags the dataset for re-grading.
	small := filepath.Join(t.TempDir(), "visits.csv")
	lines := strings.SplitN(readFile(t, "testdata/visits.csv"), "\n", 101)
	os.WriteFile(small, []byte(strings.Join(lines[:100], "\n")+"\n"), 0o600)
	man := strings.Replace(readFile(t, "testdata/clinic.yaml"), "visits: visits.csv", "visits: "+small, 1)
	manPath := filepath.Join(t.TempDir(), "clinic.yaml")
	os.WriteFile(manPath, []byte(man), 0o600)
	out.Reset()
	if err := run(ctx, []string{"dataset", "register", "--as", "steward", "--dir", dir, manPath}, &out, log); err != nil || !strings.Contains(out.String(), "flagged for re-grading") {
		t.Fatalf("reload: %v %q", err, out.String())
	}
}

func TestManifestErrors(t *testing.T) {
	dir := t.TempDir()
	withSteward(t, dir)
	base := readFile(t, "testdata/clinic.yaml")
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown column", "{name: fee, role: attribute, min: 0, max: 1000}", "{name: fee, role: attribute, min: 0, max: 1000}\n        - {name: weight, role: attribute}", "does not have"},
		{"undeclared column", "        - {name: fee, role: attribute, min: 0, max: 1000}\n", "", "not in the policy"},
		{"bounds reversed", "min: 0, max: 110", "min: 110, max: 0", "bounds reversed"},
		{"half a domain", "min: 0, max: 110", "min: 0, max: 110, domain_min: 0", "only one end of its domain"},
		{"domain inside the clamp", "min: 0, max: 110", "min: 0, max: 110, domain_min: 0, domain_max: 100", "does not hold its clamping bounds"},
		{"no privacy unit", "{name: patient_id, role: unit}", "{name: patient_id, role: identifier}", "privacy unit"},
		{"bad grade", "grade: important", "grade: secret", "grade"},
		{"unknown field", "grade: important", "grade: important\ncolour: blue", "colour"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := strings.Replace(base, tc.from, tc.to, 1)
			m = strings.Replace(m, "visits: visits.csv", "visits: "+filepath.Join(mustAbs(t, "testdata"), "visits.csv"), 1)
			path := filepath.Join(t.TempDir(), "m.yaml")
			os.WriteFile(path, []byte(m), 0o600)
			err := run(context.Background(), []string{"dataset", "register", "--as", "steward", "--dir", dir, path}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"dataset", "suggest", "visits=testdata/visits.csv"}, &out, nil); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "name: patient_id\n") || !strings.Contains(s, "role: unit") || !strings.Contains(s, "role: identifier") {
		t.Fatalf("suggestion:\n%s", s)
	}
	// testdata/visits.csv: age 0 to 110, fee 10 to 500 at the extremes;
	// the bounds are the percentiles rounded outward, never those values.
	for _, want := range []string{"min: 0\n          max: 100\n", "max: 500\n", "public:\n            - East", "CONFIRM"} {
		if !strings.Contains(s, want) {
			t.Errorf("suggestion lacks %q:\n%s", want, s)
		}
	}

	// Written with --out, paths are relative to the manifest, and the
	// unedited manifest is refused for its placeholders.
	dir := t.TempDir()
	withSteward(t, dir)
	man := filepath.Join(t.TempDir(), "visits.yaml")
	if err := run(context.Background(), []string{"dataset", "suggest", "--out", man, "visits=testdata/visits.csv"}, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, man); strings.Contains(b, "visits: /") || !strings.Contains(b, "visits: ../") {
		t.Errorf("--out wrote an absolute path:\n%s", b)
	}
	err := run(context.Background(), []string{"dataset", "register", "--as", "steward", "--dir", dir, man}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "placeholder") {
		t.Fatalf("an unedited suggestion: %v", err)
	}
	edited := strings.NewReplacer("name: NAME", "name: visits", "TO BE FILLED IN", "clinic office").Replace(readFile(t, man))
	edited = strings.Replace(edited, "k: 10", "k: 2", 1)
	os.WriteFile(man, []byte(edited), 0o600)
	err = run(context.Background(), []string{"dataset", "register", "--as", "steward", "--dir", dir, man}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "minimum of 10 that grade core allows") {
		t.Fatalf("k below the grade's minimum: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
