// Package console is the gateway's web console: the pages that stewards,
// approvers, auditors and researchers use in a browser, served at / by the
// gateway itself.
//
// The console holds no power of its own. Its pages are html/template shells
// with labels in the reader's language; a small hand-written script
// (assets/console.js) fills them by calling the same REST API as every other
// client, so every read and change passes the same role checks and lands in
// the same audit log. Signing in exchanges a token for a session (see
// Sessions): the token stays on the server, the browser holds an HttpOnly,
// SameSite=Strict cookie, and the API accepts that cookie only together with
// the session's CSRF token in the X-CSRF-Token header.
//
// Everything the pages need is embedded in the binary. Charts are SVG drawn
// by the same script, so no third-party code is fetched or shipped. A
// Content-Security-Policy allows scripts, styles and connections from the
// gateway's own origin only, and no inline script.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

//go:embed assets templates i18n.json
var files embed.FS

// Person is who a session belongs to, as the pages show it.
type Person struct {
	ID, Name, Org string
	Roles         []string
}

// Config wires the console to the gateway.
type Config struct {
	Sessions *Sessions
	// Who resolves a session's token to its person, with the same checks
	// the API applies (revoked tokens and inactive people fail).
	Who func(ctx context.Context, token string) (Person, error)
	// Location is the time zone dates are shown in (default time.Local).
	Location *time.Location
}

// Console serves the pages and their assets.
type Console struct {
	cfg    Config
	pages  map[string]*template.Template
	labels map[string]map[string]string
	assets http.Handler
}

// pages a person may open; each role's own page comes first in its nav.
var rolePages = []string{"steward", "approver", "auditor", "researcher"}

// New parses the embedded templates.
func New(cfg Config) (*Console, error) {
	if cfg.Location == nil {
		cfg.Location = time.Local
	}
	c := &Console{cfg: cfg, pages: map[string]*template.Template{}}
	b, err := files.ReadFile("i18n.json")
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &c.labels); err != nil {
		return nil, fmt.Errorf("console labels: %w", err)
	}
	for _, name := range append([]string{"signin", "account"}, rolePages...) {
		t, err := template.ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console page %s: %w", name, err)
		}
		c.pages[name] = t
	}
	sub, err := fs.Sub(files, "assets")
	if err != nil {
		return nil, err
	}
	c.assets = http.StripPrefix("/console/assets/", http.FileServerFS(sub))
	return c, nil
}

// ContentSecurityPolicy is sent with every console response: the gateway's
// own scripts, styles and API only, no inline script, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// SecurityHeaders sets the console's protective headers on h.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// ServeHTTP serves / (the signed-in person's main page, or sign-in),
// /console/PAGE and /console/assets/.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	SecurityHeaders(w.Header())
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/console/assets/") {
		w.Header().Set("Cache-Control", "no-cache")
		c.assets.ServeHTTP(w, r)
		return
	}
	page := strings.TrimPrefix(r.URL.Path, "/console/")
	if r.URL.Path == "/" || r.URL.Path == "/console/" || r.URL.Path == "/console" {
		page = ""
	}
	if _, ok := c.pages[page]; page != "" && (!ok || page == "signin") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	p, sess, ok := c.signedIn(r)
	if !ok {
		if page != "" {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		c.render(w, r, "signin", Person{}, Session{})
		return
	}
	if page == "" {
		page = home(p)
	}
	c.render(w, r, page, p, sess)
}

func (c *Console) signedIn(r *http.Request) (Person, Session, bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil || c.cfg.Sessions == nil {
		return Person{}, Session{}, false
	}
	sess, ok := c.cfg.Sessions.Lookup(ck.Value)
	if !ok {
		return Person{}, Session{}, false
	}
	p, err := c.cfg.Who(r.Context(), sess.Token)
	if err != nil {
		c.cfg.Sessions.Delete(sess.ID)
		return Person{}, Session{}, false
	}
	return p, sess, true
}

// home is the first role page a person's roles open, or their account.
func home(p Person) string {
	for _, pg := range rolePages {
		if slices.Contains(p.Roles, pg) {
			return pg
		}
	}
	return "account"
}

// nav lists the pages of p's roles, then the account page.
func nav(p Person) []string {
	var out []string
	for _, pg := range rolePages {
		if slices.Contains(p.Roles, pg) {
			out = append(out, pg)
		}
	}
	return append(out, "account")
}

// view is what a page template sees.
type view struct {
	Lang     string
	Page     string
	Person   Person
	Nav      []string
	CSRF     string
	Zone     string
	Offset   string // seconds east of UTC, for the script's dates
	Messages string // the labels as JSON, for the script
	labels   map[string]string
}

// T is the label key in the page's language, or the key itself.
func (v view) T(key string) string {
	if s, ok := v.labels[key]; ok {
		return s
	}
	return key
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, page string, p Person, sess Session) {
	lang := Language(r.Header.Get("Accept-Language"))
	msgs, err := json.Marshal(c.labels[lang])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	name, offset := time.Now().In(c.cfg.Location).Zone()
	zone := c.cfg.Location.String()
	if zone == "Local" || zone == "" {
		zone = name
	}
	v := view{Lang: lang, Page: page, Person: p, CSRF: sess.CSRF, Zone: zone, Offset: strconv.Itoa(offset),
		Messages: string(msgs), labels: c.labels[lang]}
	if p.ID != "" {
		v.Nav = nav(p)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", lang)
	w.Header().Set("Vary", "Accept-Language, Cookie")
	if err := c.pages[page].ExecuteTemplate(w, "layout", v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// Language picks the console's language from an Accept-Language header:
// "zh" when Chinese is preferred to English, otherwise "en".
func Language(header string) string {
	best, bestQ := "en", 0.0
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		if (base == "zh" || base == "en") && q > bestQ {
			best, bestQ = base, q
		}
	}
	return best
}
