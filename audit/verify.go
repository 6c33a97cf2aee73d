package audit

import (
	"bytes"
	"context"
	"crypto"
	"database/sql"
	"fmt"
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
	// LastSignedSeq is the newest entry covered by a verified signature;
	// entries after it are protected by the chain alone.
	LastSignedSeq int64 `json:"last_signed_seq"`
	// FirstBad is the first problem found, nil when the log is intact.
	FirstBad *Problem `json:"first_bad,omitempty"`
}

// OK reports whether the log verified.
func (r Report) OK() bool { return r.FirstBad == nil }

// Verify checks the log, with signatures checked against the log's own
// signing key when it has one, so heads signed before a key rotation fail;
// check such a log with VerifyDB and a nil key. See VerifyDB.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	var pub crypto.PublicKey
	if l.cfg.Signer != nil {
		pub = l.cfg.Signer.Public()
	}
	return VerifyDB(ctx, l.db, l.cfg.Dialect, pub)
}

// pageSize is how many entries, or signed heads, verification reads at once.
const pageSize = 1000

// VerifyDB checks the audit log in db without needing a signing key: each
// entry's hash, the link to its predecessor and the continuity of sequence
// numbers from the prune watermark on, then every signed head against the
// recomputed chain and its signature. The first problem is reported in
// Report.FirstBad; an error means the check itself could not be done.
//
// pub is the gateway's public key, obtained out of band; every head and
// prune record must then be signed by it. With pub nil, signatures are
// checked against the key stored beside them, which catches edits but not an
// attacker who re-signs with a key of their own.
//
// It reads in pages inside one read-only transaction, so that it sees one
// consistent state while the gateway keeps appending.
func VerifyDB(ctx context.Context, db *sql.DB, d Dialect, pub crypto.PublicKey) (Report, error) {
	if err := d.valid(); err != nil {
		return Report{}, err
	}
	v, err := newVerifier(pub)
	if err != nil {
		return Report{}, fmt.Errorf("verify audit log: %w", err)
	}
	opts := &sql.TxOptions{ReadOnly: true}
	if d == Postgres {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return Report{}, fmt.Errorf("verify audit log: %w", err)
	}
	defer tx.Rollback()
	w := chainWalk{ctx: ctx, tx: tx, v: v}
	if err := w.run(); err != nil {
		return Report{}, err
	}
	return w.rep, nil
}

// chainWalk is one verification in progress.
type chainWalk struct {
	ctx context.Context
	tx  *sql.Tx
	v   *verifier
	rep Report

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
		}
		if len(page) < pageSize {
			break
		}
	}
	// Any signed head left names an entry that is gone: the chain was cut
	// short after it was signed.
	h, err := w.peekHead()
	if err != nil || h == nil {
		return err
	}
	w.fail(h.seq, "signed head names missing entry %d: entries were deleted from the end of the chain", h.seq)
	return nil
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
	w.rep.LastSignedSeq = h.seq
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
