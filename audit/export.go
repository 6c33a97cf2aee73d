package audit

import (
	"bytes"
	"context"
	"crypto"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Export is the log over a period, signed so that an outside reviewer can
// check it with the gateway's public key alone: the signature covers the
// whole body, every entry's hash is recomputed, and consecutive entries
// must chain.
type Export struct {
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Generated time.Time `json:"generated"`
	Entries   []Entry   `json:"entries"`
	// SignatureAlgorithm names the signature scheme, such as "sm2-sm3".
	SignatureAlgorithm string `json:"signature_algorithm"`
	// PublicKey is the signer's key, hex of PKIX DER.
	PublicKey string `json:"public_key"`
	// Signature is hex, over the export's JSON with Signature empty.
	Signature string `json:"signature"`
}

// maxExportEntries bounds one export; export longer periods in parts.
const maxExportEntries = 100000

// SignedReport exports the entries with from <= Time < to, signed with the
// log's key.
func (l *Log) SignedReport(ctx context.Context, from, to time.Time) (Export, error) {
	if l.signer == nil {
		return Export{}, ErrNoSigner
	}
	r := Export{From: from.UTC(), To: to.UTC(), Generated: l.cfg.Now().UTC(), Entries: []Entry{},
		SignatureAlgorithm: l.signer.alg, PublicKey: hex.EncodeToString(l.signer.pub)}
	const page = 10000
	for after := int64(0); ; {
		es, err := l.List(ctx, Filter{From: from, To: to, AfterSeq: after, Limit: page})
		if err != nil {
			return Export{}, err
		}
		r.Entries = append(r.Entries, es...)
		if len(r.Entries) > maxExportEntries {
			return Export{}, fmt.Errorf("the period holds more than %d audit entries: export it in parts", maxExportEntries)
		}
		if len(es) < page {
			break
		}
		after = es[len(es)-1].Seq
	}
	body, err := exportBody(r)
	if err != nil {
		return Export{}, err
	}
	sig, err := l.signer.sign(body)
	if err != nil {
		return Export{}, fmt.Errorf("sign audit export: %w", err)
	}
	r.Signature = hex.EncodeToString(sig)
	return r, nil
}

// exportBody is what an export's signature covers.
func exportBody(r Export) ([]byte, error) {
	r.Signature = ""
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode audit export: %w", err)
	}
	return b, nil
}

// VerifyExport checks an export against pub, the gateway's public key
// obtained out of band: its signature, each entry's hash, and the links
// between consecutive entries.
func VerifyExport(r Export, pub crypto.PublicKey) error {
	v, err := newVerifier(pub)
	if err != nil {
		return fmt.Errorf("verify audit export: %w", err)
	}
	if v.trusted == nil {
		return errors.New("verify audit export: no public key given")
	}
	body, err := exportBody(r)
	if err != nil {
		return err
	}
	key, err1 := hex.DecodeString(r.PublicKey)
	sig, err2 := hex.DecodeString(r.Signature)
	if err1 != nil || err2 != nil {
		return errors.New("audit export has a malformed key or signature")
	}
	if why := v.check(r.SignatureAlgorithm, key, body, sig); why != "" {
		return fmt.Errorf("audit export's signature: %s: it was altered or not signed by this gateway", why)
	}
	return checkEntries(r.Entries)
}

// checkEntries recomputes each entry's hash and checks that consecutive
// entries chain.
func checkEntries(es []Entry) error {
	for i, e := range es {
		// The detail may have been re-encoded on the way (HTML escaping,
		// say); its canonical form is what was hashed.
		d, err := canonicalDetail(e.Detail)
		if err != nil {
			return fmt.Errorf("audit entry %d: %w", e.Seq, err)
		}
		e.Detail = d
		h, err := entryHash(e)
		if err != nil || !bytes.Equal(h, e.Hash) {
			return fmt.Errorf("audit entry %d: hash mismatch: entry edited", e.Seq)
		}
		if i > 0 && e.Seq == es[i-1].Seq+1 && !bytes.Equal(e.PrevHash, es[i-1].Hash) {
			return fmt.Errorf("audit entry %d: does not chain to entry %d", e.Seq, es[i-1].Seq)
		}
	}
	return nil
}

// csvColumns names the CSV export's columns.
const csvColumns = "seq,time,actor,role,action,dataset,grade,outcome,detail,retain_until,algorithm,prev_hash,hash"

// csvSignaturePrefix starts the CSV's last line, which signs everything
// before it.
const csvSignaturePrefix = "# signature: "

// CSV renders an export's entries as CSV, ending with a comment line that
// carries the algorithm, public key and a signature over everything before
// it.
func (l *Log) CSV(r Export) ([]byte, error) {
	if l.signer == nil {
		return nil, ErrNoSigner
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(strings.Split(csvColumns, ","))
	for _, e := range r.Entries {
		w.Write([]string{strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(time.RFC3339Nano), e.Actor, e.Role, e.Action,
			e.Dataset, e.Grade, e.Outcome, string(e.Detail), e.RetainUntil.UTC().Format(time.RFC3339Nano), e.Algorithm,
			e.PrevHash.String(), e.Hash.String()})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("write audit csv: %w", err)
	}
	sig, err := l.signer.sign(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("sign audit csv: %w", err)
	}
	fmt.Fprintf(&buf, "%s%s %x %x\n", csvSignaturePrefix, l.signer.alg, l.signer.pub, sig)
	return buf.Bytes(), nil
}

// VerifyCSV checks a CSV export against pub, the gateway's public key: the
// signature line, and each row's hash and link to the row before.
func VerifyCSV(b []byte, pub crypto.PublicKey) error {
	v, err := newVerifier(pub)
	if err != nil {
		return fmt.Errorf("verify audit csv: %w", err)
	}
	if v.trusted == nil {
		return errors.New("verify audit csv: no public key given")
	}
	i := bytes.LastIndex(b, []byte("\n"+csvSignaturePrefix))
	if i < 0 {
		return errors.New("audit csv has no signature line")
	}
	body := b[:i+1]
	f := strings.Fields(string(b[i+1+len(csvSignaturePrefix):]))
	if len(f) != 3 {
		return errors.New("audit csv has a malformed signature line")
	}
	key, err1 := hex.DecodeString(f[1])
	sig, err2 := hex.DecodeString(f[2])
	if err1 != nil || err2 != nil {
		return errors.New("audit csv has a malformed signature line")
	}
	if why := v.check(f[0], key, body, sig); why != "" {
		return fmt.Errorf("audit csv's signature: %s: it was altered or not signed by this gateway", why)
	}
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		return fmt.Errorf("read audit csv: %w", err)
	}
	if len(rows) == 0 {
		return errors.New("audit csv has no header")
	}
	es := make([]Entry, 0, len(rows)-1)
	for n, row := range rows[1:] {
		e, err := entryFromCSV(row)
		if err != nil {
			return fmt.Errorf("audit csv row %d: %w", n+1, err)
		}
		es = append(es, e)
	}
	return checkEntries(es)
}

func entryFromCSV(row []string) (Entry, error) {
	if want := strings.Count(csvColumns, ",") + 1; len(row) != want {
		return Entry{}, fmt.Errorf("%d fields, want %d", len(row), want)
	}
	seq, err := strconv.ParseInt(row[0], 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("seq: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, row[1])
	if err != nil {
		return Entry{}, fmt.Errorf("time: %w", err)
	}
	ru, err := time.Parse(time.RFC3339Nano, row[9])
	if err != nil {
		return Entry{}, fmt.Errorf("retain_until: %w", err)
	}
	e := Entry{Seq: seq, Time: t, Actor: row[2], Role: row[3], Action: row[4], Dataset: row[5], Grade: row[6],
		Outcome: row[7], Detail: json.RawMessage(row[8]), RetainUntil: ru, Algorithm: row[10]}
	if err := e.PrevHash.UnmarshalText([]byte(row[11])); err != nil {
		return Entry{}, err
	}
	if err := e.Hash.UnmarshalText([]byte(row[12])); err != nil {
		return Entry{}, err
	}
	return e, nil
}
