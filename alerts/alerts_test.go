package alerts_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/metadb"
)

func newAlerter(t *testing.T, p alerts.Policy, now *time.Time) *alerts.Alerter {
	t.Helper()
	s, err := metadb.Open(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a, err := alerts.New(context.Background(), s, alerts.Config{Policy: p, Now: func() time.Time { return *now },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func kinds(t *testing.T, a *alerts.Alerter) map[string]int {
	t.Helper()
	as, err := a.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, x := range as {
		out[x.Kind]++
	}
	return out
}

func TestDetectors(t *testing.T) {
	now := time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC) // 03:00
	cases := []struct {
		name   string
		policy alerts.Policy
		events func(emit func(alerts.Event))
		want   map[string]int
	}{
		{"off hours", alerts.Policy{WorkingHours: [2]int{8, 18}}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok"})
		}, map[string]int{"off_hours": 1}},
		{"no rule in working hours", alerts.Policy{WorkingHours: [2]int{0, 24}}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok"})
		}, map[string]int{}},
		{"burst once per cooldown", alerts.Policy{BurstQueries: 3}, func(emit func(alerts.Event)) {
			for i := 0; i < 10; i++ {
				emit(alerts.Event{Person: "r", Outcome: "ok"})
			}
		}, map[string]int{"burst": 1}},
		{"queries spread out are no burst", alerts.Policy{BurstQueries: 3}, func(emit func(alerts.Event)) {
			for i := 0; i < 10; i++ {
				emit(alerts.Event{Person: "r", Outcome: "ok", Time: now.Add(time.Duration(i) * time.Minute)})
			}
		}, map[string]int{}},
		{"probing needs refusals", alerts.Policy{ProbeRefusals: 3}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "query_rejected"})
			emit(alerts.Event{Person: "r", Outcome: "ok"})
			emit(alerts.Event{Person: "r", Outcome: "forbidden"})
			emit(alerts.Event{Person: "s", Outcome: "query_rejected"})
		}, map[string]int{}},
		{"differencing", alerts.Policy{}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40"})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40"}) // the same question: no alert
			emit(alerts.Event{Person: "q", Outcome: "ok", Shape: "s1", Key: "age>41"}) // another person
		}, map[string]int{}},
		{"differencing found", alerts.Policy{}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40"})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s2", Key: "sex='F'"})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40"})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>41"}) // the first question with another constant
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40"}) // again, within the cooldown
		}, map[string]int{"differencing": 1}},
		{"differencing back to an earlier constant", alerts.Policy{}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40", Time: now})
			emit(alerts.Event{Person: "r", Outcome: "query_rejected", Shape: "s1", Key: "age>41", Time: now.Add(time.Minute)}) // refused: not an answer
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40", Time: now.Add(2 * time.Minute)})
		}, map[string]int{}},
		{"differencing outside the window", alerts.Policy{DiffWindow: time.Hour}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40", Time: now})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>41", Time: now.Add(2 * time.Hour)})
		}, map[string]int{}},
		{"differencing across two constants", alerts.Policy{DiffWindow: time.Hour}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>41", Time: now})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40", Time: now.Add(2 * time.Hour)})
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>40", Time: now.Add(150 * time.Minute)})
			// age>41 was last answered 3 h before; age>40 moments before.
			emit(alerts.Event{Person: "r", Outcome: "ok", Shape: "s1", Key: "age>41", Time: now.Add(3 * time.Hour)})
		}, map[string]int{"differencing": 1}},
		{"budget burn", alerts.Policy{BurnShare: 0.5}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", GrantID: "g", Epsilon: 0.3, GrantTotal: 1})
			emit(alerts.Event{Person: "r", Outcome: "ok", GrantID: "g", Epsilon: 0.3, GrantTotal: 1})
		}, map[string]int{"budget_burn": 1}},
		{"slow burn", alerts.Policy{BurnShare: 0.5, BurnWindow: time.Hour}, func(emit func(alerts.Event)) {
			emit(alerts.Event{Person: "r", Outcome: "ok", GrantID: "g", Epsilon: 0.3, GrantTotal: 1, Time: now})
			emit(alerts.Event{Person: "r", Outcome: "ok", GrantID: "g", Epsilon: 0.3, GrantTotal: 1, Time: now.Add(2 * time.Hour)})
		}, map[string]int{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAlerter(t, tc.policy, &now)
			tc.events(func(e alerts.Event) { a.Observe(context.Background(), e) })
			got := kinds(t, a)
			if len(got) != len(tc.want) {
				t.Fatalf("alerts %v, want %v", got, tc.want)
			}
			for k, n := range tc.want {
				if got[k] != n {
					t.Fatalf("alerts %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestAcknowledgeAndIncident(t *testing.T) {
	now := time.Now()
	a := newAlerter(t, alerts.Policy{}, &now)
	ctx := context.Background()
	al, err := a.Raise(ctx, "probing", "r", "demo", "five refusals", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Acknowledge(ctx, al.ID, "auditor"); err != nil {
		t.Fatal(err)
	}
	if err := a.Acknowledge(ctx, al.ID, "auditor"); err == nil {
		t.Fatal("acknowledged twice")
	}
	if _, err := a.OpenIncident(ctx, al.ID, "auditor", ""); err == nil {
		t.Fatal("an incident without a summary was opened")
	}
	id, err := a.OpenIncident(ctx, al.ID, "auditor", "probing identifiers")
	if err != nil || id == "" {
		t.Fatalf("incident: %q %v", id, err)
	}
	if _, err := a.OpenIncident(ctx, al.ID, "auditor", "again"); err == nil {
		t.Fatal("two incidents for one alert")
	}
}
