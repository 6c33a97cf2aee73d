package api

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/fault"
)

// healthz answers 200 while the metadata store takes a test write, and 503
// unavailable, with what the operator should look at, while it does not:
// a gateway that cannot record budgets or audit entries cannot answer
// queries, and a load balancer should stop sending it any.
func (s *Server) healthz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Store.Probe(ctx); err != nil {
		if !fault.Is(err, fault.StoreUnavailable) {
			err = fault.Wrap(fault.StoreUnavailable, err, "the metadata store does not answer a test write; check the server log")
		}
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}
