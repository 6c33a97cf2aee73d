package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"strings"
	"testing"
	"time"
)

func TestChainVerifies(t *testing.T) {
	for _, algo := range []string{HashSM3, HashSHA256} {
		t.Run(algo, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store) {
				ctx := context.Background()
				key := newKey(t)
				l := newLog(t, s.db, Config{Dialect: s.d, Hash: algo, Signer: key, SignEvery: 100})
				// More entries than a verification page, quickly: many
				// AppendTx in a few transactions, then single appends.
				const batches, perBatch = 5, 500
				for b := range batches {
					tx, err := s.db.BeginTx(ctx, nil)
					if err != nil {
						t.Fatal(err)
					}
					for i := range perBatch {
						if _, err := l.AppendTx(ctx, tx, queryEntry(b*perBatch+i)); err != nil {
							tx.Rollback()
							t.Fatal(err)
						}
					}
					if err := tx.Commit(); err != nil {
						t.Fatal(err)
					}
				}
				last := fill(t, l, 7, queryEntry)[6]
				if _, err := l.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
				const total = batches*perBatch + 7
				rep := mustVerify(t, l)
				if rep.Entries != total || rep.FirstSeq != 1 || !bytes.Equal(rep.Head, last.Hash) {
					t.Fatalf("report %+v, want %d entries from 1 ending in %s", rep, total, last.Hash)
				}
				if rep.SignedHeadsChecked != total/100+1 || rep.LastSignedSeq != total {
					t.Fatalf("report %+v, want %d signed heads, the last at %d", rep, total/100+1, total)
				}
				other := newKey(t)
				pubs := []struct {
					name   string
					pub    crypto.PublicKey
					wantOK bool
				}{
					{"the gateway's key", &key.PublicKey, true},
					{"no key", nil, true},
					{"typed nil key", (*ecdsa.PublicKey)(nil), true},
					{"another key", &other.PublicKey, false},
				}
				for _, p := range pubs {
					rep, err := VerifyDB(ctx, s.db, s.d, VerifyOptions{PublicKey: p.pub})
					if err != nil {
						t.Fatalf("%s: %v", p.name, err)
					}
					if rep.OK() != p.wantOK {
						t.Errorf("%s: report %+v, want OK %v", p.name, rep, p.wantOK)
					}
				}
			})
		})
	}
}

// TestTamper edits the log as an attacker who dropped the triggers would,
// and checks that verification names the first bad entry.
func TestTamper(t *testing.T) {
	const n = 30 // heads are signed at 10, 20 and 30
	tests := []struct {
		name     string
		tamper   func(t *testing.T, s store, es []Entry)
		wantSeq  int64
		wantWhy  string
		untilKey bool // caught only when the gateway's key is known
	}{
		{name: "detail edited", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_entries SET detail = '{"sql":"SELECT 1"}' WHERE seq = 7`)
		}, wantSeq: 7, wantWhy: "hash mismatch: entry edited"},
		{name: "actor edited", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_entries SET actor = 'someone_else' WHERE seq = 12`)
		}, wantSeq: 12, wantWhy: "hash mismatch: entry edited"},
		{name: "retention shortened", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_entries SET retain_until_us = 0 WHERE seq = 3`)
		}, wantSeq: 3, wantWhy: "hash mismatch"},
		{name: "algorithm relabelled", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_entries SET hash_alg = 'sha256' WHERE seq = 4`)
		}, wantSeq: 4, wantWhy: "hash mismatch"},
		{name: "middle row deleted", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq = 15`)
		}, wantSeq: 15, wantWhy: "seq gap: entry 15 missing"},
		{name: "two rows deleted", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq IN (15, 16)`)
		}, wantSeq: 15, wantWhy: "entries 15 to 16 missing"},
		{name: "first row deleted", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq = 1`)
		}, wantSeq: 1, wantWhy: "seq gap: entry 1 missing"},
		{name: "deleted and renumbered", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq = 15`)
			for seq := 16; seq <= n; seq++ {
				mustExec(t, s.db, `UPDATE audit_entries SET seq = $1 WHERE seq = $2`, seq-1, seq)
			}
		}, wantSeq: 15, wantWhy: "prev hash mismatch"},
		{name: "two rows swapped", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_entries SET seq = 1000 WHERE seq = 8`)
			mustExec(t, s.db, `UPDATE audit_entries SET seq = 8 WHERE seq = 9`)
			mustExec(t, s.db, `UPDATE audit_entries SET seq = 9 WHERE seq = 1000`)
		}, wantSeq: 8, wantWhy: "prev hash mismatch"},
		{name: "two rows' contents swapped", tamper: func(t *testing.T, s store, es []Entry) {
			for _, p := range [][2]int{{8, 9}, {9, 8}} {
				e := es[p[1]-1]
				mustExec(t, s.db, `UPDATE audit_entries SET detail = $1, time_us = $2 WHERE seq = $3`, string(e.Detail), e.Time.UnixMicro(), p[0])
			}
		}, wantSeq: 8, wantWhy: "hash mismatch"},
		{name: "tail rewritten and rehashed", tamper: func(t *testing.T, s store, es []Entry) {
			rewriteFrom(t, s, es, 15)
		}, wantSeq: 20, wantWhy: "signed head mismatch"},
		{name: "signed head forged", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_heads SET hash = $1 WHERE seq = 20`, []byte(es[18].Hash))
		}, wantSeq: 20, wantWhy: "signed head mismatch"},
		{name: "signed head's signature replaced", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `UPDATE audit_heads SET signature = (SELECT signature FROM audit_heads WHERE seq = 10) WHERE seq = 20`)
		}, wantSeq: 20, wantWhy: "signed head forged: signature does not verify"},
		{name: "tail rewritten and re-signed with another key", tamper: func(t *testing.T, s store, es []Entry) {
			rewritten := rewriteFrom(t, s, es, 15)
			mallory, err := newHeadSigner(newKey(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, seq := range []int64{20, 30} {
				h := rewritten[seq]
				sig, err := mallory.sign(headMessage(seq, h, 0))
				if err != nil {
					t.Fatal(err)
				}
				mustExec(t, s.db, `UPDATE audit_heads SET hash = $1, signed_us = 0, public_key = $2, signature = $3 WHERE seq = $4`,
					[]byte(h), mallory.pub, sig, seq)
			}
		}, wantSeq: 20, wantWhy: "signed with a key other than the gateway's", untilKey: true},
		{name: "tail deleted", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq > 25`)
		}, wantSeq: 30, wantWhy: "signed head names missing entry 30"},
		{name: "prefix deleted behind a forged watermark", tamper: func(t *testing.T, s store, es []Entry) {
			mustExec(t, s.db, `DELETE FROM audit_entries WHERE seq <= 5`)
			mustExec(t, s.db, `INSERT INTO audit_prunes (first_seq, prev_hash, pruned_us, entries, sig_alg, public_key, signature)
				VALUES (6, $1, 0, 5, '', $2, $3)`, []byte(es[4].Hash), []byte{}, []byte{})
		}, wantSeq: 6, wantWhy: "prune watermark is not signed", untilKey: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			forEachStore(t, func(t *testing.T, s store) {
				ctx := context.Background()
				clock := &testClock{now: time.Now().Add(-time.Hour), step: time.Second}
				l := newLog(t, s.db, Config{Dialect: s.d, Signer: newKey(t), SignEvery: 10, Now: clock.Now})
				es := fill(t, l, n, queryEntry)
				mustVerify(t, l)
				dropTriggers(t, s)
				tt.tamper(t, s, es)
				rep, err := l.Verify(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK() {
					t.Fatalf("tampered log verified: %+v", rep)
				}
				if rep.FirstBad.Seq != tt.wantSeq || !strings.Contains(rep.FirstBad.Reason, tt.wantWhy) {
					t.Fatalf("first bad entry %d (%s), want %d (%s)", rep.FirstBad.Seq, rep.FirstBad.Reason, tt.wantSeq, tt.wantWhy)
				}
				// Without the gateway's key, signatures are checked against
				// the stored keys: a consistent forgery by a second key, or
				// an unsigned watermark, then passes.
				rep, err = VerifyDB(ctx, s.db, s.d, VerifyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if rep.OK() != tt.untilKey {
					t.Fatalf("VerifyDB without a key: %+v, want OK %v", rep, tt.untilKey)
				}
			})
		})
	}
}

// rewriteFrom changes entry from's actor and rehashes the chain from it to
// the end, as an attacker who knows the hash algorithm would. It returns the
// new hashes by seq.
func rewriteFrom(t *testing.T, s store, es []Entry, from int64) map[int64]Digest {
	t.Helper()
	out := map[int64]Digest{}
	prev := es[from-2].Hash
	for _, e := range es[from-1:] {
		if e.Seq == from {
			e.Actor = "mallory"
		}
		e.PrevHash = prev
		h, err := entryHash(e)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, s.db, `UPDATE audit_entries SET actor = $1, prev_hash = $2, hash = $3 WHERE seq = $4`,
			e.Actor, []byte(e.PrevHash), []byte(h), e.Seq)
		out[e.Seq], prev = h, h
	}
	return out
}

// TestTriggersRefuse checks that direct SQL cannot rewrite the log while
// the triggers are in place.
func TestTriggersRefuse(t *testing.T) {
	tests := []struct {
		name     string
		sql      string
		postgres bool // PostgreSQL only
	}{
		{name: "update an entry", sql: `UPDATE audit_entries SET actor = 'x' WHERE seq = 2`},
		{name: "delete an entry within retention", sql: `DELETE FROM audit_entries WHERE seq = 2`},
		{name: "delete all entries", sql: `DELETE FROM audit_entries`},
		{name: "update a signed head", sql: `UPDATE audit_heads SET signed_us = 0`},
		{name: "delete a signed head", sql: `DELETE FROM audit_heads`},
		{name: "truncate entries", sql: `TRUNCATE audit_entries`, postgres: true},
		{name: "truncate heads", sql: `TRUNCATE audit_heads`, postgres: true},
	}
	forEachStore(t, func(t *testing.T, s store) {
		l := newLog(t, s.db, Config{Dialect: s.d, Signer: newKey(t), SignEvery: 2})
		fill(t, l, 4, queryEntry)
		for _, tt := range tests {
			if tt.postgres && s.d != Postgres {
				continue
			}
			if _, err := s.db.Exec(tt.sql); err == nil {
				t.Errorf("%s: allowed", tt.name)
			}
		}
		if rep := mustVerify(t, l); rep.Entries != 4 || rep.SignedHeadsChecked != 2 {
			t.Fatalf("report %+v after refused edits", rep)
		}
	})
}
