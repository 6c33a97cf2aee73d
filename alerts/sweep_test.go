package alerts

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hospital/gateway/metadb"
)

// TestSweepForgetsOnlyWhatNoDetectorReads: the state of people and
// grants that went quiet is forgotten once past every window, and what
// is still within a window survives a sweep and still finds.
func TestSweepForgetsOnlyWhatNoDetectorReads(t *testing.T) {
	ctx := context.Background()
	db, err := metadb.Open(ctx, filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	a, err := New(ctx, db, Config{Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Policy: Policy{BurnShare: 0.01}})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(person, key string) {
		a.Observe(ctx, Event{Time: now, Person: person, Dataset: "d", Outcome: "ok", Shape: "s", Key: key,
			GrantID: "grt_" + person, Epsilon: 1, GrantTotal: 10})
	}
	differencing := func() int {
		t.Helper()
		as, err := a.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, x := range as {
			if x.Kind == "differencing" {
				n++
			}
		}
		return n
	}
	ask("quiet", "k1")
	ask("active", "k1")
	// Past the burn window and the cooldown, within the differencing
	// window: a sweep runs, and the active person's other constants still
	// find.
	now = now.Add(2 * time.Hour)
	ask("active", "k2")
	if got := differencing(); got != 1 {
		t.Fatalf("%d differencing alerts across a sweep within the window, want 1", got)
	}
	if _, ok := a.spent["grt_quiet"]; ok {
		t.Error("a grant quiet for longer than the burn window is still remembered")
	}
	if _, ok := a.shapes["quiet"]; !ok {
		t.Error("a shape within the differencing window was forgotten")
	}
	// Past every window, only the person who asked is remembered.
	now = now.Add(25 * time.Hour)
	ask("new", "k1")
	for name, n := range map[string]int{"events": len(a.seen), "shapes": len(a.shapes), "spends": len(a.spent)} {
		if n != 1 {
			t.Errorf("%d people or grants with %s after every window passed, want 1", n, name)
		}
	}
	for key := range a.last {
		if !strings.HasSuffix(key, "/new") {
			t.Errorf("last alert %s is remembered past its cooldown", key)
		}
	}
	if _, ok := a.seen["new"]; !ok {
		t.Error("the person who just asked is not remembered")
	}
}
