package benchmarks

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/flight"
	"github.com/hospital/gateway/privacy"
)

// largeAnswer groups the patients by age, province and sex: up to 10,752
// groups (the benchmark raises the group limit to allow it), of which
// partition selection releases those with enough patients: about 4,900 of
// 1M patients' groups, the largest answer the demo's policy lets one query
// release.
const largeAnswer = "SELECT age, province, sex, count(*) AS n FROM patients GROUP BY age, province, sex"

// BenchmarkLargeAnswer fetches the same large answer as JSON, CSV and Arrow
// IPC over REST and as Arrow over Flight SQL from one gateway, in one run. After the first release the
// answer is a stored repeat (free, but still recorded and audited), so the
// two differ only in what carries the answer.
func BenchmarkLargeAnswer(b *testing.B) {
	env := apitest.New(b, apitest.Options{Patients: 1000000, Unchecked: true, Epsilon: 100, Limits: privacy.Limits{MaxGroups: 30000}, Timeout: 10 * time.Minute})
	client := flightClient(b, env)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+env.Tokens["researcher_internal"], "gateway-epsilon", "1")
	body := map[string]any{"sql": largeAnswer, "epsilon": 1}

	b.Run("json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			var out struct {
				Rows [][]any `json:"rows"`
			}
			status, err := env.Do("POST", "/v1/queries", "researcher_internal", body, &out)
			if err != nil || status != 200 {
				b.Fatalf("query: %d %v", status, err)
			}
			b.ReportMetric(float64(len(out.Rows)), "groups")
		}
	})
	for _, f := range formats[1:] {
		b.Run(f.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				out := fetchSQL(b, env, largeAnswer, f.accept, 1)
				b.ReportMetric(float64(decodeAnswer(b, f.name, out)), "groups")
			}
		})
	}
	b.Run("flight-sql", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			info, err := client.Execute(ctx, largeAnswer)
			if err != nil {
				b.Fatal(err)
			}
			r, err := client.DoGet(ctx, info.Endpoint[0].Ticket)
			if err != nil {
				b.Fatal(err)
			}
			var rows int64
			for r.Next() {
				rows += r.RecordBatch().NumRows()
			}
			r.Release()
			if err := r.Err(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(rows), "groups")
		}
	})
}

// flightClient serves Flight SQL for env on a loopback port and connects
// to it.
func flightClient(b *testing.B, env *apitest.Env) *flightsql.Client {
	b.Helper()
	srv, err := flight.New(flight.Config{Store: env.Store, Release: env.Release, Audit: env.Audit})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := srv.GRPC()
	done := make(chan error, 1)
	go func() { done <- g.Serve(ln) }()
	b.Cleanup(func() {
		g.Stop()
		<-done
	})
	client, err := flightsql.NewClient(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { client.Close() })
	return client
}
