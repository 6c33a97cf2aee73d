package benchmarks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hospital/gateway/federation/fedtest"
)

// federatedQueries group by public keys of growing domains: 1 group, the
// 31 provinces, provinces by 12 departments, and by sex as well.
var federatedQueries = []struct {
	name string
	sql  string
}{
	{"groups=1", "SELECT count(*) AS n, avg(age) AS age FROM patients"},
	{"groups=31", "SELECT province, count(*) AS n, avg(age) AS age FROM patients GROUP BY province"},
	{"groups=372", "SELECT p.province, e.department, count(*) AS n, avg(e.cost_yuan) AS cost FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.province, e.department"},
	{"groups=744", "SELECT p.province, e.department, p.sex, count(*) AS n, avg(e.cost_yuan) AS cost FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.province, e.department, p.sex"},
}

// BenchmarkFederated compares, for 3 and 8 hospitals on loopback, one
// federated query answered with homomorphic aggregation against the same
// query with plaintext aggregation, in the same run on the same data. It
// reports the milliseconds of a query and the bytes exchanged between the
// coordinator and all hospitals. Each hospital holds 2000 synthetic
// patients: the figures are the federation's overhead, not DuckDB's.
//
//	go test ./benchmarks -run x -bench Federated -benchtime 5x
func BenchmarkFederated(b *testing.B) {
	for _, nodes := range []int{3, 8} {
		c := fedtest.Start(b, fedtest.Options{Nodes: nodes, Patients: 2000, Epsilon: 100})
		for _, q := range federatedQueries {
			for _, agg := range []string{"plaintext", "homomorphic"} {
				b.Run(fmt.Sprintf("nodes=%d/%s/%s", nodes, q.name, agg), func(b *testing.B) {
					var traffic int64
					var groups, released int
					for i := 0; i < b.N; i++ {
						a, err := federated(c, q.sql, agg)
						if err != nil {
							b.Fatal(err)
						}
						traffic += a.Federation.Traffic.Sent + a.Federation.Traffic.Received
						groups = len(a.Rows) + a.Privacy.SuppressedGroups
						released = len(a.Rows)
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/query")
					b.ReportMetric(float64(traffic)/float64(b.N), "bytes/query")
					b.ReportMetric(float64(groups), "groups")
					// The groups the answer holds: a run that suppressed
					// them all would time less work than an answer.
					b.ReportMetric(float64(released), "released")
					if released == 0 {
						b.Fatalf("%s released no group", q.name)
					}
				})
			}
		}
	}
}

// BenchmarkFederatedKeyGen times a collective key generation round (every
// hospital's share, signed, checked by every other) for 3 and 8 hospitals.
func BenchmarkFederatedKeyGen(b *testing.B) {
	for _, nodes := range []int{3, 8} {
		c := fedtest.Start(b, fedtest.Options{Nodes: nodes, Patients: 200})
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := c.Coordinator.KeyGen(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/round")
		})
	}
}

type federatedAnswer struct {
	Rows    [][]any `json:"rows"`
	Privacy struct {
		SuppressedGroups int `json:"suppressed_groups"`
	} `json:"privacy"`
	Federation struct {
		Traffic struct {
			Sent     int64 `json:"bytes_to_nodes"`
			Received int64 `json:"bytes_from_nodes"`
		} `json:"traffic"`
	} `json:"federation"`
}

// federated asks the coordinator as the hospitals' internal researcher; a
// tiny delta per query lets a benchmark run thousands of them.
func federated(c *fedtest.Cluster, sql, agg string) (*federatedAnswer, error) {
	body, _ := json.Marshal(map[string]any{"sql": sql, "epsilon": 0.01, "delta": 1e-9, "aggregation": agg})
	req, _ := http.NewRequest("POST", c.URL+"/v1/queries", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]any
		json.NewDecoder(resp.Body).Decode(&e)
		return nil, fmt.Errorf("%d %v", resp.StatusCode, e)
	}
	var a federatedAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return nil, err
	}
	return &a, nil
}
