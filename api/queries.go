package api

import (
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/release"
)

// postQuery decodes a question, hands it to the release use case and sends
// the answer in the shape the caller asked for (see formats.go).
func (s *Server) postQuery(c *gin.Context) {
	ctx := c.Request.Context()
	p := person(c)
	media, err := answerFormat(c)
	if err != nil {
		s.refuse(c, p, "query", err)
		return
	}
	var body struct {
		release.Request
		DryRun bool `json:"dry_run"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "query", badJSON(err))
		return
	}
	if body.DryRun {
		// Refused rather than ignored: ignoring it would run the query and
		// spend the budget of a caller who asked for an estimate.
		s.refuse(c, p, "query", fault.E(fault.Invalid, "dry_run is not offered by this gateway yet; nothing was run or spent; drop \"dry_run\" to run the query"))
		return
	}
	req := body.Request
	req.TokenID = tokenOf(ctx)
	res, err := s.cfg.Release.Answer(ctx, p, req)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !res.Cached {
		s.metrics.epsilon.WithLabelValues(strings.Join(res.Datasets, ",")).Add(res.Answer.Privacy.Epsilon)
	}
	if err := writeAnswer(c, media, res); err != nil {
		s.fail(c, err)
	}
}

func badJSON(err error) error {
	if strings.Contains(err.Error(), "too large") {
		return fault.Wrap(fault.TooLarge, err, "request body is too large")
	}
	return fault.Wrap(fault.Invalid, err, "the body must be JSON like {\"sql\": \"SELECT ...\", \"epsilon\": 0.1}")
}
