// Package api is the gateway's REST interface (gin). It authenticates every
// call with a bearer token, checks the caller's roles, and hands work to the
// packages below it: sandbox to vet SQL, privacy to protect answers, catalog
// for datasets, grants and budgets, audit to record everything. It is the one
// place where error kinds become HTTP statuses and the contract's codes.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/api/status"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/console"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/ingest"
	"github.com/hospital/gateway/quota"
	"github.com/hospital/gateway/release"
)

// Config wires the server to the rest of the gateway.
type Config struct {
	Store *catalog.Store
	Audit *audit.Log
	Log   *slog.Logger
	// MaxBody caps request bodies in bytes; MaxUpload caps dataset uploads.
	MaxBody   int64
	MaxUpload int64
	// Registrar, when set, lets stewards register datasets over the API.
	Registrar *ingest.Registrar
	// Alerts, when set, watches query outcomes for abnormal use.
	Alerts *alerts.Alerter
	// Quota, when set, checks and measures the Article 11 quota.
	Quota *quota.Tracker
	// Release answers researchers' questions (POST /v1/queries).
	Release *release.Service
	// AnonymousPerMinute caps, per client address, the requests a minute
	// that carry no valid token (enrolment included); over it they are
	// refused with rate_limited. Default 30.
	AnonymousPerMinute int
	// SessionTTL is a console session's longest life and SessionIdle how
	// long it lasts without a request (defaults 8 hours and 30 minutes).
	SessionTTL, SessionIdle time.Duration
	// Location is the time zone the console shows dates in (default
	// time.Local).
	Location *time.Location
}

// Server is the HTTP API.
type Server struct {
	cfg       Config
	engine    *gin.Engine
	metrics   *metrics
	anonymous *limiter
	sessions  *console.Sessions
}

// New builds the server and its routes.
func New(cfg Config) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = 4 << 30
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.AnonymousPerMinute <= 0 {
		cfg.AnonymousPerMinute = 30
	}
	gin.SetMode(gin.ReleaseMode)
	g := gin.New()
	g.Use(gin.Recovery())
	s := &Server{cfg: cfg, engine: g, metrics: newMetrics(), anonymous: newLimiter(cfg.AnonymousPerMinute, time.Minute, 10000)}
	g.Use(s.metrics.middleware)
	// Metrics name routes and datasets; only operators (admins) and
	// auditors read them here. MetricsHandler serves them on a separate
	// listener for a scraper that holds no token.
	g.GET("/metrics", s.limitBody, s.authenticate, s.require(catalog.Admin, catalog.Auditor), s.metrics.handler())
	g.NoRoute(func(c *gin.Context) {
		s.fail(c, fault.E(fault.NotFound, "no such endpoint %s %s", c.Request.Method, c.Request.URL.Path))
	})
	g.GET("/healthz", s.healthz)
	g.GET("/v1/openapi.json", s.openAPI)
	s.mountConsole(g)
	g.POST("/v1/enrol", s.limitBody, s.enrol)

	v1 := g.Group("/v1", s.limitBody, s.authenticate)
	v1.POST("/queries", s.require(catalog.Researcher), s.postQuery)
	v1.GET("/queries/:id", s.require(catalog.Researcher), s.getQuery)
	v1.GET("/budgets", s.require(catalog.Researcher, catalog.Auditor), s.getBudgets)
	v1.GET("/datasets", s.getDatasets)
	v1.POST("/datasets", s.require(catalog.Steward), s.postDataset)
	v1.POST("/datasets/upload", s.require(catalog.Steward), s.uploadDataset)
	v1.POST("/datasets/:name/grade", s.require(catalog.Steward), s.confirmGrade)
	v1.POST("/datasets/:name/policy", s.require(catalog.Steward), s.postPolicy)
	v1.POST("/datasets/:name/exact", s.require(catalog.Steward), s.postExact)
	v1.GET("/protection-changes", s.require(catalog.Steward, catalog.Approver, catalog.Auditor), s.listProtectionChanges)
	v1.POST("/protection-changes/:id/verify", s.require(catalog.Approver), s.verifyProtection)
	v1.POST("/protection-changes/:id/reject", s.require(catalog.Steward, catalog.Approver), s.rejectProtection)
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
	v1.GET("/people", s.require(catalog.Admin, catalog.Approver, catalog.Auditor), s.listPeople)
	v1.POST("/people", s.require(catalog.Admin), s.postPerson)
	v1.POST("/people/:id/roles", s.require(catalog.Admin), s.setRoles)
	v1.POST("/people/:id/deactivate", s.require(catalog.Admin), s.setActive(false))
	v1.POST("/people/:id/activate", s.require(catalog.Admin), s.setActive(true))
	v1.POST("/people/:id/enrolment", s.require(catalog.Admin), s.reenrol)
	v1.GET("/people/:id/tokens", s.require(catalog.Admin, catalog.Auditor), s.listTokens)
	v1.GET("/person-changes", s.require(catalog.Admin, catalog.Approver, catalog.Auditor), s.listChanges)
	v1.POST("/person-changes/:id/confirm", s.require(catalog.Approver), s.confirmChange)
	v1.POST("/person-changes/:id/reject", s.require(catalog.Approver), s.rejectChange)
	v1.POST("/tokens/:id/revoke", s.revokeToken)
	v1.POST("/tokens/:id/rotate", s.rotateToken)
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

// MetricsHandler serves the Prometheus metrics without a token, for a
// separate listen address that only the monitoring network reaches.
func (s *Server) MetricsHandler() http.Handler {
	g := gin.New()
	g.Use(gin.Recovery())
	g.GET("/metrics", s.metrics.handler())
	return g
}

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
	token, err := s.credential(c)
	if err != nil {
		s.refuseAnonymous(c, "auth", catalog.Person{}, "", err)
		c.Abort()
		return
	}
	p, tokenID, err := s.cfg.Store.AuthenticateToken(c.Request.Context(), token)
	if err != nil {
		s.refuseAnonymous(c, "auth", p, tokenID, err)
		c.Abort()
		return
	}
	c.Set(personKey, p)
	c.Request = c.Request.WithContext(withToken(c.Request.Context(), tokenID))
	c.Next()
	// Reads are audited too (Art. 12): who looked at budgets, datasets,
	// quotas or the log itself. Changes and queries audit themselves, and
	// refusals are audited where they are made.
	if c.Request.Method == http.MethodGet && c.Writer.Status() < 400 {
		s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "read", Outcome: "ok",
			Detail: detail(map[string]any{"path": clip(c.Request.URL.Path), "query": clip(c.Request.URL.RawQuery)})})
	}
}

// refuseAnonymous refuses a request that carries no valid credential. Such
// requests count against the caller's address: over the limit they are
// refused with rate_limited, and only the first of those in a window is
// audited. The entry names the person and token when the credential was
// known (revoked, or its holder deactivated).
func (s *Server) refuseAnonymous(c *gin.Context, action string, p catalog.Person, tokenID string, err error) {
	allowed, first := s.anonymous.allow(c.ClientIP())
	if !allowed {
		err = fault.E(fault.RateLimited, "too many requests without a valid token from %s; wait a minute", c.ClientIP())
		if !first {
			s.fail(c, err)
			return
		}
	}
	if tokenID != "" {
		c.Request = c.Request.WithContext(withToken(c.Request.Context(), tokenID))
	}
	s.refuse(c, p, action, err)
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
	if u := catalog.Unavailable(err); k == fault.Internal && u != nil {
		k, err = fault.StoreUnavailable, u
	}
	if k == fault.Internal || k == fault.StoreUnavailable {
		s.cfg.Log.Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "code", k.Code(), "err", err)
	}
	var body errorBody
	body.Error.Code = k.Code()
	body.Error.Message = fault.Message(err)
	c.JSON(status.Of(k), body)
}

// refuse audits a refusal, then writes it. The entry holds a fixed-size
// summary of what was asked, never the whole path.
func (s *Server) refuse(c *gin.Context, p catalog.Person, action string, err error) {
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	s.audit(c.Request.Context(), audit.Entry{
		Actor: p.ID, Role: roleText(p), Action: action, Outcome: fault.KindOf(err).Code(),
		Detail: detail(map[string]any{"route": route, "path": clip(c.Request.URL.Path), "path_bytes": len(c.Request.URL.Path),
			"method": clip(c.Request.Method), "message": clip(fault.Message(err))}),
	})
	s.fail(c, err)
}

// clipLen is the most of any caller-chosen text an audit entry keeps.
const clipLen = 200

// clip cuts s to clipLen bytes, on a rune boundary, marking the cut.
func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	cut := clipLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
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
	if _, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), stamp(ctx, e)); err != nil {
		s.cfg.Log.Error("audit append failed", "action", e.Action, "err", err)
		return err
	}
	return nil
}

type tokenKey struct{}

// withToken records, for the request's audit entries, the id of the token
// the request authenticated with.
func withToken(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, tokenKey{}, id)
}

// tokenOf is the id of the token the request authenticated with.
func tokenOf(ctx context.Context) string {
	id, _ := ctx.Value(tokenKey{}).(string)
	return id
}

// stamp adds to e's detail the id of the token the request used, so that
// every entry names the credential as well as the person.
func stamp(ctx context.Context, e audit.Entry) audit.Entry {
	id := tokenOf(ctx)
	if id == "" {
		return e
	}
	m := map[string]any{}
	if len(e.Detail) > 0 {
		if err := json.Unmarshal(e.Detail, &m); err != nil {
			m = map[string]any{"detail": string(e.Detail)}
		}
	}
	if _, ok := m["token_id"]; !ok {
		m["token_id"] = id
	}
	e.Detail = detail(m)
	return e
}

// detail is an audit entry's detail object.
func detail(m map[string]any) json.RawMessage {
	b, _ := json.Marshal(m)
	return b
}
