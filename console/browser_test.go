package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hospital/gateway/api/apitest"
)

// chromium finds Debian's chromium. Without it the browser tests skip,
// except in CI (CI set), where they must run.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); the browser tests need it")
	return ""
}

// screenshots is where the tests leave a picture of each role's main
// page: $CONSOLE_SCREENSHOTS, or gateway-console-screenshots in the
// temporary directory.
func screenshots(t *testing.T) string {
	dir := os.Getenv("CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gateway-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string
}

func newBrowser(t *testing.T, base string) *browser {
	path := chromium(t)
	opts := append([]chromedp.ExecAllocatorOption{},
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTime(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, base: base, shot: screenshots(t)}
}

func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.getElementById('notice') || {}).textContent + ' | ' + document.body.innerText.slice(0, 2000)`))
		b.t.Fatalf("%s: %v (page: %q)", what, err, page)
	}
}

// clearCookies signs the browser out of every session.
var clearCookies = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	_, err := cdp.Call(ctx, t, network.ClearBrowserCookies, cdp.Empty{})
	return err
})

// signIn signs in with token from the sign-in page and waits for the
// person's main page to have loaded its data.
func (b *browser) signIn(token, page string) {
	b.t.Helper()
	b.run("sign in to "+page,
		clearCookies,
		chromedp.Navigate(b.base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`body[data-page=%q][data-ready="true"]`, page))),
	)
}

func (b *browser) open(page string) {
	b.t.Helper()
	b.run("open "+page,
		chromedp.Navigate(b.base+"/console/"+page),
		chromedp.WaitReady(chromedp.CSS(fmt.Sprintf(`body[data-page=%q][data-ready="true"]`, page))),
	)
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // quality 100 is a PNG
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.shot, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
}

// eval runs a script in the page and decodes its value into out; a script
// that returns a promise is awaited.
func (b *browser) eval(js string, out any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		b.t.Fatalf("evaluate %s: decode %s: %v", js, raw, err)
	}
}

func (b *browser) notice() string {
	var s string
	b.eval(`document.getElementById('notice').hidden ? '' : document.getElementById('notice').textContent`, &s)
	return s
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 30s", what)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestConsoleInBrowser(t *testing.T) {
	chromium(t)
	env := apitest.New(t, apitest.Options{Patients: 2000})
	b := newBrowser(t, env.URL)

	t.Run("sign-in refusal shows the server's message", func(t *testing.T) {
		b.t = t
		b.run("bad token",
			clearCookies,
			chromedp.Navigate(env.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SetValue(chromedp.CSS("#token"), "not-a-token"),
			chromedp.Click(chromedp.CSS("#signin")),
			chromedp.WaitVisible(chromedp.CSS("#notice.error")),
		)
		var code string
		b.eval(`document.getElementById('notice').dataset.code`, &code)
		if code != "unauthenticated" || b.notice() == "" {
			t.Errorf("refused sign-in: code %q, notice %q", code, b.notice())
		}
		var scripts int
		b.eval(`[...document.scripts].filter(s => !s.src).length`, &scripts)
		if scripts != 0 {
			t.Errorf("%d inline scripts", scripts)
		}
	})

	t.Run("researcher query with its chart", func(t *testing.T) {
		b.t = t
		// The hospital's own researcher: a count over every patient does
		// not count toward the Article 11 share.
		b.signIn(env.Tokens["researcher_internal"], "researcher")
		b.run("ask",
			chromedp.SetValue(chromedp.CSS("#sql"), "SELECT department, COUNT(*) AS n FROM encounters GROUP BY department"),
			chromedp.SetValue(chromedp.CSS("#epsilon"), "0.2"),
			chromedp.Click(chromedp.CSS("#run")),
			chromedp.WaitVisible(chromedp.CSS("#answer-chart svg rect.bar")),
		)
		var shown struct {
			Bars   []float64   `json:"bars"`
			Cells  []string    `json:"cells"`
			Errors [][]float64 `json:"errors"`
			Rows   string      `json:"rows"`
			Meta   string      `json:"meta"`
		}
		b.eval(`({
			bars: [...document.querySelectorAll('#answer-chart rect.bar')].map(r => Number(r.dataset.value)),
			cells: [...document.querySelectorAll('#answer td[data-col="n_ci"]')].map(td => td.textContent),
			errors: [...document.querySelectorAll('#answer-chart line.err[data-low]')].map(l => [Number(l.dataset.low), Number(l.dataset.high)]),
			rows: document.getElementById('answer').dataset.rows,
			meta: document.getElementById('answer-privacy').textContent,
		})`, &shown)
		n, _ := strconv.Atoi(shown.Rows)
		if n == 0 || len(shown.Bars) != n || len(shown.Errors) != n {
			t.Fatalf("answer of %s rows drawn as %d bars and %d error bars", shown.Rows, len(shown.Bars), len(shown.Errors))
		}
		for i, e := range shown.Errors {
			if !(e[0] <= shown.Bars[i] && shown.Bars[i] <= e[1]) {
				t.Errorf("bar %d: %v outside its interval %v", i, shown.Bars[i], e)
			}
		}
		if len(shown.Cells) == 0 || !strings.HasPrefix(shown.Cells[0], "[") || !strings.Contains(shown.Meta, "laplace") {
			t.Errorf("intervals %v, privacy %q", shown.Cells, shown.Meta)
		}
		var budgets struct {
			Budgets []struct {
				EpsilonSpent float64 `json:"epsilon_spent"`
			} `json:"budgets"`
		}
		if _, err := env.Do("GET", "/v1/budgets", "researcher_internal", nil, &budgets); err != nil || len(budgets.Budgets) != 1 || !near(budgets.Budgets[0].EpsilonSpent, 0.2) {
			t.Errorf("the console's query spent %+v, want 0.2 (%v)", budgets, err)
		}
		b.screenshot("researcher")
	})

	t.Run("role refusal shows the server's message", func(t *testing.T) {
		b.t = t
		b.open("auditor") // signed in as the researcher
		eventually(t, "refusal notice", func() bool { return strings.Contains(b.notice(), "needs one of the roles") })
		var code string
		b.eval(`document.getElementById('notice').dataset.code`, &code)
		if code != "forbidden" {
			t.Errorf("code %q", code)
		}
	})

	var req struct {
		ID string `json:"id"`
	}
	if status, err := env.Do("POST", "/v1/access-requests", "researcher_internal", map[string]any{
		"datasets": []string{"demo_hospital"}, "purpose": "length of stay by department", "epsilon": 1.0,
		"expires_at": time.Now().AddDate(0, 6, 0).UTC().Format(time.RFC3339)}, &req); err != nil || status != 201 {
		t.Fatalf("access request: %d %v", status, err)
	}
	state := func() (string, string) {
		var r struct{ State, GrantID string }
		var raw struct {
			State   string `json:"state"`
			GrantID string `json:"grant_id"`
		}
		env.Do("GET", "/v1/access-requests/"+req.ID, "steward", nil, &raw)
		r.State, r.GrantID = raw.State, raw.GrantID
		return r.State, r.GrantID
	}

	t.Run("steward approves, approver verifies, a grant is made", func(t *testing.T) {
		b.t = t
		b.signIn(env.Tokens["steward"], "steward")
		row := fmt.Sprintf(`#pending-requests tr[data-id=%q]`, req.ID)
		b.run("approve", chromedp.WaitVisible(chromedp.CSS(row+" button.approve")), chromedp.Click(chromedp.CSS(row+" button.approve")))
		eventually(t, "approved", func() bool { s, _ := state(); return s == "approved" })
		b.screenshot("steward")
		b.run("sign out", chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#token")))

		b.signIn(env.Tokens["approver"], "approver")
		row = fmt.Sprintf(`#approved-requests tr[data-id=%q]`, req.ID)
		b.run("wait for the approved request", chromedp.WaitVisible(chromedp.CSS(row+" button.verify")))
		var approvedBy string
		b.eval(fmt.Sprintf(`document.querySelector(%q).textContent`, row+` td[data-col="approved_by"]`), &approvedBy)
		b.run("verify", chromedp.Click(chromedp.CSS(row+" button.verify")))
		if approvedBy != "steward" {
			t.Errorf("the steward's approval shows as %q", approvedBy)
		}
		eventually(t, "granted", func() bool { s, g := state(); return s == "granted" && g != "" })
		b.screenshot("approver")
	})

	t.Run("revocation", func(t *testing.T) {
		b.t = t
		_, grant := state()
		q := map[string]any{"sql": "SELECT COUNT(*) AS n FROM patients", "epsilon": 0.1, "grant_id": grant}
		if status, err := env.Do("POST", "/v1/queries", "researcher_internal", q, nil); err != nil || status != 200 {
			t.Fatalf("query on the new grant: %d %v", status, err)
		}
		b.open("approver")
		row := fmt.Sprintf(`#granted-requests tr[data-id=%q]`, req.ID)
		b.run("revoke", chromedp.WaitVisible(chromedp.CSS(row+" button.revoke")), chromedp.Click(chromedp.CSS(row+" button.revoke")))
		eventually(t, "revoked", func() bool {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			status, _ := env.Do("POST", "/v1/queries", "researcher_internal", q, &e)
			return status == 403 && e.Error.Code == "forbidden"
		})
	})

	t.Run("auditor charts hold the API's numbers", func(t *testing.T) {
		b.t = t
		// A release to another legal entity moves the quota.
		narrow := map[string]any{"sql": "SELECT count(*) FROM patients WHERE age = 30", "epsilon": 0.1}
		if status, err := env.Do("POST", "/v1/queries", "researcher", narrow, nil); err != nil || status != 200 {
			t.Fatalf("a release to another entity: %d %v", status, err)
		}
		b.signIn(env.Tokens["auditor"], "auditor")
		b.run("charts", chromedp.WaitReady(chromedp.CSS(`body[data-loaded="true"]`)))
		var quota struct {
			Ratio     float64 `json:"ratio"`
			Threshold float64 `json:"threshold"`
			Provided  int64   `json:"provided"`
			State     string  `json:"state"`
		}
		if _, err := env.Do("GET", "/v1/quota?dataset=demo_hospital", "auditor", nil, &quota); err != nil {
			t.Fatal(err)
		}
		var chart map[string]string
		b.eval(`Object.assign({}, document.querySelector('#quota-charts svg[data-dataset="demo_hospital"]').dataset)`, &chart)
		ratio, _ := strconv.ParseFloat(chart["ratio"], 64)
		threshold, _ := strconv.ParseFloat(chart["threshold"], 64)
		if !near(ratio, quota.Ratio) || !near(threshold, quota.Threshold) || chart["provided"] != strconv.FormatInt(quota.Provided, 10) || chart["state"] != quota.State {
			t.Errorf("quota chart %v, API %+v", chart, quota)
		}
		if quota.Provided == 0 {
			t.Errorf("the researcher's query moved no quota; the chart is not tested against a release")
		}
		var lines []float64
		b.eval(`[...document.querySelectorAll('#quota-charts svg[data-dataset="demo_hospital"] line.limit, #quota-charts svg[data-dataset="demo_hospital"] line.warnline')].map(l => Number(l.dataset.y))`, &lines)
		if len(lines) != 3 || !near(lines[0], quota.Threshold) {
			t.Errorf("quota lines %v, want the %v line and two warning lines", lines, quota.Threshold)
		}

		var budgets struct {
			Budgets []struct {
				GrantID          string  `json:"grant_id"`
				EpsilonTotal     float64 `json:"epsilon_total"`
				EpsilonRemaining float64 `json:"epsilon_remaining"`
			} `json:"budgets"`
		}
		if _, err := env.Do("GET", "/v1/budgets", "auditor", nil, &budgets); err != nil {
			t.Fatal(err)
		}
		var drawn map[string][]float64
		b.eval(`Object.fromEntries([...document.querySelectorAll('#burn-down svg[data-grant]')].map(s =>
			[s.dataset.grant, [Number(s.dataset.total), Number(s.dataset.remaining), ...[...s.querySelectorAll('circle.dot')].map(c => Number(c.dataset.y))]]))`, &drawn)
		if len(drawn) != len(budgets.Budgets) {
			t.Errorf("%d burn-down charts for %d grants", len(drawn), len(budgets.Budgets))
		}
		for _, g := range budgets.Budgets {
			d := drawn[g.GrantID]
			if len(d) < 3 || !near(d[0], g.EpsilonTotal) || !near(d[1], g.EpsilonRemaining) || !near(d[len(d)-1], g.EpsilonRemaining) || !near(d[2], g.EpsilonTotal) {
				t.Errorf("grant %s drawn as %v, API total %v remaining %v", g.GrantID, d, g.EpsilonTotal, g.EpsilonRemaining)
			}
		}
		var intact string
		b.eval(`document.getElementById('verify-status').dataset.intact || ''`, &intact)
		var verify struct {
			Intact bool `json:"intact"`
		}
		if _, err := env.Do("GET", "/v1/audit/verify", "auditor", nil, &verify); err != nil || intact != strconv.FormatBool(verify.Intact) {
			t.Errorf("audit verify shown as %q, API says %v (%v)", intact, verify.Intact, err)
		}
		var auditRows string
		b.eval(`document.getElementById('audit').dataset.rows`, &auditRows)
		if n, _ := strconv.Atoi(auditRows); n == 0 {
			t.Errorf("the audit log table is empty")
		}
		b.screenshot("auditor")
	})

	t.Run("CSRF", func(t *testing.T) {
		b.t = t
		// Signed in as the auditor: the session cookie goes with these
		// calls, the CSRF header does not or is wrong.
		var got []string
		b.eval(`Promise.all([
			fetch('/v1/audit?limit=1').then(r => r.json().then(j => r.status + ' ' + j.error.code)),
			fetch('/v1/alerts/x/ack', {method: 'POST'}).then(r => r.json().then(j => r.status + ' ' + j.error.code)),
			fetch('/v1/audit?limit=1', {headers: {'X-CSRF-Token': 'guess'}}).then(r => r.json().then(j => r.status + ' ' + j.error.code)),
			fetch('/v1/audit?limit=1', {headers: {'X-CSRF-Token': document.body.dataset.csrf}}).then(r => String(r.status)),
		])`, &got)
		want := []string{"403 forbidden", "403 forbidden", "403 forbidden", "200"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("calls without and with the CSRF header: %v, want %v", got, want)
		}
	})

	t.Run("sign-out ends the session", func(t *testing.T) {
		b.t = t
		var csrf string
		b.eval(`document.body.dataset.csrf`, &csrf)
		b.run("sign out", chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#token")))
		var status int
		b.eval(fmt.Sprintf(`fetch('/v1/budgets', {headers: {'X-CSRF-Token': %q}}).then(r => r.status)`, csrf), &status)
		if status != 401 {
			t.Errorf("a call after sign-out answered %d", status)
		}
	})
}
