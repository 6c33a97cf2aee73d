package benchmarks

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/hospital/gateway/api/apitest"
)

// formatsSQL is the largest answer the demo's policy allows on the
// patients table: age's declared bound (111 values, and NULL) times the
// provinces' public list (31, and NULL) is 3584 groups; any third key (sex
// with its NULL makes 10,752, so does a CASE over sex) takes the bound over
// the default limit of 10,000. Each patient is in one group, so the
// threshold of partition selection is low (about 45 patients at epsilon
// 1) and, on 1M patients, nearly every group is released. The encoders
// alone at exactly 10,000 groups are measured by api.BenchmarkEncodeAnswer.
const formatsSQL = `SELECT age, province, count(*) AS n FROM patients GROUP BY age, province`

var formats = []struct{ name, accept string }{
	{"json", "application/json"},
	{"csv", "text/csv"},
	{"arrow", "application/vnd.apache.arrow.stream"},
}

// BenchmarkAnswerFormats times fetching one large answer as JSON, CSV and
// an Arrow IPC stream from the same gateway: "fresh" runs the query each
// time (a distinct epsilon defeats the answer cache), "repeat" fetches the
// stored answer, so that the difference between formats is not lost in
// the query's own time. Each reports the groups, the bytes sent, and the
// time to decode them on the client (encoding/json, encoding/csv,
// arrow-go's ipc reader).
func BenchmarkAnswerFormats(b *testing.B) {
	env := apitest.New(b, apitest.Options{Patients: 1000000, Unchecked: true, Epsilon: 100, Timeout: 10 * time.Minute})
	for _, mode := range []string{"fresh", "repeat"} {
		for fi, f := range formats {
			b.Run(mode+"/"+f.name, func(b *testing.B) {
				eps := 1.0
				if mode == "repeat" {
					fetchAnswer(b, env, f.accept, eps) // stored before timing
				}
				var groups, size int
				var decode time.Duration
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if mode == "fresh" {
						eps = fresh(0.99-0.01*float64(fi), i)
					}
					body := fetchAnswer(b, env, f.accept, eps)
					start := time.Now()
					groups = decodeAnswer(b, f.name, body)
					decode += time.Since(start)
					size = len(body)
				}
				b.ReportMetric(float64(groups), "groups")
				b.ReportMetric(float64(size), "bytes")
				b.ReportMetric(float64(decode.Microseconds())/float64(b.N)/1000, "decode-ms/op")
			})
		}
	}
}

func fetchAnswer(b *testing.B, env *apitest.Env, accept string, eps float64) []byte {
	return fetchSQL(b, env, formatsSQL, accept, eps)
}

func fetchSQL(b *testing.B, env *apitest.Env, sql, accept string, eps float64) []byte {
	b.Helper()
	q, _ := json.Marshal(map[string]any{"sql": sql, "epsilon": eps})
	req, err := http.NewRequest("POST", env.URL+"/v1/queries", bytes.NewReader(q))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.Tokens["researcher_internal"])
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	resp, err := env.Client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%d %v %.300s", resp.StatusCode, err, body)
	}
	return body
}

// decodeAnswer decodes an answer as a client would and returns its
// number of groups.
func decodeAnswer(b *testing.B, format string, body []byte) int {
	b.Helper()
	switch format {
	case "json":
		var a struct {
			Rows [][]any `json:"rows"`
		}
		if err := json.Unmarshal(body, &a); err != nil {
			b.Fatal(err)
		}
		return len(a.Rows)
	case "csv":
		records, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if err != nil {
			b.Fatal(err)
		}
		return len(records) - 1
	}
	rd, err := ipc.NewReader(bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Release()
	n := 0
	for rd.Next() {
		n += int(rd.RecordBatch().NumRows())
	}
	if err := rd.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}
