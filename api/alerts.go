package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/fault"
)

func (s *Server) listAlerts(c *gin.Context) {
	if s.cfg.Alerts == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway runs no detectors"))
		return
	}
	as, err := s.cfg.Alerts.List(c.Request.Context(), c.Query("state"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"alerts": as})
}

func (s *Server) ackAlert(c *gin.Context) {
	p := person(c)
	if s.cfg.Alerts == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway runs no detectors"))
		return
	}
	if err := s.cfg.Alerts.Acknowledge(c.Request.Context(), c.Param("id"), p.ID); err != nil {
		s.refuse(c, p, "alert.ack", err)
		return
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "alert.ack", Outcome: "ok", Detail: detail(map[string]any{"alert_id": c.Param("id")})})
	c.JSON(http.StatusOK, gin.H{"id": c.Param("id"), "state": "acknowledged"})
}

func (s *Server) openIncident(c *gin.Context) {
	p := person(c)
	var body struct {
		Summary string `json:"summary"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "incident.open", badJSON(err))
		return
	}
	if s.cfg.Alerts == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway runs no detectors"))
		return
	}
	id, err := s.cfg.Alerts.OpenIncident(c.Request.Context(), c.Param("id"), p.ID, body.Summary)
	if err != nil {
		s.refuse(c, p, "incident.open", err)
		return
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "incident.open", Outcome: "ok", Detail: detail(map[string]any{"alert_id": c.Param("id"), "incident_id": id, "summary": body.Summary})})
	c.JSON(http.StatusCreated, gin.H{"incident_id": id, "alert_id": c.Param("id")})
}
