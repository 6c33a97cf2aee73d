package release

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
)

// Receipt makes a released answer traceable and verifiable (Art. 9(4)): an
// SM3 digest of the answer signed with the gateway's SM2 key. Anyone holding
// an answer can ask whether it is exactly what the gateway released, and to
// whom; a copy whose numbers were edited fails.
type Receipt struct {
	QueryID   string    `json:"query_id"`
	GrantID   string    `json:"grant_id"`
	IssuedAt  time.Time `json:"issued_at"`
	Digest    string    `json:"digest"`
	Signature string    `json:"signature"`
}

// digest is the SM3 digest of what a receipt covers: the answer without
// its receipt, at the time of issue. The rows go through JSON first so that
// the digest is computed over exactly what a holder of the answer has.
func digest(a Answer, issued time.Time) ([]byte, error) {
	rows, err := asSent(a.Rows)
	if err != nil {
		return nil, err
	}
	intervals, err := asSent(a.Intervals)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(struct {
		QueryID  string    `json:"query_id"`
		GrantID  string    `json:"grant_id"`
		Grade    string    `json:"grade"`
		Columns  any       `json:"columns"`
		Rows     [][]any   `json:"rows"`
		Privacy  any       `json:"privacy"`
		IssuedAt time.Time `json:"issued_at"`
		// Answers from before intervals were released have none.
		Intervals [][]any `json:"intervals,omitempty"`
	}{a.QueryID, a.GrantID, string(a.Grade), a.Columns, rows, a.Privacy, issued.UTC(), intervals})
	if err != nil {
		return nil, err
	}
	h := sm3.Sum(body)
	return h[:], nil
}

// asSent is cells as a holder of the answer has them: through JSON.
func asSent(cells [][]any) ([][]any, error) {
	if cells == nil {
		return nil, nil
	}
	b, err := json.Marshal(cells)
	if err != nil {
		return nil, err
	}
	var out [][]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// sign attaches a receipt to a, when the service has a signing key.
func (s *Service) sign(a *Answer) error {
	if s.cfg.Signer == nil {
		return nil
	}
	issued := time.Now().UTC().Truncate(time.Millisecond)
	d, err := digest(*a, issued)
	if err != nil {
		return fmt.Errorf("digest answer: %w", err)
	}
	sig, err := s.cfg.Signer.SignWithSM2(rand.Reader, nil, d)
	if err != nil {
		return fmt.Errorf("sign answer: %w", err)
	}
	a.Receipt = &Receipt{QueryID: a.QueryID, GrantID: a.GrantID, IssuedAt: issued, Digest: hex.EncodeToString(d), Signature: hex.EncodeToString(sig)}
	return nil
}

// Signs reports whether the service issues receipts.
func (s *Service) Signs() bool { return s.cfg.Signer != nil }

// Verify reports whether a is exactly an answer this gateway released,
// receipt included.
func (s *Service) Verify(a Answer) (bool, error) {
	if s.cfg.Signer == nil || a.Receipt == nil {
		return false, nil
	}
	d, err := digest(a, a.Receipt.IssuedAt)
	if err != nil {
		return false, fmt.Errorf("digest answer: %w", err)
	}
	sig, err := hex.DecodeString(a.Receipt.Signature)
	return err == nil && hex.EncodeToString(d) == a.Receipt.Digest && a.Receipt.QueryID == a.QueryID &&
		sm2.VerifyASN1WithSM2(&s.cfg.Signer.PublicKey, nil, d, sig), nil
}
