package audit

import (
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// Problem is the first place where the chain does not hold.
type Problem struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// Report is the result of a verification.
type Report struct {
	Entries            int64    `json:"entries"`
	FirstSeq           int64    `json:"first_seq"`
	Head               string   `json:"head"`
	SignedHeadsChecked int      `json:"signed_heads_checked"`
	FirstBad           *Problem `json:"first_bad,omitempty"`
}

// OK reports whether the chain verified.
func (r Report) OK() bool { return r.FirstBad == nil }

// Verify checks the whole chain and the signed heads against the log's own
// signing key (when it has one).
func (l *Log) Verify(ctx context.Context) (Report, error) {
	var pub *ecdsa.PublicKey
	if l.cfg.Signer != nil {
		pub = &l.cfg.Signer.PublicKey
	}
	return VerifyDB(ctx, l.db, pub)
}

const pageSize = 5000

// VerifyDB checks the chain in db: every entry's hash, the links between
// entries, sequence continuity from the prune watermark, and every signed
// head. With pub nil, heads are checked against the public key stored with
// them, which catches edits but not an attacker who re-signs with a key of
// their own; pass the gateway's public key to rule that out.
func VerifyDB(ctx context.Context, db *sql.DB, pub *ecdsa.PublicKey) (Report, error) {
	var rep Report
	expectSeq, prev := int64(1), zeroHash
	var wSeq int64
	var wHash string
	err := db.QueryRowContext(ctx, `SELECT first_seq, prev_hash FROM audit_watermark WHERE id = 1`).Scan(&wSeq, &wHash)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return rep, fmt.Errorf("read prune watermark: %w", err)
	default:
		expectSeq, prev = wSeq, wHash
	}
	rep.FirstSeq = expectSeq
	hashes := map[int64]string{}
	heads, err := loadHeads(ctx, db)
	if err != nil {
		return rep, err
	}
	for _, h := range heads {
		hashes[h.seq] = ""
	}
	after := expectSeq - 1
	for {
		rows, err := db.QueryContext(ctx, `SELECT `+entryCols+` FROM audit_entries WHERE seq > $1 ORDER BY seq LIMIT $2`, after, pageSize)
		if err != nil {
			return rep, fmt.Errorf("read audit entries: %w", err)
		}
		n := 0
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				rows.Close()
				return rep, fmt.Errorf("read audit entry: %w", err)
			}
			n++
			after = e.Seq
			if rep.FirstBad == nil {
				rep.FirstBad = check(e, expectSeq, prev)
			}
			if _, ok := hashes[e.Seq]; ok {
				hashes[e.Seq] = e.Hash
			}
			rep.Entries++
			expectSeq, prev, rep.Head = e.Seq+1, e.Hash, e.Hash
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return rep, fmt.Errorf("read audit entries: %w", err)
		}
		if n < pageSize {
			break
		}
	}
	for _, h := range heads {
		if rep.FirstBad != nil {
			break
		}
		rep.FirstBad = checkHead(h, hashes[h.seq], pub)
		rep.SignedHeadsChecked++
	}
	return rep, nil
}

func check(e Entry, expectSeq int64, prev string) *Problem {
	switch {
	case e.Seq != expectSeq:
		return &Problem{Seq: expectSeq, Reason: fmt.Sprintf("sequence gap: entry %d is missing (next present is %d); entries were deleted", expectSeq, e.Seq)}
	case e.PrevHash != prev:
		return &Problem{Seq: e.Seq, Reason: "previous-hash link broken: an earlier entry was edited, deleted or reordered"}
	}
	h, err := digest(e)
	if err != nil {
		return &Problem{Seq: e.Seq, Reason: err.Error()}
	}
	if h != e.Hash {
		return &Problem{Seq: e.Seq, Reason: "hash mismatch: the entry was edited"}
	}
	return nil
}

type head struct {
	seq            int64
	hash, sig, pub string
}

func loadHeads(ctx context.Context, db *sql.DB) ([]head, error) {
	rows, err := db.QueryContext(ctx, `SELECT seq, hash, signature, public_key FROM audit_heads ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("read signed heads: %w", err)
	}
	defer rows.Close()
	var out []head
	for rows.Next() {
		var h head
		if err := rows.Scan(&h.seq, &h.hash, &h.sig, &h.pub); err != nil {
			return nil, fmt.Errorf("read signed head: %w", err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

func checkHead(h head, chainHash string, pub *ecdsa.PublicKey) *Problem {
	if chainHash == "" {
		return &Problem{Seq: h.seq, Reason: "a signed head names an entry that is missing from the chain"}
	}
	if chainHash != h.hash {
		return &Problem{Seq: h.seq, Reason: "the chain differs from the signed head at this entry: entries up to here were rewritten"}
	}
	key := pub
	if key == nil {
		der, err := hex.DecodeString(h.pub)
		if err != nil {
			return &Problem{Seq: h.seq, Reason: "signed head has an unreadable public key"}
		}
		k, err := smx509.ParsePKIXPublicKey(der)
		if err != nil {
			return &Problem{Seq: h.seq, Reason: "signed head has an unreadable public key"}
		}
		ek, ok := k.(*ecdsa.PublicKey)
		if !ok {
			return &Problem{Seq: h.seq, Reason: "signed head's key is not an SM2 key"}
		}
		key = ek
	}
	sig, err := hex.DecodeString(h.sig)
	if err != nil || !sm2.VerifyASN1WithSM2(key, nil, headMessage(h.seq, h.hash), sig) {
		return &Problem{Seq: h.seq, Reason: "signature of the chain head does not verify: the head was forged"}
	}
	return nil
}
