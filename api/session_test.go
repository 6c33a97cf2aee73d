package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/console"
)

// TestConsoleSession drives the console's session over plain HTTP: the
// cookie's attributes, the CSRF header on every call, sign-out, and the
// refusals of sign-in requests that another site could send.
func TestConsoleSession(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	do := func(method, path, body string, header map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, env.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	signIn := `{"token": "` + env.Tokens["auditor"] + `"}`

	refusals := []struct {
		name   string
		body   string
		header map[string]string
		status int
	}{
		{"not JSON", signIn, map[string]string{"Content-Type": "text/plain"}, 400},
		{"from another site", signIn, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403},
		{"a wrong token", `{"token": "nope"}`, map[string]string{"Content-Type": "application/json"}, 401},
	}
	for _, tc := range refusals {
		resp, body := do("POST", "/v1/session", tc.body, tc.header)
		if resp.StatusCode != tc.status || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in %s: %d %s, cookies %v", tc.name, resp.StatusCode, body, resp.Cookies())
		}
	}

	resp, body := do("POST", "/v1/session", signIn, map[string]string{"Content-Type": "application/json", "Origin": env.URL})
	if resp.StatusCode != 201 {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	var sess struct {
		Person string   `json:"person"`
		Roles  []string `json:"roles"`
		CSRF   string   `json:"csrf_token"`
	}
	if err := json.Unmarshal([]byte(body), &sess); err != nil || sess.CSRF == "" {
		t.Fatalf("sign-in answer %s: %v", body, err)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Secure || cookie.MaxAge <= 0 {
		t.Fatalf("session cookie %+v (Secure only under TLS)", cookie)
	}
	if strings.Contains(body, env.Tokens["auditor"]) {
		t.Errorf("the sign-in answer repeats the token")
	}
	withCookie := func(csrf string) map[string]string {
		h := map[string]string{"Cookie": console.CookieName + "=" + cookie.Value, "Content-Type": "application/json"}
		if csrf != "" {
			h[console.CSRFHeader] = csrf
		}
		return h
	}

	calls := []struct {
		name, method, path, csrf string
		status                   int
	}{
		{"a read with the CSRF header", "GET", "/v1/audit?limit=5", sess.CSRF, 200},
		{"a read without it", "GET", "/v1/audit?limit=5", "", 403},
		{"a change without it", "POST", "/v1/alerts/x/ack", "", 403},
		{"a change with a wrong one", "POST", "/v1/alerts/x/ack", "not-the-token", 403},
		{"a call the role does not allow", "POST", "/v1/queries", sess.CSRF, 403},
		{"who am I", "GET", "/v1/session", sess.CSRF, 200},
	}
	for _, tc := range calls {
		resp, body := do(tc.method, tc.path, `{"sql": "SELECT 1"}`, withCookie(tc.csrf))
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, body, tc.status)
		}
		if tc.status == 403 && !strings.Contains(body, `"forbidden"`) {
			t.Errorf("%s: %s is not the contract's error", tc.name, body)
		}
	}

	// The session's calls are audited as the person, like bearer calls.
	var entries struct {
		Entries []struct {
			Actor, Action, Outcome string
		} `json:"entries"`
	}
	if status, err := env.Do("GET", "/v1/audit?action=session.open&outcome=ok", "auditor", nil, &entries); err != nil || status != 200 || len(entries.Entries) != 1 ||
		entries.Entries[0].Actor != sess.Person {
		t.Errorf("audit of the sign-in: %d %v %+v", status, err, entries)
	}

	resp, body = do("DELETE", "/v1/session", "", withCookie(sess.CSRF))
	if resp.StatusCode != 200 {
		t.Fatalf("sign-out: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("GET", "/v1/budgets", "", withCookie(sess.CSRF)); resp.StatusCode != 401 {
		t.Errorf("after sign-out: %d %s", resp.StatusCode, body)
	}
}

// TestConsolePages checks that / serves the console, in the browser's
// language, with a policy that forbids inline scripts.
func TestConsolePages(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	for lang, label := range map[string]string{"": "Sign in", "en-US": "Sign in", "zh-CN,zh;q=0.9": "登录"} {
		req, _ := http.NewRequest("GET", env.URL+"/", nil)
		req.Header.Set("Accept-Language", lang)
		resp, err := env.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(b), label) {
			t.Errorf("GET / in %q: %d %s", lang, resp.StatusCode, b)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET / CSP %q", csp)
		}
	}
	if status, err := env.Do("GET", "/nothing", "", nil, nil); err != nil || status != 404 {
		t.Errorf("unknown paths stay the API's JSON 404: %d %v", status, err)
	}
}
