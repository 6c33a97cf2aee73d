package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// watermark is the latest prune record: entries before firstSeq were
// pruned, and prevHash is the hash of entry firstSeq-1, where the remaining
// chain starts.
type watermark struct {
	firstSeq  int64
	prevHash  Digest
	prunedUS  int64
	entries   int64
	sigAlg    string
	publicKey []byte
	signature []byte
}

// queryRower is what both *sql.DB and *sql.Tx offer for one-row reads.
type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readWatermark returns the latest prune record, nil if the log was never
// pruned.
func readWatermark(ctx context.Context, q queryRower) (*watermark, error) {
	var w watermark
	var prev []byte
	err := q.QueryRowContext(ctx, `SELECT first_seq, prev_hash, pruned_us, entries, sig_alg, public_key, signature
		FROM audit_prunes ORDER BY first_seq DESC LIMIT 1`).Scan(&w.firstSeq, &prev, &w.prunedUS, &w.entries, &w.sigAlg, &w.publicKey, &w.signature)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit prune watermark: %w", err)
	}
	w.prevHash = prev
	return &w, nil
}

// Prune deletes the longest prefix of the chain whose entries are all older
// than before, and returns how many it deleted. It refuses, with an error
// wrapping ErrRetention and deleting nothing, when any entry of that prefix
// is still within its retention period. In the same transaction it records
// a watermark (the first remaining seq and the hash of the last pruned
// entry, signed when the log has a signer) from which verification starts.
func (l *Log) Prune(ctx context.Context, before time.Time) (int64, error) {
	if err := l.lock(ctx); err != nil {
		return 0, err
	}
	defer l.unlock()
	tx, err := l.beginWrite(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()

	var first, last, firstKept sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(seq), max(seq) FROM audit_entries`).Scan(&first, &last); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if !first.Valid {
		return 0, nil
	}
	if err := tx.QueryRowContext(ctx, `SELECT min(seq) FROM audit_entries WHERE time_us >= $1`,
		before.UnixMicro()).Scan(&firstKept); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	cut := last.Int64
	if firstKept.Valid {
		cut = firstKept.Int64 - 1
	}
	if cut < first.Int64 {
		return 0, nil
	}

	now := l.cfg.Now()
	var heldSeq, heldUntil int64
	err = tx.QueryRowContext(ctx, `SELECT seq, retain_until_us FROM audit_entries WHERE seq <= $1 AND retain_until_us > $2
		ORDER BY seq LIMIT 1`, cut, now.UnixMicro()).Scan(&heldSeq, &heldUntil)
	switch {
	case err == nil:
		return 0, fmt.Errorf("prune audit log before %s: entry %d must be kept until %s: %w",
			before.UTC().Format(time.RFC3339), heldSeq, time.UnixMicro(heldUntil).UTC().Format(time.RFC3339), ErrRetention)
	case !errors.Is(err, sql.ErrNoRows):
		return 0, fmt.Errorf("prune audit log: %w", err)
	}

	w := watermark{firstSeq: cut + 1, prunedUS: now.UnixMicro()}
	var prev []byte
	if err := tx.QueryRowContext(ctx, `SELECT hash FROM audit_entries WHERE seq = $1`, cut).Scan(&prev); err != nil {
		return 0, fmt.Errorf("prune audit log: read hash of entry %d: %w", cut, err)
	}
	w.prevHash = prev
	res, err := tx.ExecContext(ctx, `DELETE FROM audit_entries WHERE seq <= $1`, cut)
	if err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	if w.entries, err = res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("prune audit log: %w", err)
	}
	w.sigAlg, w.publicKey, w.signature = "", []byte{}, []byte{}
	if l.signer != nil {
		if w.signature, err = l.signer.sign(pruneMessage(w)); err != nil {
			return 0, fmt.Errorf("sign audit prune record: %w", err)
		}
		w.sigAlg, w.publicKey = l.signer.alg, l.signer.pub
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_prunes (first_seq, prev_hash, pruned_us, entries, sig_alg, public_key, signature)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, w.firstSeq, []byte(w.prevHash), w.prunedUS, w.entries, w.sigAlg, w.publicKey, w.signature)
	if err != nil {
		return 0, fmt.Errorf("record audit prune watermark: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit audit prune: %w", err)
	}
	return w.entries, nil
}
