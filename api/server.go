// Package api is the gateway's REST interface (gin). It authenticates every
// call with a bearer token, checks the caller's roles, and hands work to the
// packages below it: sandbox to vet SQL, privacy to protect answers, catalog
// for datasets, grants and budgets, audit to record everything. It is the one
// place where error kinds become HTTP statuses and the contract's codes.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
)

// Config wires the server to the rest of the gateway.
type Config struct {
	Store  *catalog.Store
	Engine *engine.Engine
	Audit  *audit.Log
	Log    *slog.Logger
	// Limits bound each query; QueryTimeout is its wall-clock limit.
	Limits       privacy.Limits
	QueryTimeout time.Duration
	// MaxBody caps request bodies in bytes; MaxUpload caps dataset uploads.
	MaxBody   int64
	MaxUpload int64
	// Registrar, when set, lets stewards register datasets over the API.
	Registrar *catalog.Registrar
	// GradeRules bound every dataset's policy by its grade; nil means
	// catalog.DefaultGradeRules.
	GradeRules catalog.GradeRules
	// Signer, when set, signs a receipt for every released answer.
	Signer *sm2.PrivateKey
	// Alerts, when set, watches query outcomes for abnormal use.
	Alerts *alerts.Alerter
	// Quota, when set, checks and measures the Article 11 quota.
	Quota *quota.Tracker
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	engine  *gin.Engine
	metrics *metrics
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = 4 << 30
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	gin.SetMode(gin.ReleaseMode)
	g := gin.New()
	g.Use(gin.Recovery())
	s := &Server{cfg: cfg, engine: g, metrics: newMetrics()}
	g.Use(s.metrics.middleware)
	g.GET("/metrics", s.metrics.handler())
	g.NoRoute(func(c *gin.Context) {
		s.fail(c, fault.E(fault.NotFound, "no such endpoint %s %s", c.Request.Method, c.Request.URL.Path))
	})
	g.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	g.GET("/v1/openapi.json", s.openAPI)

	v1 := g.Group("/v1", s.limitBody, s.authenticate)
	v1.POST("/queries", s.require(catalog.Researcher), s.postQuery)
	v1.GET("/budgets", s.require(catalog.Researcher, catalog.Auditor), s.getBudgets)
	v1.GET("/datasets", s.getDatasets)
	v1.POST("/datasets", s.require(catalog.Steward), s.postDataset)
	v1.POST("/datasets/upload", s.require(catalog.Steward), s.uploadDataset)
	v1.POST("/datasets/:name/grade", s.require(catalog.Steward), s.confirmGrade)
	v1.GET("/catalog/report", s.require(catalog.Steward, catalog.Approver, catalog.Auditor), s.getReport)
	v1.POST("/access-requests", s.require(catalog.Researcher), s.postRequest)
	v1.GET("/access-requests", s.listRequests)
	v1.GET("/access-requests/:id", s.getRequest)
	v1.POST("/access-requests/:id/approve", s.require(catalog.Steward), s.approveRequest)
	v1.POST("/access-requests/:id/verify", s.require(catalog.Approver), s.verifyRequest)
	v1.POST("/access-requests/:id/reject", s.require(catalog.Steward, catalog.Approver), s.rejectRequest)
	v1.POST("/grants/:id/revoke", s.require(catalog.Steward, catalog.Approver), s.revokeGrant)
	v1.GET("/quota", s.require(catalog.Auditor, catalog.Steward), s.getQuota)
	v1.POST("/quota/risk-assessments", s.require(catalog.Approver), s.postAssessment)
	v1.GET("/people", s.require(catalog.Admin, catalog.Auditor), s.listPeople)
	v1.POST("/people", s.require(catalog.Admin), s.postPerson)
	v1.POST("/people/:id/roles", s.require(catalog.Admin), s.setRoles)
	v1.POST("/people/:id/deactivate", s.require(catalog.Admin), s.setActive(false))
	v1.POST("/people/:id/activate", s.require(catalog.Admin), s.setActive(true))
	v1.POST("/people/:id/tokens", s.require(catalog.Admin), s.issueToken)
	v1.GET("/people/:id/tokens", s.require(catalog.Admin, catalog.Auditor), s.listTokens)
	v1.POST("/tokens/:id/revoke", s.require(catalog.Admin), s.revokeToken)
	v1.POST("/tokens/:id/rotate", s.require(catalog.Admin), s.rotateToken)
	v1.POST("/orgs/:id/export-assessment", s.require(catalog.Approver), s.postExportAssessment)
	v1.GET("/alerts", s.require(catalog.Auditor), s.listAlerts)
	v1.POST("/alerts/:id/ack", s.require(catalog.Auditor), s.ackAlert)
	v1.POST("/alerts/:id/incident", s.require(catalog.Auditor), s.openIncident)
	v1.POST("/receipts/verify", s.verifyReceipt)
	v1.GET("/audit", s.require(catalog.Auditor), s.getAudit)
	v1.GET("/audit/verify", s.require(catalog.Auditor), s.getAuditVerify)
	v1.GET("/audit/export", s.require(catalog.Auditor), s.getExport)
	v1.GET("/grants/:id/history", s.getGrantHistory)
	return s
}

// Routes lists the server's routes as "METHOD /path".
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.engine.Routes() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

const personKey = "person"

func person(c *gin.Context) catalog.Person {
	p, _ := c.Get(personKey)
	return p.(catalog.Person)
}

func (s *Server) limitBody(c *gin.Context) {
	limit := s.cfg.MaxBody
	if c.FullPath() == "/v1/datasets/upload" {
		limit = s.cfg.MaxUpload
	}
	if c.Request.ContentLength > limit {
		s.fail(c, fault.E(fault.TooLarge, "request body is %d bytes; the limit is %d", c.Request.ContentLength, limit))
		c.Abort()
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
	c.Next()
}

func (s *Server) authenticate(c *gin.Context) {
	h := c.GetHeader("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		s.refuse(c, catalog.Person{}, "auth", fault.E(fault.Unauthenticated, "send Authorization: Bearer TOKEN"))
		c.Abort()
		return
	}
	p, err := s.cfg.Store.Authenticate(c.Request.Context(), strings.TrimSpace(token))
	if err != nil {
		s.refuse(c, catalog.Person{}, "auth", err)
		c.Abort()
		return
	}
	c.Set(personKey, p)
	c.Next()
	// Reads are audited too (Art. 12): who looked at budgets, datasets,
	// quotas or the log itself. Changes and queries audit themselves, and
	// refusals are audited where they are made.
	if c.Request.Method == http.MethodGet && c.Writer.Status() < 400 {
		s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "read", Outcome: "ok",
			Detail: detail(map[string]any{"path": c.Request.URL.Path, "query": c.Request.URL.RawQuery})})
	}
}

// require lets the call through when the caller holds one of roles.
func (s *Server) require(roles ...catalog.PersonRole) gin.HandlerFunc {
	return func(c *gin.Context) {
		p := person(c)
		for _, r := range roles {
			if p.Has(r) {
				c.Next()
				return
			}
		}
		s.refuse(c, p, "authorize", fault.E(fault.Forbidden, "this call needs one of the roles %v; you hold %v", roles, p.Roles))
		c.Abort()
	}
}

func invalid(format string, args ...any) error { return fault.E(fault.Invalid, format, args...) }

// errorBody is the contract's error shape.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// fail writes err as the contract's error JSON.
func (s *Server) fail(c *gin.Context, err error) {
	k := fault.KindOf(err)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		k, err = fault.TooLarge, fault.E(fault.TooLarge, "request body is over the %d-byte limit", s.cfg.MaxBody)
	}
	if k == fault.Internal {
		s.cfg.Log.Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	}
	var body errorBody
	body.Error.Code = k.Code()
	body.Error.Message = fault.Message(err)
	c.JSON(k.Status(), body)
}

// refuse audits a refusal, then writes it.
func (s *Server) refuse(c *gin.Context, p catalog.Person, action string, err error) {
	s.audit(c.Request.Context(), audit.Entry{
		Actor: p.ID, Role: roleText(p), Action: action, Outcome: fault.KindOf(err).Code(),
		Detail: detail(map[string]any{"path": c.Request.URL.Path, "method": c.Request.Method, "message": fault.Message(err)}),
	})
	s.fail(c, err)
}

func roleText(p catalog.Person) string {
	var rs []string
	for _, r := range p.Roles {
		rs = append(rs, string(r))
	}
	return strings.Join(rs, ",")
}

// audit appends an entry; a failure is logged and reported by the caller's
// flow where the entry guards a release (see queries.go).
func (s *Server) audit(ctx context.Context, e audit.Entry) error {
	if s.cfg.Audit == nil {
		return nil
	}
	if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		s.cfg.Log.Error("audit append failed", "action", e.Action, "err", err)
		return err
	}
	return nil
}
