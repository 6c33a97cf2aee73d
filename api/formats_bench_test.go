package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/release"
)

// BenchmarkEncodeAnswer times writing a 10,000-group answer (the default
// limit on groups) in each format, from a release.Result as postQuery
// gets it: the encoders alone, without the query, the store or the
// network. benchmarks.BenchmarkAnswerFormats measures the whole fetch.
func BenchmarkEncodeAnswer(b *testing.B) {
	gin.SetMode(gin.ReleaseMode)
	res := bigResult(b, 10000)
	for _, media := range []string{mediaJSON, mediaCSV, mediaArrow} {
		b.Run(formatName(media), func(b *testing.B) {
			var size int
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				c, _ := gin.CreateTestContext(w)
				if err := writeAnswer(c, media, res); err != nil {
					b.Fatal(err)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes")
		})
	}
}

func formatName(media string) string {
	for k, v := range formatNames {
		if v == media {
			return k
		}
	}
	return media
}

// bigResult is a result of n groups (age, province) with a count and a
// mean, decoded from its JSON as the release service does.
func bigResult(tb testing.TB, n int) *release.Result {
	tb.Helper()
	a := release.Answer{QueryID: "qry_bench", GrantID: "grt_bench", Grade: "core", Answer: privacy.Answer{
		Columns: []engine.Column{{Name: "age", Type: "INTEGER"}, {Name: "province", Type: "VARCHAR"}, {Name: "n", Type: "BIGINT"}, {Name: "mean_cost", Type: "DOUBLE"}},
		Rows:    [][]any{},
		Privacy: privacy.Report{Mechanism: privacy.Laplace, Epsilon: 1, K: 10, Columns: map[string]privacy.ColumnReport{"n": {NoiseScale: 2, CI95: 5.99}, "mean_cost": {NoiseScale: 40, CI95: 120.5}}},
	}}
	for i := 0; i < n; i++ {
		a.Rows = append(a.Rows, []any{i % 111, fmt.Sprintf("province %d", i/111), 40 + i%97, 1234.5678 + float64(i)/7})
	}
	body, err := json.Marshal(a)
	if err != nil {
		tb.Fatal(err)
	}
	return release.NewResult(body, catalog.Balance{EpsilonSpent: 1, EpsilonRemaining: 2}, false, nil)
}
