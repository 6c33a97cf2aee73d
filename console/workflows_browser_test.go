package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/audit"
)

// clinicManifest registers a small clinic dataset of important grade.
const clinicManifest = `{"name": "clinic", "grade": "important", "source": "clinic export", "category": "visits",
 "purpose": "planning", "processing_method": "DP aggregates", "responsible_party": "Clinic Office", "cross_border": "none",
 "protection_measures": "SM4 at rest",
 "policy": {"tables": [{"name": "visits", "columns": [
   {"name": "patient_id", "role": "unit"}, {"name": "name", "role": "identifier"},
   {"name": "clinic", "role": "attribute", "public": ["North", "South"]}, {"name": "fee", "role": "attribute", "min": 0, "max": 100}]}],
  "contribution": {"max_groups": 1, "max_rows": 2}, "k": 5, "special_k": 10, "special_share": 0.5}}`

// visitsFile writes a CSV of n clinic visits, large enough that its upload
// is seen to progress.
func visitsFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("patient_id,name,clinic,fee\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d,Person number %d of the clinic,%s,%d\n", i, i, []string{"North", "South"}[i%2], i%90)
	}
	path := filepath.Join(t.TempDir(), "visits.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// acceptLanguage makes the browser send header as its Accept-Language, as
// a browser set to prefer that language does; "" sends the default again.
func acceptLanguage(header string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		h := network.Headers{}
		if header != "" {
			h["Accept-Language"] = header
		}
		_, err := cdp.Call(ctx, t, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h})
		return err
	})
}

// TestConsoleWorkflows drives, in the browser, what each role does beyond
// the first steps: the steward's upload with its progress and a grade
// proposal, the approver's verification of it and confirmation of a person,
// the auditor's alert handling and signed export, a researcher reading an
// answer again from the history, and the pages in Chinese.
func TestConsoleWorkflows(t *testing.T) {
	chromium(t)
	env := apitest.New(t, apitest.Options{Patients: 1000})
	b := newBrowser(t, env.URL)

	type change struct {
		ID         string   `json:"id"`
		Dataset    string   `json:"dataset"`
		State      string   `json:"state"`
		ProposedBy string   `json:"proposed_by"`
		Lowers     []string `json:"lowers"`
	}
	changes := func() []change {
		var out struct {
			Changes []change `json:"changes"`
		}
		env.Do("GET", "/v1/protection-changes?dataset=clinic", "steward", nil, &out)
		return out.Changes
	}
	gradeOf := func(name string) string {
		var out struct {
			Datasets []struct{ Name, Grade string } `json:"datasets"`
		}
		env.Do("GET", "/v1/datasets", "steward", nil, &out)
		for _, d := range out.Datasets {
			if d.Name == name {
				return d.Grade
			}
		}
		return ""
	}

	t.Run("steward uploads a dataset with progress", func(t *testing.T) {
		b.t = t
		file := visitsFile(t, 60000)
		b.signIn(env.Tokens["steward"], "steward")
		// A refusal first: the file part names no table of the manifest,
		// and the server's words are shown.
		b.run("upload to a wrong table",
			chromedp.SetValue(chromedp.CSS(`#upload-form [name=manifest]`), clinicManifest),
			chromedp.SetValue(chromedp.CSS(`#upload-form [name=table]`), "visitz"),
			chromedp.SetUploadFiles(chromedp.CSS(`#upload-form input[type=file]`), []string{file}),
			chromedp.Click(chromedp.CSS(`#upload-form button[type=submit]`)),
		)
		eventually(t, "the refusal", func() bool { return strings.Contains(b.notice(), "names no table of the manifest") })
		b.run("upload",
			chromedp.SetValue(chromedp.CSS(`#upload-form [name=table]`), "visits"),
			chromedp.Click(chromedp.CSS(`#upload-form button[type=submit]`)),
		)
		eventually(t, "the upload's notice", func() bool { return strings.Contains(b.notice(), "clinic") })
		var bar struct {
			Value  float64 `json:"value"`
			Events string  `json:"events"`
			Hidden bool    `json:"hidden"`
		}
		b.eval(`(p => ({value: p.value, events: p.dataset.events, hidden: p.hidden}))(document.getElementById('upload-progress'))`, &bar)
		if n, _ := strconv.Atoi(bar.Events); bar.Hidden || bar.Value != 100 || n < 1 {
			t.Errorf("upload progress %+v, want a shown bar at 100 after progress events", bar)
		}
		if g := gradeOf("clinic"); g != "important" {
			t.Fatalf("clinic registered with grade %q", g)
		}
		eventually(t, "the new dataset listed", func() bool {
			var listed []string
			b.eval(`[...document.querySelectorAll('#datasets td[data-col="name"]')].map(td => td.textContent)`, &listed)
			return strings.Contains(strings.Join(listed, ","), "clinic")
		})
	})

	t.Run("a grade proposal waits for an approver's verification", func(t *testing.T) {
		b.t = t
		b.open("steward")
		b.run("propose a lower grade",
			chromedp.WaitReady(chromedp.CSS(`#grade-form select[name=dataset] option[value="clinic"]`)),
			chromedp.SetValue(chromedp.CSS(`#grade-form select[name=dataset]`), "clinic"),
			chromedp.SetValue(chromedp.CSS(`#grade-form select[name=grade]`), "general"),
			chromedp.SetValue(chromedp.CSS(`#grade-form [name=reason]`), "visit counts by clinic only"),
			chromedp.Click(chromedp.CSS(`#grade-form button[type=submit]`)),
		)
		eventually(t, "the pending notice", func() bool { return strings.Contains(b.notice(), "pending") })
		cs := changes()
		if len(cs) != 1 || cs[0].State != "pending" || cs[0].ProposedBy != "steward" || gradeOf("clinic") != "important" {
			t.Fatalf("after the proposal: changes %+v, grade %s", cs, gradeOf("clinic"))
		}
		if !strings.Contains(b.notice(), cs[0].ID) {
			t.Errorf("the notice %q does not name the change %s", b.notice(), cs[0].ID)
		}
		b.run("the steward's list shows it", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#protection-changes tr[data-id=%q]`, cs[0].ID))))

		b.signIn(env.Tokens["approver"], "approver")
		row := fmt.Sprintf(`#pending-protection tr[data-id=%q]`, cs[0].ID)
		b.run("the proposal awaits verification", chromedp.WaitVisible(chromedp.CSS(row+" button.verify")))
		var shown map[string]string
		b.eval(fmt.Sprintf(`Object.fromEntries([...document.querySelectorAll(%q)].map(td => [td.dataset.col, td.textContent]))`, row+" td[data-col]"), &shown)
		if shown["proposed_by"] != "steward" || shown["grade"] != "general" || shown["dataset"] != "clinic" {
			t.Errorf("the approver sees %v", shown)
		}
		b.run("verify", chromedp.Click(chromedp.CSS(row+" button.verify")))
		eventually(t, "the lower grade in force", func() bool { return gradeOf("clinic") == "general" })
		if cs := changes(); len(cs) != 1 || cs[0].State != "confirmed" {
			t.Errorf("after verification: %+v", cs)
		}
	})

	t.Run("an approver confirms a person change", func(t *testing.T) {
		b.t = t
		var add struct {
			Change    struct{ ID string } `json:"change"`
			Enrolment struct {
				Secret string `json:"secret"`
			} `json:"enrolment"`
		}
		if status, err := env.Do("POST", "/v1/people", "admin", map[string]any{"id": "dr_li", "name": "Dr Li", "org_id": "demo-hospital", "roles": []string{"researcher"}}, &add); status != 202 || err != nil {
			t.Fatalf("add a person: %d %v", status, err)
		}
		b.open("approver")
		row := fmt.Sprintf(`#person-changes tr[data-id=%q]`, add.Change.ID)
		b.run("confirm", chromedp.WaitVisible(chromedp.CSS(row+" button.confirm")), chromedp.Click(chromedp.CSS(row+" button.confirm")))
		var code string
		eventually(t, "the confirmation code", func() bool {
			n := b.notice()
			code = regexp.MustCompile(`\S+$`).FindString(n)
			return strings.Contains(n, "Confirmation code")
		})
		// The code shown is the one the person needs, with their secret.
		var enrolled struct {
			Token string `json:"token"`
		}
		if status, err := env.Do("POST", "/v1/enrol", "", map[string]string{"secret": add.Enrolment.Secret, "confirmation_code": code}, &enrolled); status != 201 || enrolled.Token == "" {
			t.Errorf("enrol with the code shown (%q): %d %v", code, status, err)
		}
		b.screenshot("approver-confirmed")
	})

	// Five refusals in a row raise a probing alert; two counts a year of
	// age apart raise a differencing one.
	for i := range 5 {
		env.Do("POST", "/v1/queries", "researcher", map[string]any{"sql": fmt.Sprintf("SELECT name, count(*) FROM patients WHERE age = %d GROUP BY name", i), "epsilon": 0.01}, nil)
	}
	type released struct {
		QueryID string                  `json:"query_id"`
		Rows    [][]any                 `json:"rows"`
		Receipt struct{ Digest string } `json:"receipt"`
	}
	var older released
	for _, sql := range []string{"SELECT count(*) AS n FROM patients WHERE age >= 40", "SELECT count(*) AS n FROM patients WHERE age >= 41"} {
		if status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": 0.1}, &older); status != 200 || err != nil {
			t.Fatalf("query: %d %v", status, err)
		}
	}
	type alert struct {
		ID, Kind, State string
		Incident        string `json:"incident_id"`
	}
	alerts := func() map[string]alert {
		var out struct{ Alerts []alert }
		env.Do("GET", "/v1/alerts", "auditor", nil, &out)
		m := map[string]alert{}
		for _, a := range out.Alerts {
			m[a.Kind] = a
		}
		return m
	}
	eventually(t, "probing and differencing alerts", func() bool { a := alerts(); return a["probing"].ID != "" && a["differencing"].ID != "" })

	t.Run("auditor acknowledges an alert and opens an incident", func(t *testing.T) {
		b.t = t
		b.signIn(env.Tokens["auditor"], "auditor")
		as := alerts()
		probing := fmt.Sprintf(`#alerts tr[data-id=%q]`, as["probing"].ID)
		differencing := fmt.Sprintf(`#alerts tr[data-id=%q]`, as["differencing"].ID)
		b.run("acknowledge", chromedp.WaitVisible(chromedp.CSS(probing+" button.ack")), chromedp.Click(chromedp.CSS(probing+" button.ack")))
		eventually(t, "acknowledged", func() bool { return alerts()["probing"].State == "acknowledged" })
		// The table is drawn again after the change; act on the new one.
		b.run("the table redrawn", chromedp.WaitVisible(chromedp.CSS(probing+` td[data-col="handled_by"]`)), chromedp.WaitNotPresent(chromedp.CSS(probing+" button.ack")))
		eventually(t, "the acknowledgement shown", func() bool {
			var by string
			b.eval(fmt.Sprintf(`document.querySelector(%q).textContent`, probing+` td[data-col="handled_by"]`), &by)
			return by == "auditor"
		})
		// An incident without its summary is refused in the server's words.
		b.run("incident without a summary", chromedp.WaitVisible(chromedp.CSS(differencing+" button.incident")), chromedp.Click(chromedp.CSS(differencing+" button.incident")))
		eventually(t, "the refusal", func() bool { return strings.Contains(b.notice(), "summarise the incident") })
		b.run("incident",
			chromedp.SetValue(chromedp.CSS(differencing+" input.reason"), "possible differencing on age"),
			chromedp.Click(chromedp.CSS(differencing+" button.incident")))
		eventually(t, "an incident", func() bool { a := alerts()["differencing"]; return a.State == "incident" && a.Incident != "" })
		b.run("the handled alert loses its buttons", chromedp.WaitNotPresent(chromedp.CSS(differencing+" button.incident")))
	})

	t.Run("the signed export downloads and verifies", func(t *testing.T) {
		b.t = t
		dir := t.TempDir()
		b.run("download",
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Call(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
					Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir})
				return err
			}),
			chromedp.SetValue(chromedp.CSS(`#export-form [name=format]`), "json"),
			chromedp.Click(chromedp.CSS(`#export-form button[type=submit]`)),
		)
		var path string
		eventually(t, "the downloaded export", func() bool {
			m, _ := filepath.Glob(filepath.Join(dir, "audit-export-*.json"))
			if len(m) == 1 {
				path = m[0]
			}
			return path != ""
		})
		var body []byte
		var r audit.Export
		eventually(t, "a complete export", func() bool {
			body, _ = os.ReadFile(path)
			return json.Unmarshal(body, &r) == nil
		})
		if err := audit.VerifyExport(r, env.AuditKey.Public()); err != nil {
			t.Errorf("the downloaded export does not verify: %v", err)
		}
		if !strings.Contains(string(body), `"incident.open"`) || !strings.Contains(b.notice(), filepath.Base(path)) {
			t.Errorf("the export of %d bytes holds no incident, or the notice %q does not name %s", len(body), b.notice(), filepath.Base(path))
		}
	})

	t.Run("a researcher reads an answer again from the history", func(t *testing.T) {
		b.t = t
		b.signIn(env.Tokens["researcher_internal"], "researcher")
		row := fmt.Sprintf(`#history tr[data-id=%q]`, older.QueryID)
		b.run("show the answer", chromedp.WaitVisible(chromedp.CSS(row+" button.show-answer")), chromedp.Click(chromedp.CSS(row+" button.show-answer")))
		b.run("the answer", chromedp.WaitVisible(chromedp.CSS(`#answer-past`)), chromedp.WaitVisible(chromedp.CSS(`#answer-chart rect.bar`)))
		var shown struct {
			History string    `json:"history"`
			Query   string    `json:"query"`
			Bars    []float64 `json:"bars"`
			Digest  string    `json:"digest"`
			Past    string    `json:"past"`
		}
		b.eval(`({history: document.getElementById('answer').dataset.historyId, query: document.getElementById('answer').dataset.queryId,
			bars: [...document.querySelectorAll('#answer-chart rect.bar')].map(r => Number(r.dataset.value)),
			digest: document.getElementById('answer-receipt').dataset.digest, past: document.getElementById('answer-past').textContent})`, &shown)
		want, _ := older.Rows[0][0].(float64)
		if shown.History != older.QueryID || shown.Query != older.QueryID || len(shown.Bars) != 1 || !near(shown.Bars[0], want) ||
			shown.Digest != older.Receipt.Digest || !strings.Contains(shown.Past, "age >= 41") {
			t.Errorf("shown %+v, released %+v", shown, older)
		}
		var budget struct {
			Budgets []struct {
				EpsilonSpent float64 `json:"epsilon_spent"`
			} `json:"budgets"`
		}
		env.Do("GET", "/v1/budgets", "researcher_internal", nil, &budget)
		if len(budget.Budgets) != 1 || !near(budget.Budgets[0].EpsilonSpent, 0.2) {
			t.Errorf("reading answers again spent budget: %+v", budget)
		}
		b.screenshot("researcher-past-answer")
	})

	t.Run("labels in Chinese when the browser prefers it", func(t *testing.T) {
		b.t = t
		var labels map[string]map[string]string
		raw, err := os.ReadFile("i18n.json")
		if err != nil || json.Unmarshal(raw, &labels) != nil {
			t.Fatalf("labels: %v", err)
		}
		zh := labels["zh"]
		b.run("in Chinese", acceptLanguage("zh-CN,zh;q=0.9,en;q=0.5"))
		defer b.run("in English again", acceptLanguage(""))
		b.open("researcher")
		var page struct {
			Lang    string   `json:"lang"`
			Heads   []string `json:"heads"`
			Buttons []string `json:"buttons"`
			Nav     []string `json:"nav"`
		}
		b.eval(`({lang: document.documentElement.lang, heads: [...document.querySelectorAll('h2')].map(h => h.textContent),
			buttons: [...document.querySelectorAll('#history button, #run, #sign-out')].map(x => x.textContent),
			nav: [...document.querySelectorAll('header nav a')].map(a => a.textContent)})`, &page)
		all := strings.Join(append(append(page.Heads, page.Buttons...), page.Nav...), "|")
		for _, key := range []string{"history", "my_budgets", "query", "show_answer", "use", "run", "sign_out", "researcher", "account"} {
			if !strings.Contains(all, zh[key]) {
				t.Errorf("label %s (%q) not on the page: %s", key, zh[key], all)
			}
		}
		if page.Lang != "zh" || strings.Contains(all, "Query history") {
			t.Errorf("lang %q, text %s", page.Lang, all)
		}
		b.screenshot("researcher-zh")
		// A refusal still carries the server's message.
		b.open("auditor")
		eventually(t, "the refusal", func() bool { return strings.Contains(b.notice(), "needs one of the roles") })
	})
}
