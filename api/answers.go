package api

import (
	"encoding/json"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/fault"
)

// getQuery gives a researcher back an answer they already received: the
// history line and the stored answer, receipt included, exactly as it was
// released (a repeat gets the first release's answer, as it did then).
// Reading it spends nothing, since nothing new is released.
//
// Only the researcher the answer went to reads it. Auditors see every
// grant's history lines (what was asked, at what cost, with what outcome)
// but not the numbers: those were released under the grant's purpose to
// its holder, and an auditor reading them would widen who has the data.
// Anyone the researcher hands an answer to checks it at /v1/receipts/verify.
// Another person's query is not found, as if it did not exist.
func (s *Server) getQuery(c *gin.Context) {
	ctx := c.Request.Context()
	p := person(c)
	line, err := s.cfg.Store.Query(ctx, c.Param("id"))
	if err == nil && line.Researcher != p.ID {
		err = fault.E(fault.NotFound, "no query %s", c.Param("id"))
	}
	if err != nil {
		s.refuse(c, p, "query.read", err)
		return
	}
	if line.AnswerID == "" {
		s.fail(c, fault.E(fault.NotFound, "query %s released no answer (outcome %s); its history line is at /v1/grants/%s/history", line.ID, line.Outcome, line.GrantID))
		return
	}
	body, err := s.cfg.Store.ReleasedAnswer(ctx, line.GrantID, line.AnswerID)
	if err != nil {
		s.fail(c, err)
		return
	}
	var answer map[string]json.RawMessage
	if err := json.Unmarshal(body, &answer); err != nil {
		s.fail(c, fault.Wrap(fault.Internal, err, "the stored answer to %s cannot be read", line.ID))
		return
	}
	history, err := json.Marshal(line)
	if err != nil {
		s.fail(c, err)
		return
	}
	answer["history"] = history
	c.JSON(http.StatusOK, answer)
}
