package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/release"
)

// verifyReceipt checks an answer against its receipt.
func (s *Server) verifyReceipt(c *gin.Context) {
	var r release.Answer
	if err := c.ShouldBindJSON(&r); err != nil {
		s.fail(c, badJSON(err))
		return
	}
	if !s.cfg.Release.Signs() {
		s.fail(c, fault.E(fault.NotFound, "this gateway issues no receipts"))
		return
	}
	if r.Receipt == nil {
		s.fail(c, fault.E(fault.Invalid, "send the whole answer, with its receipt"))
		return
	}
	valid, err := s.cfg.Release.Verify(r)
	if err != nil {
		s.fail(c, fault.Wrap(fault.Invalid, err, "the answer cannot be read"))
		return
	}
	out := gin.H{"valid": valid}
	if valid {
		if g, err := s.cfg.Store.Grant(c.Request.Context(), r.GrantID); err == nil {
			out["researcher"], out["query_id"], out["issued_at"] = g.Researcher, r.QueryID, r.Receipt.IssuedAt
		}
	}
	c.JSON(http.StatusOK, out)
}
