package api

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus metrics, on a registry of the
// server's own. They count requests, refusals and spent budget, never data.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	epsilon  *prometheus.CounterVec
	// steps say where a fresh release's time goes (release.Result.Steps).
	steps *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_requests_total", Help: "API requests by route and status.",
		}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_request_seconds", Help: "API request latency by route.", Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		epsilon: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_epsilon_spent_total", Help: "Privacy budget spent by released answers, by dataset.",
		}, []string{"dataset"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_release_step_seconds", Help: "Time of each step of a fresh release (admit, plan, repeat, quota, prepare, reserve, bound, run, protect, commit).",
			Buckets: []float64{0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30},
		}, []string{"step"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.epsilon, m.steps, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) middleware(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
	m.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

func (m *metrics) handler() gin.HandlerFunc {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return func(c *gin.Context) { h.ServeHTTP(c.Writer, c.Request) }
}
