package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
)

// TestTamperWithoutHeads deletes or rewrites the log together with the
// signed heads that would give it away, as someone holding the database
// file can, and checks that verification still fails: on its own when the
// log no longer ends at a signed head, and with a checkpoint the auditor
// kept when it does.
func TestTamperWithoutHeads(t *testing.T) {
	const n = 30 // heads are signed at 10, 20 and 30
	tests := []struct {
		name   string
		tamper func(t *testing.T, s store, key *sm2.PrivateKey, es []Entry)
		// alone is true when verification without a checkpoint must pass:
		// the log is an earlier genuine state, or a forgery with the key.
		// wantSeq and wantWhy are then what verification against the
		// checkpoint reports, else what verification without it does.
		alone   bool
		wantSeq int64
		wantWhy string
	}{
		{name: "triggers dropped, tail and its heads deleted back to a signed head", tamper: func(t *testing.T, s store, _ *sm2.PrivateKey, _ []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq > 20`)
			mustExec(t, s.db, `DELETE FROM audit_heads WHERE seq > 20`)
		}, alone: true, wantSeq: 21, wantWhy: "the log ends at entry 20, short of the checkpoint of 30 entries"},
		{name: "every signed head deleted", tamper: func(t *testing.T, s store, _ *sm2.PrivateKey, _ []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_heads`)
		}, wantSeq: 1, wantWhy: "entries 1 to 30 follow the last signed head (0)"},
		{name: "every signed head deleted, entries re-timed to now and re-chained", tamper: func(t *testing.T, s store, _ *sm2.PrivateKey, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_heads`)
			rechain(t, s, es, 1, func(e *Entry) { e.Time = time.Now().UTC().Truncate(time.Microsecond) })
		}, wantSeq: 1, wantWhy: "more than the 9 a running gateway leaves unsigned"},
		{name: "newest head and the entries after the one before deleted", tamper: func(t *testing.T, s store, _ *sm2.PrivateKey, _ []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq > 25`)
			mustExec(t, s.db, `DELETE FROM audit_heads WHERE seq > 20`)
		}, wantSeq: 21, wantWhy: "entry 21 was appended"},
		{name: "entry edited and re-chained with SM3, later heads deleted", tamper: func(t *testing.T, s store, _ *sm2.PrivateKey, es []Entry) {
			rechain(t, s, es, 15, func(e *Entry) {
				if e.Seq == 15 {
					e.Actor = "mallory"
				}
			})
			mustExec(t, s.db, `DELETE FROM audit_heads WHERE seq >= 20`)
		}, wantSeq: 11, wantWhy: "entries 11 to 30 follow the last signed head (10)"},
		{name: "entry edited, re-chained and re-signed with the stolen key", tamper: func(t *testing.T, s store, key *sm2.PrivateKey, es []Entry) {
			hashes := rechain(t, s, es, 15, func(e *Entry) {
				if e.Seq == 15 {
					e.Actor = "mallory"
				}
			})
			resign(t, s, key, hashes, 20, 30)
		}, alone: true, wantSeq: 30, wantWhy: "differs from the checkpoint"},
		{name: "truncated and re-signed with the stolen key", tamper: func(t *testing.T, s store, key *sm2.PrivateKey, _ []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq > 24`)
			mustExec(t, s.db, `DELETE FROM audit_heads WHERE seq > 20`)
			forged := newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 10})
			if _, err := forged.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, alone: true, wantSeq: 25, wantWhy: "the log ends at entry 24, short of the checkpoint"},
		{name: "truncated, refilled past the checkpoint and re-signed with the stolen key", tamper: func(t *testing.T, s store, key *sm2.PrivateKey, _ []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq > 24`)
			mustExec(t, s.db, `DELETE FROM audit_heads WHERE seq > 20`)
			forged := newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 10})
			fill(t, forged, 16, queryEntry)
			if _, err := forged.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
		}, alone: true, wantSeq: 30, wantWhy: "differs from the checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store) {
				ctx := context.Background()
				key := newKey(t)
				clock := &testClock{now: time.Now().Add(-time.Hour), step: time.Second}
				l := newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 10, Now: clock.Now})
				es := fill(t, l, n, queryEntry)
				cp, err := l.Checkpoint(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if cp.Size != n || !bytes.Equal(cp.Head, es[n-1].Hash) {
					t.Fatalf("checkpoint %+v, want the head of entry %d", cp, n)
				}
				cp = roundTrip(t, cp)
				mustVerifySince(t, s, key, cp)
				dropTriggers(t, s)
				tt.tamper(t, s, key, es)

				opts := VerifyOptions{PublicKey: &key.PublicKey, Tail: LiveTail(Config{SignEvery: 10})}
				alone, err := VerifyDB(ctx, s.db, s.d, opts)
				if err != nil {
					t.Fatal(err)
				}
				if alone.OK() != tt.alone {
					t.Fatalf("without a checkpoint: %+v, want OK %v", alone, tt.alone)
				}
				opts.Since = &cp
				rep, err := VerifyDB(ctx, s.db, s.d, opts)
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK() {
					t.Fatalf("tampered log verified against the checkpoint: %+v", rep)
				}
				if !tt.alone {
					rep = alone
				}
				if rep.FirstBad.Seq != tt.wantSeq || !strings.Contains(rep.FirstBad.Reason, tt.wantWhy) {
					t.Fatalf("first bad entry %d (%s), want %d (%s)", rep.FirstBad.Seq, rep.FirstBad.Reason, tt.wantSeq, tt.wantWhy)
				}
			})
		})
	}
}

// TestCheckpoint checks that a log still extends its checkpoints as it
// grows and is pruned, and that a checkpoint must be the gateway's.
func TestCheckpoint(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		key := newKey(t)
		now := time.Now()
		clock := &testClock{now: now.Add(-800 * 24 * time.Hour), step: time.Minute}
		l := newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 4, Now: clock.Now})
		if _, err := l.Checkpoint(ctx); !errors.Is(err, ErrEmpty) {
			t.Fatalf("checkpoint of an empty log: %v", err)
		}
		fill(t, l, 6, queryEntry)
		old, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		again, err := l.Checkpoint(ctx)
		if err != nil || !reflect.DeepEqual(again, old) {
			t.Fatalf("second checkpoint of the same head: %+v, %v, want %+v", again, err, old)
		}
		fill(t, l, 4, queryEntry)
		mid, err := l.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		clock.set(now)
		fill(t, l, 5, queryEntry)
		if _, err := l.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		for _, cp := range []Checkpoint{old, mid} {
			mustVerifySince(t, s, key, cp)
		}
		// Pruning entries a checkpoint covers leaves their signed heads,
		// which the checkpoint is then compared with.
		if n, err := l.Prune(ctx, now.Add(-400*24*time.Hour)); err != nil || n != 10 {
			t.Fatalf("Prune: %d, %v", n, err)
		}
		for _, cp := range []Checkpoint{old, mid} {
			mustVerifySince(t, s, key, cp)
		}

		other := newKey(t)
		forged := newLog(t, newStore(t, s.d).db, Config{Dialect: s.d, Signer: other})
		fill(t, forged, 20, queryEntry)
		bad, err := forged.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{PublicKey: &key.PublicKey, Since: &bad})
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || !strings.Contains(rep.FirstBad.Reason, "checkpoint of 20 entries rejected: signed with a key other than the gateway's") {
			t.Fatalf("checkpoint signed by another key: %+v", rep)
		}
		if _, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{Since: &old}); err == nil {
			t.Fatal("a checkpoint was checked without the gateway's public key")
		}
	})
}

// TestTail checks the entries a running gateway leaves unsigned: allowed
// while young and few, refused once KeepSigned should have signed them, and
// signed by KeepSigned within its interval.
func TestTail(t *testing.T) {
	forEachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		key := newKey(t)
		l := newLog(t, s.db, Config{Dialect: s.d, Signer: key, SignEvery: 50, SignInterval: 20 * time.Millisecond})
		fill(t, l, 7, queryEntry)
		rep := mustVerify(t, l)
		if rep.Unsigned != 7 || rep.LastSignedSeq != 0 {
			t.Fatalf("report %+v, want 7 unsigned entries", rep)
		}
		pub := &key.PublicKey
		tests := []struct {
			name   string
			tail   Tail
			now    time.Time
			wantOK bool
		}{
			{name: "live tail", tail: LiveTail(Config{SignEvery: 50}), now: time.Now(), wantOK: true},
			{name: "no tail allowed", tail: Tail{}, now: time.Now()},
			{name: "too many", tail: Tail{Age: time.Minute, Entries: 6}, now: time.Now()},
			{name: "too old", tail: LiveTail(Config{SignEvery: 50}), now: time.Now().Add(11 * time.Second)},
		}
		for _, tt := range tests {
			rep, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{PublicKey: pub, Tail: tt.tail, Now: func() time.Time { return tt.now }})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() != tt.wantOK {
				t.Errorf("%s: %+v, want OK %v", tt.name, rep, tt.wantOK)
			}
		}

		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			l.KeepSigned(runCtx, func(err error) { t.Error(err) })
		})
		defer func() {
			stop()
			wg.Wait()
		}()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rep, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{PublicKey: pub})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("KeepSigned left the tail unsigned: %+v", rep)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// rechain applies edit to the entries from seq from on and rehashes the
// chain from there to the end, as anyone who knows the hash algorithm can.
// It returns the new hashes by seq.
func rechain(t *testing.T, s store, es []Entry, from int64, edit func(*Entry)) map[int64]Digest {
	t.Helper()
	out := map[int64]Digest{}
	prev := make(Digest, hashSize)
	if from > 1 {
		prev = es[from-2].Hash
	}
	for _, e := range es[from-1:] {
		edit(&e)
		e.PrevHash = prev
		h, err := entryHash(e)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s.db, `UPDATE audit_entries SET actor = $1, time_us = $2, prev_hash = $3, hash = $4 WHERE seq = $5`,
			e.Actor, e.Time.UnixMicro(), []byte(e.PrevHash), []byte(h), e.Seq)
		out[e.Seq], prev = h, h
	}
	return out
}

// resign replaces the signed heads at seqs with signatures of the new
// hashes by key, as someone who copied the signing key can.
func resign(t *testing.T, s store, key *sm2.PrivateKey, hashes map[int64]Digest, seqs ...int64) {
	t.Helper()
	signer, err := newHeadSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range seqs {
		now := time.Now().UnixMicro()
		sig, err := signer.sign(headMessage(seq, hashes[seq], now))
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s.db, `UPDATE audit_heads SET hash = $1, signed_us = $2, signature = $3 WHERE seq = $4`,
			[]byte(hashes[seq]), now, sig, seq)
	}
}

// roundTrip passes cp through JSON, as an auditor's copy does.
func roundTrip(t *testing.T, cp Checkpoint) Checkpoint {
	t.Helper()
	b, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	var out Checkpoint
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustVerifySince(t *testing.T, s store, key *sm2.PrivateKey, cp Checkpoint) {
	t.Helper()
	rep, err := VerifyDB(context.Background(), s.db, s.d, VerifyOptions{PublicKey: &key.PublicKey, Since: &cp})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Since != cp.Size {
		t.Fatalf("log does not extend the checkpoint of %d entries: %+v", cp.Size, rep)
	}
}
