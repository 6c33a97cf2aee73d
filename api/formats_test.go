package api_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/audit"
)

// postAs sends a query as person with the given Accept header and path
// suffix, and returns the response with its body read.
func postAs(t *testing.T, env *apitest.Env, person, accept, suffix string, body map[string]any) (*http.Response, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", env.URL+"/v1/queries"+suffix, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.Tokens[person])
	req.Header.Set("Content-Type", "application/json")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, out
}

// TestAnswerFormats asks one question in each shape. The first, as CSV,
// is released afresh; JSON and Arrow repeat it: every shape carries the
// same answer, the budget is spent once, and the audit log holds one
// fresh release.
func TestAnswerFormats(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 2000})
	q := map[string]any{"sql": "SELECT sex, count(*) AS n, avg(age) AS mean_age FROM patients GROUP BY sex", "epsilon": 0.5}

	resp, body := postAs(t, env, "researcher_internal", "text/csv", "", q)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	records, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, body)
	}
	var privacy struct {
		Epsilon float64 `json:"epsilon"`
		Columns map[string]struct {
			CI95 float64 `json:"ci95"`
		} `json:"columns"`
	}
	var budget struct {
		EpsilonSpent float64 `json:"epsilon_spent"`
	}
	if err := json.Unmarshal([]byte(resp.Header.Get("Gateway-Privacy")), &privacy); err != nil || privacy.Epsilon != 0.5 || privacy.Columns["n"].CI95 <= 0 {
		t.Errorf("Gateway-Privacy %q: %v", resp.Header.Get("Gateway-Privacy"), err)
	}
	if err := json.Unmarshal([]byte(resp.Header.Get("Gateway-Budget")), &budget); err != nil || budget.EpsilonSpent != 0.5 {
		t.Errorf("Gateway-Budget %q: %v", resp.Header.Get("Gateway-Budget"), err)
	}
	if resp.Header.Get("Vary") != "Accept" {
		t.Errorf("Vary %q: caches must key answers on Accept", resp.Header.Get("Vary"))
	}
	queryID := resp.Header.Get("Gateway-Query-Id")
	if queryID == "" || resp.Header.Get("Gateway-Cached") != "false" || resp.Header.Get("Gateway-Receipt") == "" {
		t.Errorf("headers %v", resp.Header)
	}

	status, a, e := query(t, env, "researcher_internal", q["sql"].(string), 0.5)
	if status != 200 || !a.Cached || a.QueryID != queryID || a.Budget.EpsilonSpent != 0.5 {
		t.Fatalf("json repeat: %d %+v %+v", status, a, e)
	}
	want := [][]string{{"sex", "n", "mean_age"}}
	for _, r := range a.Rows {
		want = append(want, []string{r[0].(string), strconv.FormatFloat(r[1].(float64), 'f', -1, 64), strconv.FormatFloat(r[2].(float64), 'f', -1, 64)})
	}
	if fmt.Sprint(records) != fmt.Sprint(want) {
		t.Errorf("csv %v, json %v", records, want)
	}

	resp, body = postAs(t, env, "researcher_internal", "application/vnd.apache.arrow.stream", "", q)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.apache.arrow.stream" {
		t.Fatalf("arrow: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	rd, err := ipc.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	s := rd.Schema()
	types := fmt.Sprint(s.Field(0).Type, s.Field(1).Type, s.Field(2).Type)
	if types != fmt.Sprint(arrow.BinaryTypes.String, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64) {
		t.Errorf("arrow types %s", types)
	}
	meta := s.Metadata()
	if v, _ := meta.GetValue("gateway.query_id"); v != queryID {
		t.Errorf("arrow query_id %q, want %q", v, queryID)
	}
	if v, _ := meta.GetValue("gateway.privacy"); v != resp.Header.Get("Gateway-Privacy") || v == "" {
		t.Errorf("arrow privacy %q", v)
	}
	if v, _ := meta.GetValue("gateway.receipt"); !strings.Contains(v, queryID) {
		t.Errorf("arrow receipt %q", v)
	}
	if v, _ := s.Field(1).Metadata.GetValue("gateway.ci95"); v != strconv.FormatFloat(privacy.Columns["n"].CI95, 'g', -1, 64) {
		t.Errorf("field ci95 %q", v)
	}
	var got [][]any
	for rd.Next() {
		rec := rd.RecordBatch()
		sex, n, mean := rec.Column(0).(*array.String), rec.Column(1).(*array.Int64), rec.Column(2).(*array.Float64)
		for i := 0; i < int(rec.NumRows()); i++ {
			got = append(got, []any{sex.Value(i), float64(n.Value(i)), mean.Value(i)})
		}
	}
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(a.Rows) {
		t.Errorf("arrow %v, json %v", got, a.Rows)
	}

	entries, err := env.Audit.List(context.Background(), audit.Filter{Actor: "researcher_internal", Action: "query"})
	if err != nil {
		t.Fatal(err)
	}
	fresh := 0
	for _, en := range entries {
		if !strings.Contains(string(en.Detail), `"cached":true`) && strings.Contains(string(en.Detail), queryID) {
			fresh++
		}
	}
	if len(entries) != 3 || fresh != 1 {
		t.Errorf("audit: %d query entries, %d fresh releases of %s; want 3 and 1", len(entries), fresh, queryID)
	}
}

// TestAnswerFormatsEmpty: when every group is suppressed, JSON has an
// empty rows array, CSV only its header and Arrow an empty batch of the
// right schema.
func TestAnswerFormatsEmpty(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 500})
	q := map[string]any{"sql": "SELECT sex, count(*) AS n FROM patients WHERE age < 0 GROUP BY sex", "epsilon": 0.5}
	resp, body := postAs(t, env, "researcher_internal", "", "", q)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); resp.StatusCode != 200 || err != nil || string(raw["rows"]) != "[]" {
		t.Fatalf("json: %d %s", resp.StatusCode, body)
	}
	resp, body = postAs(t, env, "researcher_internal", "text/csv", "", q)
	if resp.StatusCode != 200 || string(body) != "sex,n\n" {
		t.Errorf("csv: %d %q", resp.StatusCode, body)
	}
	resp, body = postAs(t, env, "researcher_internal", "", "?format=arrow", q)
	rd, err := ipc.NewReader(bytes.NewReader(body))
	if resp.StatusCode != 200 || err != nil {
		t.Fatalf("arrow: %d %v", resp.StatusCode, err)
	}
	defer rd.Release()
	rows := int64(0)
	for rd.Next() {
		rows += rd.RecordBatch().NumRows()
	}
	if rows != 0 || rd.Schema().NumFields() != 2 {
		t.Errorf("arrow: %d rows, schema %v", rows, rd.Schema())
	}
}

// TestAnswerFormatNegotiation: Accept picks the shape by quality, JSON is
// the default and the answer to anything not offered, and the format
// parameter wins over Accept. Refusals are JSON whatever was asked.
func TestAnswerFormatNegotiation(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 300})
	q := map[string]any{"sql": "SELECT count(*) AS n FROM patients", "epsilon": 0.1}
	for _, tc := range []struct {
		name, accept, suffix, want string
	}{
		{"none", "", "", "application/json"},
		{"any", "*/*", "", "application/json"},
		{"csv", "text/csv", "", "text/csv"},
		{"arrow", "application/vnd.apache.arrow.stream", "", "application/vnd.apache.arrow.stream"},
		{"quality", "application/json;q=0.5, text/csv;q=0.9", "", "text/csv"},
		{"browser", "text/html,application/xhtml+xml,*/*;q=0.8", "", "application/json"},
		{"not offered", "application/xml", "", "application/json"},
		{"parameter", "application/json", "?format=csv", "text/csv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postAs(t, env, "researcher_internal", tc.accept, tc.suffix, q)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.want) {
				t.Errorf("%d %s, want %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.want, body)
			}
		})
	}
	for _, tc := range []struct {
		name, accept, suffix string
		body                 map[string]any
		code                 string
	}{
		{"unknown format", "", "?format=xml", q, "invalid_request"},
		{"refused as csv", "text/csv", "", map[string]any{"sql": "SELECT patient_id FROM patients"}, "query_rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postAs(t, env, "researcher_internal", tc.accept, tc.suffix, tc.body)
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode == 200 || e.Error.Code != tc.code {
				t.Errorf("%d %s, want code %s", resp.StatusCode, body, tc.code)
			}
		})
	}
}
