package api

// The console's sessions: a person signs in with their token once, and the
// browser then calls this same API with an HttpOnly session cookie and the
// session's CSRF token in the X-CSRF-Token header. A cookie without the
// header authorizes nothing, so a page on another site cannot act with it.
// The session resolves to the person's own token, so roles, refusals and
// audit are exactly those of a bearer call.

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/console"
	"github.com/hospital/gateway/fault"
)

// mountConsole serves the console's pages at / and /console/, and the
// session endpoints that sign people in and out.
func (s *Server) mountConsole(g *gin.Engine) {
	s.sessions = console.NewSessions(console.SessionConfig{TTL: s.cfg.SessionTTL, Idle: s.cfg.SessionIdle})
	con, err := console.New(console.Config{Sessions: s.sessions, Who: s.consolePerson, Location: s.cfg.Location})
	if err != nil {
		// The templates are embedded and fixed at build time; the
		// console's tests parse them.
		panic(err)
	}
	page := gin.WrapH(con)
	g.GET("/", page)
	g.GET("/console/*path", page)
	g.POST("/v1/session", s.limitBody, s.signIn)
	g.GET("/v1/session", s.limitBody, s.authenticate, s.getSession)
	g.DELETE("/v1/session", s.limitBody, s.authenticate, s.signOut)
}

func (s *Server) consolePerson(ctx context.Context, token string) (console.Person, error) {
	p, _, err := s.cfg.Store.AuthenticateToken(ctx, token)
	if err != nil {
		return console.Person{}, err
	}
	out := console.Person{ID: p.ID, Name: p.Name, Org: p.Org.Name}
	for _, r := range p.Roles {
		out.Roles = append(out.Roles, string(r))
	}
	return out, nil
}

// credential is the token a request authenticates with: its bearer token,
// or the token behind its console session when it carries the session's
// cookie and CSRF header.
func (s *Server) credential(c *gin.Context) (string, error) {
	h := c.GetHeader("Authorization")
	ck, cookieErr := c.Cookie(console.CookieName)
	if h != "" || cookieErr != nil || ck == "" {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			return "", fault.E(fault.Unauthenticated, "send Authorization: Bearer TOKEN, or sign in to the console")
		}
		return strings.TrimSpace(token), nil
	}
	sess, ok := s.sessions.Lookup(ck)
	if !ok {
		return "", fault.E(fault.Unauthenticated, "the console session has expired or ended; sign in again")
	}
	if !sess.CheckCSRF(c.GetHeader(console.CSRFHeader)) {
		return "", fault.E(fault.Forbidden, "a console request must carry the session's %s header; reload the page", console.CSRFHeader)
	}
	return sess.Token, nil
}

// signIn exchanges a token for a console session. It takes JSON only, and
// refuses a request that another site's page sent, so that no page can
// sign a visitor in under someone else's name.
func (s *Server) signIn(c *gin.Context) {
	console.SecurityHeaders(c.Writer.Header())
	if c.ContentType() != "application/json" {
		s.refuseAnonymous(c, "session.open", catalog.Person{}, "", fault.E(fault.Invalid, "send the token as JSON: {\"token\": \"...\"}"))
		return
	}
	if o := c.GetHeader("Origin"); o != "" && !sameOrigin(o, c.Request) {
		s.refuseAnonymous(c, "session.open", catalog.Person{}, "", fault.E(fault.Forbidden, "sign in from the console's own page"))
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := c.ShouldBindJSON(&body); err != nil || strings.TrimSpace(body.Token) == "" {
		s.refuseAnonymous(c, "session.open", catalog.Person{}, "", fault.E(fault.Invalid, "send the token as JSON: {\"token\": \"...\"}"))
		return
	}
	token := strings.TrimSpace(body.Token)
	p, tokenID, err := s.cfg.Store.AuthenticateToken(c.Request.Context(), token)
	if err != nil {
		s.refuseAnonymous(c, "session.open", p, tokenID, err)
		return
	}
	sess := s.sessions.Create(token)
	http.SetCookie(c.Writer, &http.Cookie{
		Name: console.CookieName, Value: sess.ID, Path: "/", MaxAge: int(s.sessions.TTL() / time.Second),
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	ctx := withToken(c.Request.Context(), tokenID)
	s.audit(ctx, audit.Entry{Actor: p.ID, Role: roleText(p), Action: "session.open", Outcome: "ok",
		Detail: detail(map[string]any{"expires_at": sess.Expires})})
	c.JSON(http.StatusCreated, sessionBody(p, sess))
}

// getSession names the caller and, for a console session, its CSRF token
// and end.
func (s *Server) getSession(c *gin.Context) {
	p := person(c)
	var sess console.Session
	if ck, err := c.Cookie(console.CookieName); err == nil && c.GetHeader("Authorization") == "" {
		sess, _ = s.sessions.Lookup(ck)
	}
	c.JSON(http.StatusOK, sessionBody(p, sess))
}

// signOut ends the caller's console session.
func (s *Server) signOut(c *gin.Context) {
	p := person(c)
	ck, err := c.Cookie(console.CookieName)
	if err != nil || c.GetHeader("Authorization") != "" {
		s.refuse(c, p, "session.close", fault.E(fault.Invalid, "there is no console session to end; bearer tokens are revoked with POST /v1/tokens/{id}/revoke"))
		return
	}
	s.sessions.Delete(ck)
	http.SetCookie(c.Writer, &http.Cookie{Name: console.CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode})
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "session.close", Outcome: "ok"})
	c.JSON(http.StatusOK, gin.H{"signed_out": true})
}

func sessionBody(p catalog.Person, sess console.Session) gin.H {
	out := gin.H{"person": p.ID, "name": p.Name, "roles": p.Roles}
	if sess.ID != "" {
		out["csrf_token"] = sess.CSRF
		out["expires_at"] = sess.Expires
	}
	return out
}

// sameOrigin reports whether the Origin header o names the host r was sent to.
func sameOrigin(o string, r *http.Request) bool {
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
