package console

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSessionsExpire(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	ss := NewSessions(SessionConfig{TTL: time.Hour, Idle: 10 * time.Minute, Now: func() time.Time { return now }})
	s := ss.Create("tok")
	tests := []struct {
		name    string
		advance time.Duration
		live    bool
	}{
		{"fresh", 0, true},
		{"used within the idle limit", 9 * time.Minute, true},
		{"used again, idle clock restarts", 9 * time.Minute, true},
		{"idle too long", 11 * time.Minute, false},
	}
	for _, tc := range tests {
		now = now.Add(tc.advance)
		if _, ok := ss.Lookup(s.ID); ok != tc.live {
			t.Errorf("%s: live %v, want %v", tc.name, ok, tc.live)
		}
	}

	s = ss.Create("tok")
	for range 7 { // active all along, but past the TTL
		now = now.Add(9 * time.Minute)
		ss.Lookup(s.ID)
	}
	if _, ok := ss.Lookup(s.ID); ok {
		t.Errorf("a session lived past its TTL")
	}
	s = ss.Create("tok")
	ss.Delete(s.ID)
	if _, ok := ss.Lookup(s.ID); ok {
		t.Errorf("a deleted session is still live")
	}
}

func TestCSRF(t *testing.T) {
	s := NewSessions(SessionConfig{}).Create("tok")
	for _, h := range []string{"", "x", s.ID, s.Token} {
		if s.CheckCSRF(h) {
			t.Errorf("CSRF header %q accepted", h)
		}
	}
	if !s.CheckCSRF(s.CSRF) {
		t.Errorf("the session's own CSRF token was refused")
	}
}

func TestLanguage(t *testing.T) {
	tests := map[string]string{
		"":                           "en",
		"zh-CN,zh;q=0.9,en;q=0.8":    "zh",
		"en-GB,en;q=0.9,zh-CN;q=0.8": "en",
		"fr-FR,zh-TW;q=0.5":          "zh",
		"de":                         "en",
		"en;q=0.3,zh-Hans-CN;q=0.7":  "zh",
		"zh;q=0":                     "en",
	}
	for header, want := range tests {
		if got := Language(header); got != want {
			t.Errorf("Language(%q) = %s, want %s", header, got, want)
		}
	}
}

func TestPages(t *testing.T) {
	ss := NewSessions(SessionConfig{})
	c, err := New(Config{Sessions: ss, Who: func(_ context.Context, token string) (Person, error) {
		return Person{ID: "p1", Name: "Wang", Roles: []string{"auditor"}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, cookie, lang string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		if cookie != "" {
			r.Header.Set("Cookie", CookieName+"="+cookie)
		}
		r.Header.Set("Accept-Language", lang)
		w := httptest.NewRecorder()
		c.ServeHTTP(w, r)
		return w
	}
	w := get("/", "", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `id="signin-form"`) {
		t.Fatalf("GET / without a session: %d %s", w.Code, w.Body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(w.Body.String(), "<script>") {
		t.Errorf("the page has an inline script")
	}
	if w := get("/console/auditor", "", ""); w.Code != 303 {
		t.Errorf("a page without a session answered %d, want a redirect to sign-in", w.Code)
	}
	s := ss.Create("tok")
	w = get("/", s.ID, "zh-CN")
	body := w.Body.String()
	if !strings.Contains(body, `data-page="auditor"`) || !strings.Contains(body, "审计日志") || !strings.Contains(body, s.CSRF) {
		t.Errorf("an auditor's home in Chinese: %s", body)
	}
	if w := get("/console/nothing", s.ID, ""); w.Code != 404 {
		t.Errorf("an unknown page answered %d", w.Code)
	}
	if w := get("/console/assets/console.js", "", ""); w.Code != 200 || w.Header().Get("Content-Security-Policy") == "" {
		t.Errorf("the script: %d", w.Code)
	}
}

// TestLabelsInBothLanguages keeps the Chinese labels in step with the
// English ones: a key missing from either shows as its bare name.
func TestLabelsInBothLanguages(t *testing.T) {
	b, err := files.ReadFile("i18n.json")
	if err != nil {
		t.Fatal(err)
	}
	var labels map[string]map[string]string
	if err := json.Unmarshal(b, &labels); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{"en", "zh"}, {"zh", "en"}} {
		for key, text := range labels[pair[0]] {
			if other, ok := labels[pair[1]][key]; !ok || other == "" || text == "" {
				t.Errorf("label %s is in %s but not in %s", key, pair[0], pair[1])
			}
		}
	}
}
