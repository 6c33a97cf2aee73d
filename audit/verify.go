package audit

import (
	"bytes"
	"context"
	"crypto"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Problem is the first place where the log does not hold.
type Problem struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// Report is the result of verifying the log.
type Report struct {
	// Entries is how many entries were checked (up to the first problem).
	Entries int64 `json:"entries"`
	// FirstSeq is where the chain starts: 1, or the prune watermark.
	FirstSeq int64 `json:"first_seq"`
	// Head is the hash of the last entry checked; with none, the prune
	// watermark's hash, or 32 zero bytes.
	Head Digest `json:"head"`
	// SignedHeadsChecked counts the signed heads that verified.
	SignedHeadsChecked int `json:"signed_heads_checked"`
	// LastSignedSeq is the newest entry covered by a verified signature
	// (a signed head or a signed prune watermark).
	LastSignedSeq int64 `json:"last_signed_seq"`
	// Unsigned counts the entries after LastSignedSeq, protected by the
	// chain alone; VerifyOptions.Tail bounds them.
	Unsigned int64 `json:"unsigned"`
	// LastHead is the newest verified signed head as a checkpoint that the
	// verifier can keep and give as VerifyOptions.Since next time; nil when
	// there is none.
	LastHead *Checkpoint `json:"last_head,omitempty"`
	// Since is the size of the checkpoint the log was proven to extend, 0
	// when none was given.
	Since int64 `json:"since,omitempty"`
	// FirstBad is the first problem found, nil when the log is intact.
	FirstBad *Problem `json:"first_bad,omitempty"`
}

// OK reports whether the log verified.
func (r Report) OK() bool { return r.FirstBad == nil }

// Tail bounds the entries that may follow the last signed head: those a
// running gateway has appended but not signed yet. The zero Tail allows
// none, which is right for a gateway that has stopped, as Close signs the
// head.
type Tail struct {
	// Age bounds how long before the verification the oldest unsigned
	// entry was appended, by its own time stamp.
	Age time.Duration
	// Entries bounds how many there may be. A gateway signs every
	// Config.SignEvery entries, so a genuine tail has fewer than that.
	Entries int64
}

// LiveTail is the tail a gateway with cfg leaves unsigned while it runs:
// entries younger than five sign intervals (10s by default: KeepSigned's
// period with room for a slow store and skewed clocks), fewer than
// SignEvery of them.
func LiveTail(cfg Config) Tail {
	every, interval := cfg.SignEvery, cfg.SignInterval
	if every <= 0 {
		every = 100
	}
	if interval <= 0 {
		interval = DefaultSignInterval
	}
	return Tail{Age: 5 * interval, Entries: int64(every) - 1}
}

// VerifyOptions say what a verification trusts and allows.
type VerifyOptions struct {
	// PublicKey is the gateway's public key, from the auditor's own copy;
	// every head, prune record and checkpoint must then be signed by it.
	// With none, signatures are checked against the key stored beside them,
	// which catches edits but not an attacker who re-signs with a key of
	// their own.
	PublicKey crypto.PublicKey
	// Since is a checkpoint the verifier kept outside the gateway: the log
	// must still extend it. It needs PublicKey.
	Since *Checkpoint
	// Tail bounds the entries after the last signed head.
	Tail Tail
	// Now is the verifier's clock (default time.Now).
	Now func() time.Time
}

// Verify checks the log, with signatures checked against the log's own
// signing key when it has one (so heads signed before a key rotation fail;
// check such a log with VerifyDB and no key) and the tail the log leaves
// unsigned while it runs (LiveTail). See VerifyDB.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	opts := VerifyOptions{Tail: LiveTail(l.cfg), Now: l.cfg.Now}
	if l.cfg.Signer != nil {
		opts.PublicKey = l.cfg.Signer.Public()
	}
	return VerifyDB(ctx, l.db, l.cfg.Dialect, opts)
}

// pageSize is how many entries, or signed heads, verification reads at once.
const pageSize = 1000

// VerifyDB checks the audit log in db without needing a signing key: each
// entry's hash, the link to its predecessor and the continuity of sequence
// numbers from the prune watermark on, then every signed head against the
// recomputed chain and its signature, then that the chain ends at a signed
// head, or in no more unsigned entries than opts.Tail allows, and that it
// extends opts.Since. The first problem is reported in Report.FirstBad; an
// error means the check itself could not be done.
//
// It reads in pages inside one read-only transaction, so that it sees one
// consistent state while the gateway keeps appending.
func VerifyDB(ctx context.Context, db *sql.DB, d Dialect, opts VerifyOptions) (Report, error) {
	if err := validDialect(d); err != nil {
		return Report{}, err
	}
	v, err := newVerifier(opts.PublicKey)
	if err != nil {
		return Report{}, fmt.Errorf("verify audit log: %w", err)
	}
	if opts.Since != nil && v.trusted == nil {
		return Report{}, errors.New("verify audit log: a checkpoint is only worth checking against the gateway's public key; give one")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	txOpts := &sql.TxOptions{ReadOnly: true}
	if d == Postgres {
		txOpts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx, txOpts)
	if err != nil {
		return Report{}, fmt.Errorf("verify audit log: %w", err)
	}
	defer tx.Rollback()
	w := chainWalk{ctx: ctx, tx: tx, v: v, opts: opts}
	if err := w.run(); err != nil {
		return Report{}, err
	}
	return w.rep, nil
}

// chainWalk is one verification in progress.
type chainWalk struct {
	ctx  context.Context
	tx   *sql.Tx
	v    *verifier
	opts VerifyOptions
	rep  Report

	// firstUnsigned is the oldest entry after the last signed point, nil
	// while there is none.
	firstUnsigned *Entry
	// sinceSeen is set once the checkpoint's entry has been compared.
	sinceSeen bool

	next Digest // the hash the next entry must link to
	// heads is the current page of signed heads; headsAfter is where the
	// next page starts.
	heads      []signedHead
	headsAfter int64
	headsDone  bool
}

type signedHead struct {
	seq                  int64
	hash                 Digest
	signedUS             int64
	sigAlg               string
	publicKey, signature []byte
}

func (w *chainWalk) fail(seq int64, format string, args ...any) {
	w.rep.FirstBad = &Problem{Seq: seq, Reason: fmt.Sprintf(format, args...)}
}

func (w *chainWalk) run() error {
	w.rep.FirstSeq, w.next, w.headsAfter = 1, make(Digest, hashSize), -1<<63
	if cp := w.opts.Since; cp != nil {
		if why := cp.check(w.v); why != "" {
			w.fail(cp.Size, "checkpoint of %d entries rejected: %s", cp.Size, why)
			return nil
		}
		w.rep.Since = cp.Size
	}
	wm, err := readWatermark(w.ctx, w.tx)
	if err != nil {
		return err
	}
	if wm != nil {
		w.rep.FirstSeq, w.next = wm.firstSeq, wm.prevHash
		if !w.checkWatermark(wm) {
			return nil
		}
	}
	w.rep.Head = w.next
	// Heads of pruned entries can only have their signatures checked; the
	// one at the watermark must also match the watermark's hash.
	if ok, err := w.headsBefore(w.rep.FirstSeq-1, w.next); err != nil || !ok {
		return err
	}
	if !w.sinceAt(w.rep.FirstSeq-1, w.next) {
		return nil
	}
	expect := w.rep.FirstSeq
	for {
		page, err := w.entryPage(expect)
		if err != nil {
			return err
		}
		for _, e := range page {
			if !w.checkEntry(e, expect) {
				return nil
			}
			w.rep.Entries++
			w.rep.Head, w.next, expect = e.Hash, e.Hash, e.Seq+1
			if ok, err := w.headAt(e.Seq, e.Hash); err != nil || !ok {
				return err
			}
			if !w.sinceAt(e.Seq, e.Hash) {
				return nil
			}
			switch {
			case w.rep.LastSignedSeq >= e.Seq:
				w.firstUnsigned = nil
			case w.firstUnsigned == nil:
				w.firstUnsigned = &e
			}
		}
		if len(page) < pageSize {
			break
		}
	}
	last := expect - 1
	// Any signed head left names an entry that is gone: the chain was cut
	// short after it was signed.
	h, err := w.peekHead()
	if err != nil {
		return err
	}
	if h != nil {
		w.fail(h.seq, "signed head names missing entry %d: entries were deleted from the end of the chain", h.seq)
		return nil
	}
	if cp := w.opts.Since; cp != nil && !w.sinceSeen {
		if cp.Size > last {
			w.fail(last+1, "the log ends at entry %d, short of the checkpoint of %d entries signed at %s: entries were deleted from its end",
				last, cp.Size, cp.Time.Format(time.RFC3339))
		} else {
			w.fail(cp.Size, "the checkpoint of %d entries predates the prune watermark (%d), and no signed head of entry %d is left to compare it with",
				cp.Size, w.rep.FirstSeq, cp.Size)
		}
		return nil
	}
	w.checkTail(last)
	return nil
}

// sinceAt checks the chain's hash h at seq against the checkpoint, when
// the checkpoint is of seq entries.
func (w *chainWalk) sinceAt(seq int64, h Digest) bool {
	cp := w.opts.Since
	if cp == nil || cp.Size != seq {
		return true
	}
	w.sinceSeen = true
	if bytes.Equal(cp.Head, h) {
		return true
	}
	w.fail(seq, "the chain up to entry %d differs from the checkpoint signed at %s: entries up to %d were rewritten",
		seq, cp.Time.Format(time.RFC3339), seq)
	return false
}

// checkTail checks the entries after the last signed point against the
// tail allowed; last is the chain's last seq.
func (w *chainWalk) checkTail(last int64) {
	e := w.firstUnsigned
	if e == nil || e.Seq <= w.rep.LastSignedSeq {
		return
	}
	w.rep.Unsigned = last - w.rep.LastSignedSeq
	tail := w.opts.Tail
	if w.rep.Unsigned > tail.Entries {
		w.fail(e.Seq, "entries %d to %d follow the last signed head (%d), more than the %d a running gateway leaves unsigned: signed heads were deleted, or the log was rewritten after them",
			e.Seq, last, w.rep.LastSignedSeq, tail.Entries)
		return
	}
	if age := w.opts.Now().Sub(e.Time); age > tail.Age {
		w.fail(e.Seq, "entries from %d on are not covered by a signed head, and entry %d was appended %s ago, longer than the %s a running gateway leaves unsigned: signed heads were deleted, or the gateway stopped without signing (starting it signs the head)",
			e.Seq, e.Seq, age.Round(time.Second), tail.Age)
	}
}

// checkWatermark checks the prune record's signature.
func (w *chainWalk) checkWatermark(wm *watermark) bool {
	if len(wm.prevHash) != hashSize {
		w.fail(wm.firstSeq, "prune watermark is malformed: its hash has %d bytes", len(wm.prevHash))
		return false
	}
	if wm.sigAlg == "" {
		if w.v.trusted != nil {
			w.fail(wm.firstSeq, "prune watermark is not signed: entries before %d may have been deleted", wm.firstSeq)
			return false
		}
		return true
	}
	if why := w.v.check(wm.sigAlg, wm.publicKey, pruneMessage(*wm), wm.signature); why != "" {
		w.fail(wm.firstSeq, "prune watermark forged: %s", why)
		return false
	}
	w.rep.LastSignedSeq = max(w.rep.LastSignedSeq, wm.firstSeq-1)
	return true
}

// entryPage reads up to pageSize entries from seq from on.
func (w *chainWalk) entryPage(from int64) ([]Entry, error) {
	rows, err := w.tx.QueryContext(w.ctx, `SELECT `+entryColumns+` FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2`, from, pageSize)
	if err != nil {
		return nil, fmt.Errorf("read audit entries from %d: %w", from, err)
	}
	defer rows.Close()
	page := make([]Entry, 0, pageSize)
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("read audit entries from %d: %w", from, err)
		}
		page = append(page, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit entries from %d: %w", from, err)
	}
	return page, nil
}

// checkEntry checks e, which should be entry expect and link to w.next.
func (w *chainWalk) checkEntry(e Entry, expect int64) bool {
	switch {
	case e.Seq != expect:
		if e.Seq == expect+1 {
			w.fail(expect, "seq gap: entry %d missing (deleted)", expect)
		} else {
			w.fail(expect, "seq gap: entries %d to %d missing (deleted)", expect, e.Seq-1)
		}
		return false
	case !bytes.Equal(e.PrevHash, w.next):
		w.fail(e.Seq, "prev hash mismatch: entries reordered or deleted, or this entry's link edited")
		return false
	}
	h, err := entryHash(e)
	if err != nil {
		w.fail(e.Seq, "cannot rehash entry: %v", err)
		return false
	}
	if !bytes.Equal(h, e.Hash) {
		w.fail(e.Seq, "hash mismatch: entry edited")
		return false
	}
	return true
}

// peekHead returns the next signed head without consuming it, nil when
// there are no more.
func (w *chainWalk) peekHead() (*signedHead, error) {
	if len(w.heads) == 0 && !w.headsDone {
		if err := w.headPage(); err != nil {
			return nil, err
		}
	}
	if len(w.heads) == 0 {
		return nil, nil
	}
	return &w.heads[0], nil
}

func (w *chainWalk) headPage() error {
	rows, err := w.tx.QueryContext(w.ctx, `SELECT seq, hash, signed_us, sig_alg, public_key, signature
		FROM audit_heads WHERE seq > $1 ORDER BY seq LIMIT $2`, w.headsAfter, pageSize)
	if err != nil {
		return fmt.Errorf("read signed audit heads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h signedHead
		var hash []byte
		if err := rows.Scan(&h.seq, &hash, &h.signedUS, &h.sigAlg, &h.publicKey, &h.signature); err != nil {
			return fmt.Errorf("read signed audit head: %w", err)
		}
		h.hash = hash
		w.heads = append(w.heads, h)
		w.headsAfter = h.seq
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read signed audit heads: %w", err)
	}
	w.headsDone = len(w.heads) < pageSize
	return nil
}

// checkHead checks h's signature and, when chain is not nil, that it signs
// the chain's hash at its seq.
func (w *chainWalk) checkHead(h signedHead, chain Digest) bool {
	if chain != nil && !bytes.Equal(h.hash, chain) {
		w.fail(h.seq, "signed head mismatch: the chain up to entry %d was rewritten after it was signed", h.seq)
		return false
	}
	if why := w.v.check(h.sigAlg, h.publicKey, headMessage(h.seq, h.hash, h.signedUS), h.signature); why != "" {
		w.fail(h.seq, "signed head forged: %s", why)
		return false
	}
	w.rep.SignedHeadsChecked++
	w.rep.LastSignedSeq = max(w.rep.LastSignedSeq, h.seq)
	cp := h.checkpoint()
	w.rep.LastHead = &cp
	return true
}

// headsBefore checks the heads of entries up to seq, which were pruned:
// their signatures, and the one at seq against h, the watermark's hash.
func (w *chainWalk) headsBefore(seq int64, h Digest) (bool, error) {
	for {
		next, err := w.peekHead()
		if err != nil || next == nil || next.seq > seq {
			return true, err
		}
		var chain Digest
		if next.seq == seq {
			chain = h
		}
		if !w.checkHead(*next, chain) {
			return false, nil
		}
		// A checkpoint of entries since pruned is compared with the head
		// signed there, which pruning keeps.
		if next.seq < seq && !w.sinceAt(next.seq, next.hash) {
			return false, nil
		}
		w.heads = w.heads[1:]
	}
}

// headAt checks the head signed at seq, if any, against the chain's hash h
// there. Heads are consumed in order, so one below seq was skipped by the
// chain: it names an entry that is missing.
func (w *chainWalk) headAt(seq int64, h Digest) (bool, error) {
	for {
		next, err := w.peekHead()
		if err != nil || next == nil || next.seq > seq {
			return true, err
		}
		if next.seq < seq {
			w.fail(next.seq, "signed head names missing entry %d", next.seq)
			return false, nil
		}
		if !w.checkHead(*next, h) {
			return false, nil
		}
		w.heads = w.heads[1:]
	}
}
