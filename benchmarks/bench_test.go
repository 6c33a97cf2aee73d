package benchmarks

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hospital/gateway/api/apitest"
)

// queries are the researcher questions of the benchmark: the shapes
// studies write, unfiltered and filtered, on public and non-public keys.
var queries = []struct {
	name string
	sql  string
	// delta, when set, is asked for with each query: Gaussian noise.
	delta float64
}{
	{name: "count_group_by", sql: "SELECT department, count(*) AS n FROM encounters GROUP BY department"},
	{name: "sum_avg_join", sql: "SELECT p.province, sum(e.cost_yuan) AS cost, avg(e.length_of_stay_days) AS los FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.province"},
	{name: "quantile", sql: "SELECT p.sex, median(e.cost_yuan) AS median_cost FROM encounters e JOIN patients p ON e.patient_id = p.patient_id GROUP BY p.sex"},
	{name: "filtered_avg", sql: "SELECT department, avg(cost_yuan) AS cost FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department"},
	{name: "count_distinct", sql: "SELECT department, count(DISTINCT patient_id) AS n FROM encounters GROUP BY department"},
	{name: "patients_filtered", sql: "SELECT count(*) AS n FROM patients WHERE age > 50"},
	{name: "filtered_join", sql: "SELECT p.province, count(*) AS n, avg(e.cost_yuan) AS cost FROM encounters e JOIN patients p ON e.patient_id = p.patient_id WHERE e.admit_date >= DATE '2023-01-01' AND p.age > 50 GROUP BY p.province"},
	{name: "partition_selected", sql: "SELECT diagnosis_icd10, count(*) AS n FROM encounters GROUP BY diagnosis_icd10"},
	{name: "filtered_quantile", sql: "SELECT department, median(cost_yuan) AS median_cost FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department"},
	{name: "gaussian_count", sql: "SELECT department, count(*) AS n FROM encounters GROUP BY department", delta: 1e-8},
	{name: "gaussian_filtered_avg", sql: "SELECT department, avg(cost_yuan) AS cost FROM encounters WHERE admit_date >= DATE '2023-01-01' GROUP BY department", delta: 1e-8},
}

// coreQueries are the first three shapes, which the overhead benchmark
// has always measured.
var coreQueries = queries[:3]

type size struct {
	name     string
	patients int
}

func sizes() []size {
	s := []size{{"1M", 250000}}
	if os.Getenv("GATEWAY_BENCH_10M") != "" {
		s = append(s, size{"10M", 2500000})
	}
	return s
}

// raw qualifies the tables of sql with the dataset's schema, which is all
// DuckDB needs to run the researcher's original SQL directly.
func raw(sql string) string {
	r := strings.NewReplacer(" encounters", " demo_hospital.encounters", " patients", " demo_hospital.patients")
	return r.Replace(sql)
}

// BenchmarkGatewayVsDuckDB times each query shape through the gateway,
// end to end over HTTP, and on raw DuckDB over the same tables in the same
// run, alternately, and reports the medians of both over the iterations
// and the ratio of the medians (medians, since other work on the machine
// makes single iterations noisy).
func BenchmarkGatewayVsDuckDB(b *testing.B) {
	for _, sz := range sizes() {
		// New waits for the encounters' hidden row rank, which a gateway
		// builds in the background as it loads them: it is part of
		// loading the data, not of answering a query.
		env := apitest.New(b, apitest.Options{Patients: sz.patients, Unchecked: true, Epsilon: 100, Delta: 1e-4, Timeout: 10 * time.Minute})
		for _, q := range queries {
			b.Run(sz.name+"/"+q.name, func(b *testing.B) {
				ctx := context.Background()
				raws := make([]time.Duration, 0, b.N)
				gws := make([]time.Duration, 0, b.N)
				for i := 0; i < b.N; i++ {
					start := time.Now()
					if _, err := env.Engine.Query(ctx, raw(q.sql), 100000); err != nil {
						b.Fatal(err)
					}
					raws = append(raws, time.Since(start))
					start = time.Now()
					var out map[string]any
					// A distinct epsilon per iteration defeats the answer
					// cache, so every iteration is a fresh, charged query.
					body := map[string]any{"sql": q.sql, "epsilon": fresh(0.2, i)}
					if q.delta > 0 {
						body["delta"] = q.delta
					}
					status, err := env.Do("POST", "/v1/queries", "researcher_internal", body, &out)
					if err != nil || status != 200 {
						b.Fatalf("gateway: %d %v %v", status, err, out)
					}
					gws = append(gws, time.Since(start))
					if !released(out) {
						b.Fatalf("gateway released no group: %v", out)
					}
				}
				r, g := median(raws), median(gws)
				b.ReportMetric(ms(r), "raw-ms")
				b.ReportMetric(ms(g), "gateway-ms")
				b.ReportMetric(float64(g)/float64(r), "ratio")
			})
		}
	}
}

// BenchmarkSmallQueriesQPS sends distinct small queries from 1 and from 16
// concurrent clients and reports answered queries per second and the
// median and 99th percentile latency of one query; every answer's budget
// spend is committed durably before it is returned.
//
//	go test ./benchmarks -run x -bench SmallQueriesQPS -benchtime 3000x
func BenchmarkSmallQueriesQPS(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			// Each query spends delta 1e-8 on its noisy k rule: the
			// grant's delta must pay for every iteration.
			env := apitest.New(b, apitest.Options{Patients: 20000, Unchecked: true, Epsilon: 100, Delta: 1e-8 * float64(b.N+1) * 1.01})
			var next atomic.Int64
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			cpu0 := cpuTime()
			start := time.Now()
			var wg sync.WaitGroup
			var failed, empty atomic.Int64
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						var out map[string]any
						// At the tiny epsilon that lets the grant pay for
						// every iteration, the noisy k rule releases a
						// group of a few thousand patients: ages from 0 to
						// 49 keep both sexes released.
						sql := fmt.Sprintf("SELECT sex, count(*) AS n FROM patients WHERE age >= %d GROUP BY sex", i%50)
						t := time.Now()
						status, err := env.Do("POST", "/v1/queries", "researcher_internal", map[string]any{"sql": sql, "epsilon": fresh(0.01, int(i))}, &out)
						lat[i-1] = time.Since(t)
						if err != nil || status != 200 {
							failed.Add(1)
						} else if !released(out) {
							empty.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			cpu := cpuTime() - cpu0
			if failed.Load() > 0 {
				b.Fatalf("%d queries failed", failed.Load())
			}
			if empty.Load() > 0 {
				b.Fatalf("%d answers released no group", empty.Load())
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
			b.ReportMetric(ms(median(lat)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
			// The process's CPU time per query (server and the clients,
			// which run in it), steadier than the rates when others share
			// the machine: 2 cores / cpu-ms is what they allow.
			b.ReportMetric(ms(cpu)/float64(b.N), "cpu-ms/query")
		})
	}
}

// released reports whether an answer holds at least one group. A plan
// that suppressed every group would do less work than a real answer, so
// a benchmark that times it must not pass.
func released(out map[string]any) bool {
	rows, _ := out["rows"].([]any)
	return len(rows) > 0
}

// median is the median of ds.
func median(ds []time.Duration) time.Duration { return percentile(ds, 0.5) }

// percentile is the p-quantile of ds (nearest rank).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// cpuTime is the CPU time, user and system, the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkAuditAndQuotaOverhead runs the core queries as the external
// researcher (so every release is measured for the Article 11 quota, whose
// line a recorded risk assessment lifts) on a full gateway and on one
// without the audit log, the quota tracker and the detectors, and reports
// the ratio of their latencies.
func BenchmarkAuditAndQuotaOverhead(b *testing.B) {
	full := apitest.New(b, apitest.Options{Patients: 250000, Unchecked: true, Epsilon: 100})
	bare := apitest.New(b, apitest.Options{Patients: 250000, Unchecked: true, Epsilon: 100, Bare: true})
	if status, err := full.Do("POST", "/v1/quota/risk-assessments", "approver", map[string]any{"dataset": "demo_hospital", "threshold": 1.0, "reference": "bench"}, nil); err != nil || status != 200 {
		b.Fatalf("risk assessment: %d %v", status, err)
	}
	for _, q := range coreQueries {
		b.Run(q.name, func(b *testing.B) {
			var fullT, bareT time.Duration
			for i := 0; i < b.N; i++ {
				for _, env := range []*apitest.Env{full, bare} {
					start := time.Now()
					var out map[string]any
					status, err := env.Do("POST", "/v1/queries", "researcher", map[string]any{"sql": q.sql, "epsilon": fresh(0.2, i)}, &out)
					if err != nil || status != 200 {
						b.Fatalf("%d %v %v", status, err, out)
					}
					if env == full {
						fullT += time.Since(start)
					} else {
						bareT += time.Since(start)
					}
				}
			}
			b.ReportMetric(float64(fullT.Microseconds())/float64(b.N)/1000, "full-ms/op")
			b.ReportMetric(float64(bareT.Microseconds())/float64(b.N)/1000, "bare-ms/op")
			b.ReportMetric(float64(fullT)/float64(bareT), "overhead-ratio")
		})
	}
}

// fresh returns an epsilon near base that no earlier iteration, nor an
// earlier run against the same environment (-count), has used: a distinct
// epsilon defeats the answer cache, so every iteration is a charged query.
func fresh(base float64, i int) float64 {
	return base + float64(i)*1e-9 + rand.Float64()*1e-6
}
