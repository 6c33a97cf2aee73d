package audit

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestPrune(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	const day = 24 * time.Hour
	// batch is n entries of a grade written from a time on, a minute apart.
	type batch struct {
		at    time.Time
		n     int
		grade string
		hold  time.Time // a legal hold: RetainUntil set by the caller
	}
	type prune struct {
		before      time.Time
		wantDeleted int64
		wantErr     error
	}
	tests := []struct {
		name      string
		batches   []batch
		prunes    []prune
		wantFirst int64 // first seq left
	}{
		{
			name:      "expired prefix pruned",
			batches:   []batch{{at: now.Add(-800 * day), n: 10}, {at: now.Add(-time.Hour), n: 5}},
			prunes:    []prune{{before: now.Add(-400 * day), wantDeleted: 10}},
			wantFirst: 11,
		},
		{
			name: "core entries within retention refuse",
			batches: []batch{{at: now.Add(-800 * day), n: 5}, {at: now.Add(-799 * day), n: 5, grade: "core"},
				{at: now.Add(-time.Hour), n: 5}},
			prunes:    []prune{{before: now.Add(-day), wantErr: ErrRetention}},
			wantFirst: 1,
		},
		{
			name:      "general entries newer than a year refuse",
			batches:   []batch{{at: now.Add(-800 * day), n: 5}, {at: now.Add(-100 * day), n: 5}},
			prunes:    []prune{{before: now, wantErr: ErrRetention}, {before: now.Add(-200 * day), wantDeleted: 5}},
			wantFirst: 6,
		},
		{
			name:      "legal hold refuses",
			batches:   []batch{{at: now.Add(-800 * day), n: 5, hold: now.Add(30 * day)}},
			prunes:    []prune{{before: now, wantErr: ErrRetention}},
			wantFirst: 1,
		},
		{
			name: "only a prefix: stops at the first newer entry",
			batches: []batch{{at: now.Add(-800 * day), n: 5}, {at: now.Add(-time.Hour), n: 1},
				{at: now.Add(-800 * day), n: 5}},
			prunes:    []prune{{before: now.Add(-400 * day), wantDeleted: 5}},
			wantFirst: 6,
		},
		{
			name:      "nothing old enough",
			batches:   []batch{{at: now.Add(-time.Hour), n: 5}},
			prunes:    []prune{{before: now.Add(-400 * day), wantDeleted: 0}},
			wantFirst: 1,
		},
		{
			name:      "twice, across signed heads",
			batches:   []batch{{at: now.Add(-1200 * day), n: 12}, {at: now.Add(-800 * day), n: 12}, {at: now, n: 3}},
			prunes:    []prune{{before: now.Add(-1000 * day), wantDeleted: 12}, {before: now.Add(-day), wantDeleted: 12}},
			wantFirst: 25,
		},
		{
			name:      "everything",
			batches:   []batch{{at: now.Add(-800 * day), n: 7}},
			prunes:    []prune{{before: now, wantDeleted: 7}},
			wantFirst: 8,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store) {
				ctx := context.Background()
				clock := &testClock{step: time.Minute}
				l := newLog(t, s.db, Config{Dialect: s.d, Signer: newKey(t), SignEvery: 5, Now: clock.Now})
				var total int64
				for _, b := range tt.batches {
					clock.set(b.at)
					fill(t, l, b.n, func(i int) Entry {
						e := queryEntry(i)
						if b.grade != "" {
							e.Grade = b.grade
						}
						e.RetainUntil = b.hold
						return e
					})
					total += int64(b.n)
				}
				clock.set(now)
				for _, p := range tt.prunes {
					n, err := l.Prune(ctx, p.before)
					if !errors.Is(err, p.wantErr) {
						t.Fatalf("Prune(%s): %v, want %v", p.before, err, p.wantErr)
					}
					if n != p.wantDeleted {
						t.Fatalf("Prune(%s) deleted %d, want %d", p.before, n, p.wantDeleted)
					}
				}
				// As a gateway does when it stops, so that no entry is left
				// unsigned.
				if _, err := l.Checkpoint(ctx); err != nil && !errors.Is(err, ErrEmpty) {
					t.Fatal(err)
				}
				rep := mustVerify(t, l)
				if rep.FirstSeq != tt.wantFirst || rep.Entries != total-tt.wantFirst+1 {
					t.Fatalf("after pruning: report %+v, want %d entries from %d", rep, total-tt.wantFirst+1, tt.wantFirst)
				}
				// The chain goes on from where it was, and still verifies.
				e, err := l.Append(ctx, queryEntry(0))
				if err != nil {
					t.Fatal(err)
				}
				if e.Seq != total+1 {
					t.Fatalf("next seq %d, want %d", e.Seq, total+1)
				}
				if _, err := l.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
				rep = mustVerify(t, l)
				if rep.Entries != total-tt.wantFirst+2 || !bytes.Equal(rep.Head, e.Hash) {
					t.Fatalf("after appending: report %+v", rep)
				}
				if want := int(total+1) / 5; rep.SignedHeadsChecked < want {
					t.Fatalf("%d signed heads checked, want at least %d", rep.SignedHeadsChecked, want)
				}
			})
		})
	}
}

// TestPruneBelowWatermark checks that a gap below the watermark is what
// pruning is, while one above it is still caught.
func TestPruneBelowWatermark(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		now := time.Now()
		clock := &testClock{now: now.Add(-800 * 24 * time.Hour), step: time.Minute}
		l := newLog(t, s.db, Config{Dialect: s.d, Signer: newKey(t), SignEvery: 4, Now: clock.Now})
		fill(t, l, 10, queryEntry)
		clock.set(now)
		fill(t, l, 5, queryEntry)
		if n, err := l.Prune(ctx, now.Add(-400*24*time.Hour)); err != nil || n != 10 {
			t.Fatalf("Prune: %d, %v", n, err)
		}
		if _, err := l.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		mustVerify(t, l)
		dropTriggers(t, s)
		mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq = 11`)
		rep, err := l.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || rep.FirstBad.Seq != 11 {
			t.Fatalf("deleting the first entry after the watermark: %+v", rep)
		}
	})
}
