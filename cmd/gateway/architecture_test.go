package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestArchitecture checks the arrows of ARCHITECTURE.md: for each package,
// the gateway packages it may not import.
func TestArchitecture(t *testing.T) {
	const mod = "github.com/hospital/gateway/"
	// none lists the packages that may import no gateway package at all.
	none := map[string]bool{"fault": true, "metadb": true, "console": true}
	// api/status is the one table of HTTP statuses, which federation
	// shares; the rest of api is above everything but cmd.
	forbidden := map[string][]string{
		"policy":     {"catalog", "engine", "metadb", "sandbox", "privacy"},
		"sandbox":    {"catalog", "engine", "metadb", "privacy", "release", "api"},
		"engine":     {"catalog", "metadb", "sandbox", "privacy"},
		"catalog":    {"engine", "sandbox", "privacy", "release", "ingest", "api"},
		"privacy":    {"catalog", "metadb", "release", "api", "federation", "flight"},
		"audit":      {"catalog", "engine", "api", "release"},
		"alerts":     {"catalog", "engine", "api", "release"},
		"quota":      {"api", "release", "federation", "flight"},
		"ingest":     {"api", "release", "federation", "flight"},
		"release":    {"api", "federation", "flight", "console", "ingest"},
		"federation": {"api", "api/apitest", "console", "ingest", "flight"},
		"flight":     {"api", "api/apitest", "api/status", "console", "federation", "ingest", "engine", "sandbox", "privacy"},
		"fault":      nil, "metadb": nil, "console": nil,
	}
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, imp := range strings.Fields(string(out)) {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			if none[pkg] {
				t.Errorf("%s imports %s; it may import no gateway package", pkg, imp)
			}
			for _, b := range bad {
				if imp == mod+b {
					t.Errorf("%s imports %s, above it in ARCHITECTURE.md", pkg, imp)
				}
			}
		}
	}
}
