package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// Export is an export of the log over a period, signed by the gateway so
// that an outside reviewer can check it with the public key alone: every
// entry's hash is recomputed, the entries must chain, and the signature
// covers the whole body.
type Export struct {
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Generated time.Time `json:"generated"`
	Entries   []Entry   `json:"entries"`
	PublicKey string    `json:"public_key"`
	Signature string    `json:"signature"`
}

// maxReportEntries bounds one export; export longer periods in parts.
const maxReportEntries = 100000

// SignedReport exports the entries with from <= time < to, signed.
func (l *Log) SignedReport(ctx context.Context, from, to time.Time) (Export, error) {
	if l.cfg.Signer == nil {
		return Export{}, errors.New("this log has no signing key")
	}
	r := Export{From: from.UTC(), To: to.UTC(), Generated: l.cfg.Now().UTC(), Entries: []Entry{}}
	after := int64(0)
	for {
		page, err := l.List(ctx, Filter{From: from, To: to, AfterSeq: after, Limit: 10000})
		if err != nil {
			return Export{}, err
		}
		r.Entries = append(r.Entries, page...)
		if len(page) < 10000 {
			break
		}
		if len(r.Entries) >= maxReportEntries {
			return Export{}, fmt.Errorf("the period holds more than %d entries; export it in parts", maxReportEntries)
		}
		after = page[len(page)-1].Seq
	}
	pub, err := smx509.MarshalPKIXPublicKey(&l.cfg.Signer.PublicKey)
	if err != nil {
		return Export{}, fmt.Errorf("encode public key: %w", err)
	}
	r.PublicKey = hex.EncodeToString(pub)
	body, err := reportBody(r)
	if err != nil {
		return Export{}, err
	}
	sig, err := l.cfg.Signer.SignWithSM2(rand.Reader, nil, body)
	if err != nil {
		return Export{}, fmt.Errorf("sign report: %w", err)
	}
	r.Signature = hex.EncodeToString(sig)
	return r, nil
}

// reportBody is what the signature covers: the report without its signature.
func reportBody(r Export) ([]byte, error) {
	r.Signature = ""
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode report: %w", err)
	}
	return b, nil
}

// VerifyExport checks a report: the signature against pub (the gateway's
// audit public key, obtained out of band), each entry's hash, and the links
// between consecutive entries.
func VerifyExport(r Export, pub *ecdsa.PublicKey) error {
	body, err := reportBody(r)
	if err != nil {
		return err
	}
	sig, err := hex.DecodeString(r.Signature)
	if err != nil || !sm2.VerifyASN1WithSM2(pub, nil, body, sig) {
		return errors.New("the report's signature does not verify: it was altered or not signed by this gateway")
	}
	for i, e := range r.Entries {
		h, err := digest(e)
		if err != nil || h != e.Hash {
			return fmt.Errorf("entry %d: hash mismatch", e.Seq)
		}
		if i > 0 {
			prev := r.Entries[i-1]
			if e.Seq == prev.Seq+1 && e.PrevHash != prev.Hash {
				return fmt.Errorf("entry %d: does not chain to entry %d", e.Seq, prev.Seq)
			}
		}
	}
	return nil
}

// CSV renders the report's entries as CSV, ending with a comment line that
// carries an SM2 signature over everything before it.
func (l *Log) CSV(r Export) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"seq", "time", "actor", "role", "action", "dataset", "grade", "outcome", "detail", "retain_until", "algorithm", "prev_hash", "hash"})
	for _, e := range r.Entries {
		w.Write([]string{strconv.FormatInt(e.Seq, 10), e.Time.Format(timeFormat), e.Actor, e.Role, e.Action, e.Dataset, e.Grade, e.Outcome,
			string(e.Detail), e.RetainUntil.Format(timeFormat), e.Algorithm, e.PrevHash, e.Hash})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("write csv: %w", err)
	}
	sig, err := l.cfg.Signer.SignWithSM2(rand.Reader, nil, buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("sign csv: %w", err)
	}
	fmt.Fprintf(&buf, "# sm2-signature: %s\n", hex.EncodeToString(sig))
	return buf.Bytes(), nil
}

// VerifyCSV checks a CSV export's signature line and recomputes each row's
// hash.
func VerifyCSV(b []byte, pub *ecdsa.PublicKey) error {
	i := bytes.LastIndex(b, []byte("# sm2-signature: "))
	if i < 0 {
		return errors.New("no signature line")
	}
	sig, err := hex.DecodeString(strings.TrimSpace(string(b[i+len("# sm2-signature: "):])))
	if err != nil || !sm2.VerifyASN1WithSM2(pub, nil, b[:i], sig) {
		return errors.New("the export's signature does not verify: it was altered or not signed by this gateway")
	}
	rows, err := csv.NewReader(bytes.NewReader(b[:i])).ReadAll()
	if err != nil {
		return fmt.Errorf("read csv: %w", err)
	}
	for _, row := range rows[1:] {
		seq, _ := strconv.ParseInt(row[0], 10, 64)
		t, _ := time.Parse(timeFormat, row[1])
		ru, _ := time.Parse(timeFormat, row[9])
		e := Entry{Seq: seq, Time: t, Actor: row[2], Role: row[3], Action: row[4], Dataset: row[5], Grade: row[6], Outcome: row[7],
			Detail: json.RawMessage(row[8]), RetainUntil: ru, Algorithm: row[10], PrevHash: row[11], Hash: row[12]}
		if h, err := digest(e); err != nil || h != e.Hash {
			return fmt.Errorf("row %d: hash mismatch", seq)
		}
	}
	return nil
}
