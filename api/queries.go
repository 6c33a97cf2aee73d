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
	var req release.Request
	if err := c.ShouldBindJSON(&req); err != nil {
		s.refuse(c, p, "query", badJSON(err))
		return
	}
	req.TokenID = tokenOf(ctx)
	res, err := s.cfg.Release.Answer(ctx, p, req)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !res.Cached {
		s.metrics.epsilon.WithLabelValues(strings.Join(res.Datasets, ",")).Add(res.Epsilon)
	}
	for _, st := range res.Steps {
		s.metrics.steps.WithLabelValues(st.Name).Observe(st.Took.Seconds())
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
