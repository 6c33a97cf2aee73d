package alerts

import (
	"math"
	"testing"
	"time"
)

// TestBurnSumsTheWindow: the running sum of a grant's spends is the sum
// over the window ending at each spend, as summing them afresh gives.
func TestBurnSumsTheWindow(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	spends := []struct {
		after time.Duration
		eps   float64
		want  float64
	}{
		{0, 0.1, 0.1},
		{10 * time.Minute, 0.2, 0.3},
		{60 * time.Minute, 0.3, 0.6},   // the first is exactly a window old: kept
		{61 * time.Minute, 0.05, 0.55}, // now it is past
		{200 * time.Minute, 0.4, 0.4},  // every earlier one is past
		{201 * time.Minute, 0.1, 0.5},
	}
	var b burn
	for i, s := range spends {
		got := b.add(t0.Add(s.after), s.eps, time.Hour)
		if math.Abs(got-s.want) > 1e-12 {
			t.Errorf("spend %d: sum %v, want %v", i, got, s.want)
		}
	}
	if len(b.spends) != 2 {
		t.Errorf("%d spends kept, want the 2 within the window", len(b.spends))
	}
}
