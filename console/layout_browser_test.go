package console_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/hospital/gateway/api/apitest"
)

// hidden reports which of the selectors name no element that shows, once
// the page is scrolled down to it, within the viewport's width and within
// its section, without scrolling the section sideways.
func (b *browser) hidden(selectors []string) []string {
	b.t.Helper()
	list, _ := json.Marshal(selectors)
	var out []string
	b.eval(fmt.Sprintf(`%s.filter(sel => {
		const n = document.querySelector(sel);
		if (!n) return true;
		window.scrollBy(0, n.getBoundingClientRect().top - innerHeight / 2);
		const r = n.getBoundingClientRect(), st = getComputedStyle(n), sec = n.closest('section');
		const within = !sec || (r.right <= sec.getBoundingClientRect().right + 0.5 && sec.scrollLeft === 0);
		return !(within && r.width > 0 && r.height > 0 && r.left >= -0.5 && r.right <= document.documentElement.clientWidth + 0.5 &&
			r.top < innerHeight && r.bottom > 0 && st.visibility !== 'hidden' && !n.closest('[hidden]'));
	})`, list), &out)
	return out
}

// TestConsoleLayout opens each role's main page at a tablet's and a
// laptop's size and checks that nothing makes the page scroll sideways
// (wide tables scroll inside their own section) and that the page's main
// controls show within the width. It leaves a screenshot of each.
func TestConsoleLayout(t *testing.T) {
	chromium(t)
	env := apitest.New(t, apitest.Options{Patients: 500})
	// Something in every table: a pending request, an answer in the
	// history, a pending person change.
	if status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": "SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex", "epsilon": 0.1}, nil); status != 200 {
		t.Fatalf("query: %d %v", status, err)
	}
	env.Do("POST", "/v1/access-requests", "researcher_internal", map[string]any{"datasets": []string{"demo_hospital"},
		"purpose": "a long purpose that states what the processing is for, in the words a steward reads before approving it", "epsilon": 1.0,
		"expires_at": "2099-06-30T00:00:00Z"}, nil)
	env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_wang", "name": "Dr Wang", "org_id": "demo-hospital", "roles": []string{"researcher"}}, nil)
	b := newBrowser(t, env.URL)

	controls := map[string][]string{
		"steward": {"header nav", "#sign-out", "#datasets", "#pending-requests button.approve", "#pending-requests input.reason", "#grade-form select[name=dataset]", "#grade-form button[type=submit]",
			"#policy-form textarea", "#policy-form button[type=submit]", "#upload-form textarea", "#upload-form input[type=file]", "#upload-form button[type=submit]"},
		"approver": {"header nav", "#sign-out", "#approved-requests", "#pending-protection", "#person-changes button.confirm", "#person-changes input.reason", "#granted-requests",
			"#assessment-form input[name=reference]", "#assessment-form button[type=submit]"},
		"auditor": {"header nav", "#sign-out", "#verify-status", "#quota-charts svg", "#burn-down svg", "#alerts", "#audit-form input[name=actor]",
			"#audit-form button[type=submit]", "#audit", "#export-form button[type=submit]"},
		"researcher": {"header nav", "#sign-out", "#budgets", "#sql", "#epsilon", "#run", "#dry-run", "#history", "#history button.show-answer",
			"#apply-form input[name=purpose]", "#apply-form button[type=submit]"},
	}
	people := map[string]string{"steward": "steward", "approver": "approver", "auditor": "auditor", "researcher": "researcher_internal"}
	sizes := []struct {
		name          string
		width, height int64
	}{
		{"tablet", 820, 1180},
		{"laptop", 1366, 768},
	}
	for _, page := range []string{"steward", "approver", "auditor", "researcher"} {
		t.Run(page, func(t *testing.T) {
			b.t = t
			b.signIn(env.Tokens[people[page]], page)
			for _, size := range sizes {
				b.run(size.name, chromedp.EmulateViewport(size.width, size.height))
				b.open(page)
				if page == "auditor" {
					b.run("charts", chromedp.WaitReady(chromedp.CSS(`body[data-loaded="true"]`)))
				}
				var width struct {
					Scroll int      `json:"scroll"`
					Client int      `json:"client"`
					Wide   []string `json:"wide"`
				}
				b.eval(`({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
					wide: [...document.querySelectorAll('body *')].filter(n => n.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5 &&
						!n.closest('section')).slice(0, 5).map(n => n.tagName + (n.id ? '#' + n.id : '') + '.' + n.className)})`, &width)
				if width.Scroll > width.Client {
					t.Errorf("%s %dx%d: the page is %dpx wide in a %dpx viewport (wide: %v)", size.name, size.width, size.height, width.Scroll, width.Client, width.Wide)
				}
				if hidden := b.hidden(controls[page]); len(hidden) > 0 {
					t.Errorf("%s %dx%d: not shown within the width: %v", size.name, size.width, size.height, hidden)
				}
				var top bool
				b.eval(`window.scrollTo(0, 0), true`, &top)
				b.screenshot(fmt.Sprintf("%s-%s", page, size.name))
			}
		})
	}
}
