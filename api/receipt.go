package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/sm3"
	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
)

// Receipt makes a released answer traceable and verifiable (Art. 9(4)): an
// SM3 digest of the answer signed with the gateway's SM2 key. Anyone holding
// an answer can ask POST /v1/receipts/verify whether it is exactly what the
// gateway released, and to whom; a copy whose numbers were edited fails.
type Receipt struct {
	QueryID   string    `json:"query_id"`
	GrantID   string    `json:"grant_id"`
	IssuedAt  time.Time `json:"issued_at"`
	Digest    string    `json:"digest"`
	Signature string    `json:"signature"`
}

// receiptBody is what the digest covers.
type receiptBody struct {
	QueryID  string          `json:"query_id"`
	GrantID  string          `json:"grant_id"`
	Grade    string          `json:"grade"`
	Columns  []engine.Column `json:"columns"`
	Rows     [][]any         `json:"rows"`
	Privacy  privacy.Report  `json:"privacy"`
	IssuedAt time.Time       `json:"issued_at"`
}

func digestOf(r queryResponse, issued time.Time) ([]byte, error) {
	// Round-trip the rows through JSON so that the digest is computed over
	// exactly what a holder of the answer has.
	b, err := json.Marshal(r.Rows)
	if err != nil {
		return nil, err
	}
	var rows [][]any
	if err := json.Unmarshal(b, &rows); err != nil {
		return nil, err
	}
	body, err := json.Marshal(receiptBody{r.QueryID, r.GrantID, string(r.Grade), r.Columns, rows, r.Privacy, issued.UTC()})
	if err != nil {
		return nil, err
	}
	h := sm3.Sum(body)
	return h[:], nil
}

// sign attaches a receipt to r.
func (s *Server) sign(r *queryResponse) error {
	if s.cfg.Signer == nil {
		return nil
	}
	issued := time.Now().UTC().Truncate(time.Millisecond)
	d, err := digestOf(*r, issued)
	if err != nil {
		return fmt.Errorf("digest answer: %w", err)
	}
	sig, err := s.cfg.Signer.SignWithSM2(rand.Reader, nil, d)
	if err != nil {
		return fmt.Errorf("sign answer: %w", err)
	}
	r.Receipt = &Receipt{QueryID: r.QueryID, GrantID: r.GrantID, IssuedAt: issued, Digest: hex.EncodeToString(d), Signature: hex.EncodeToString(sig)}
	return nil
}

// verifyReceipt checks an answer against its receipt.
func (s *Server) verifyReceipt(c *gin.Context) {
	var r queryResponse
	if err := c.ShouldBindJSON(&r); err != nil {
		s.fail(c, badJSON(err))
		return
	}
	if s.cfg.Signer == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway issues no receipts"))
		return
	}
	if r.Receipt == nil {
		s.fail(c, fault.E(fault.Invalid, "send the whole answer, with its receipt"))
		return
	}
	d, err := digestOf(r, r.Receipt.IssuedAt)
	if err != nil {
		s.fail(c, fault.Wrap(fault.Invalid, err, "the answer cannot be read"))
		return
	}
	sig, err := hex.DecodeString(r.Receipt.Signature)
	valid := err == nil && hex.EncodeToString(d) == r.Receipt.Digest && r.Receipt.QueryID == r.QueryID &&
		sm2.VerifyASN1WithSM2(&s.cfg.Signer.PublicKey, nil, d, sig)
	out := gin.H{"valid": valid}
	if valid {
		if g, err := s.cfg.Store.Grant(c.Request.Context(), r.GrantID); err == nil {
			out["researcher"], out["query_id"], out["issued_at"] = g.Researcher, r.QueryID, r.Receipt.IssuedAt
		}
	}
	c.JSON(http.StatusOK, out)
}
