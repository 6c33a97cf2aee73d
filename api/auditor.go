package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/fault"
)

// getAudit lists audit entries for auditors, filtered by actor, dataset,
// action, outcome and time (RFC 3339 from/to), paged by after_seq.
func (s *Server) getAudit(c *gin.Context) {
	log := s.cfg.Audit
	if log == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway keeps no audit log"))
		return
	}
	f := audit.Filter{Actor: c.Query("actor"), Dataset: c.Query("dataset"), Action: c.Query("action"), Outcome: c.Query("outcome")}
	var err error
	parseTime := func(name string) time.Time {
		v := c.Query(name)
		if v == "" || err != nil {
			return time.Time{}
		}
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			err = fault.E(fault.Invalid, "%s must be an RFC 3339 time such as 2026-01-01T00:00:00Z", name)
		}
		return t
	}
	f.From, f.To = parseTime("from"), parseTime("to")
	if v := c.Query("after_seq"); v != "" && err == nil {
		if f.AfterSeq, err = strconv.ParseInt(v, 10, 64); err != nil {
			err = fault.E(fault.Invalid, "after_seq must be a number")
		}
	}
	if v := c.Query("limit"); v != "" && err == nil {
		if f.Limit, err = strconv.Atoi(v); err != nil {
			err = fault.E(fault.Invalid, "limit must be a number")
		}
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	entries, err := log.List(c.Request.Context(), f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"entries": entries})
}

// getAuditVerify checks the whole chain and its signed heads.
func (s *Server) getAuditVerify(c *gin.Context) {
	log := s.cfg.Audit
	if log == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway keeps no audit log"))
		return
	}
	rep, err := log.Verify(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"intact": rep.OK(), "report": rep})
}

// getExport is a signed export of the audit log over a period, as JSON or
// CSV, that an outside reviewer checks with gateway audit check-export.
func (s *Server) getExport(c *gin.Context) {
	log := s.cfg.Audit
	if log == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway keeps no audit log"))
		return
	}
	from, err1 := time.Parse(time.RFC3339, c.Query("from"))
	to, err2 := time.Parse(time.RFC3339, c.Query("to"))
	if err1 != nil || err2 != nil || !from.Before(to) {
		s.fail(c, fault.E(fault.Invalid, "give the period as from and to, RFC 3339 times with from before to"))
		return
	}
	r, err := log.SignedReport(c.Request.Context(), from, to)
	if err != nil {
		s.fail(c, err)
		return
	}
	p := person(c)
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "audit.export", Outcome: "ok",
		Detail: detail(map[string]any{"from": from, "to": to, "entries": len(r.Entries), "format": c.Query("format")})})
	if c.Query("format") == "csv" {
		b, err := log.CSV(r)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.Data(http.StatusOK, "text/csv", b)
		return
	}
	c.JSON(http.StatusOK, r)
}
