package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/api"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/flight"
	"github.com/hospital/gateway/ingest"
	"github.com/hospital/gateway/metadb"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
	"github.com/hospital/gateway/release"
)

// options are the settings common to demo and serve.
type options struct {
	Addr string `yaml:"addr"`
	Dir  string `yaml:"dir"`
	// Keys is the key directory, outside Dir (default DIR-keys, beside it).
	Keys        string `yaml:"keys"`
	Metadata    string `yaml:"metadata"`
	MemoryLimit string `yaml:"memory_limit"`
	// ProcessMemoryLimit caps the process's resident memory (default
	// MemoryLimit plus a quarter plus 512 MiB); see engine.Config.
	ProcessMemoryLimit string        `yaml:"process_memory_limit"`
	Threads            int           `yaml:"threads"`
	QueryTimeout       time.Duration `yaml:"query_timeout"`
	MaxBody            int64         `yaml:"max_body_bytes"`
	Limits             privacy.Limits
	Alerts             alerts.Config
	GradeRules         policy.GradeRules
	// TLSCert and TLSKey, when set, serve the API over TLS (Art. 22(3)).
	TLSCert, TLSKey string
	// SignInterval is how often the audit head is signed while the
	// gateway runs (default audit.DefaultSignInterval).
	SignInterval time.Duration
	// CheckpointEvery is how often a signed audit checkpoint is posted to
	// the alert webhook, when there is one (default an hour).
	CheckpointEvery time.Duration
	// ImportDirs are the directories whose files stewards may register
	// over the API by path.
	ImportDirs []string
	// MetricsAddr, when set, serves /metrics there without a token, for
	// a scraper on the monitoring network; on Addr it needs an admin's or
	// auditor's token.
	MetricsAddr string
	// FlightAddr, when set, serves Arrow Flight SQL there, with the same
	// tokens and over the same TLS pair as the API.
	FlightAddr string
}

func (o *options) defaults() {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:8080"
	}
	if o.Dir == "" {
		o.Dir = defaultDir
	}
	if o.Metadata == "" {
		o.Metadata = filepath.Join(o.Dir, "metadata.db")
	}
	if o.Keys == "" {
		o.Keys = keysBeside(o.Dir)
	}
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = time.Hour
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 30 * time.Second
	}
}

// gateway is every part of a running gateway.
type gateway struct {
	opts   options
	meta   *metadb.DB
	store  *catalog.Store
	engine *engine.Engine
	audit  *audit.Log
	alerts *alerts.Alerter
	signer *sm2.PrivateKey
	key    atrest.Key
	log    *slog.Logger
	// stop ends the goroutines that sign the audit head and ship
	// checkpoints; Close waits for them.
	stop context.CancelFunc
	wg   sync.WaitGroup
}

func openGateway(ctx context.Context, opts options, log *slog.Logger) (*gateway, error) {
	opts.defaults()
	if err := checkKeyPlacement(opts.Dir, opts.Keys); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	key, err := dataKey(opts.Keys)
	if err != nil {
		return nil, err
	}
	meta, err := metadb.Open(ctx, opts.Metadata)
	if err != nil {
		return nil, err
	}
	g := &gateway{opts: opts, meta: meta, key: key, log: log}
	fail := func(err error) (*gateway, error) {
		meta.Close()
		return nil, err
	}
	if g.store, err = catalog.New(ctx, meta); err != nil {
		return fail(err)
	}
	if g.signer, err = auditKey(opts.Keys); err != nil {
		return fail(err)
	}
	if g.audit, err = audit.Open(ctx, meta, audit.Config{Signer: g.signer, SignInterval: opts.SignInterval}); err != nil {
		return fail(err)
	}
	opts.Alerts.Log = log
	if g.alerts, err = alerts.New(ctx, meta, opts.Alerts); err != nil {
		return fail(err)
	}
	if g.engine, err = engine.Open(ctx, engine.Config{MemoryLimit: opts.MemoryLimit, Threads: opts.Threads, ProcessMemoryLimit: opts.ProcessMemoryLimit}); err != nil {
		return fail(err)
	}
	log.Info("process memory limit", "bytes", g.engine.ProcessMemoryLimit())
	g.startAuditSigning()
	return g, nil
}

// startAuditSigning signs the audit head every SignInterval, so that a
// crash or an intruder leaves at most that much of the log unsigned (the
// first round, at once, signs what a crash left), and posts a checkpoint to
// the webhook every CheckpointEvery, for auditors to keep outside.
func (g *gateway) startAuditSigning() {
	ctx, stop := context.WithCancel(context.Background())
	g.stop = stop
	g.wg.Go(func() {
		g.audit.KeepSigned(ctx, func(err error) { g.log.Error("sign audit head", "err", err) })
	})
	if g.opts.Alerts.Webhook == "" {
		return
	}
	g.wg.Go(func() {
		t := time.NewTicker(g.opts.CheckpointEvery)
		defer t.Stop()
		for {
			g.shipCheckpoint(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// shipCheckpoint posts the audit log's signed checkpoint to the webhook as
// {"kind": "audit.checkpoint", "checkpoint": {...}}.
func (g *gateway) shipCheckpoint(ctx context.Context) {
	cp, err := g.audit.Checkpoint(ctx)
	if errors.Is(err, audit.ErrEmpty) || ctx.Err() != nil {
		return
	}
	if err != nil {
		g.log.Error("audit checkpoint", "err", err)
		return
	}
	if err := g.alerts.Send(ctx, map[string]any{"kind": "audit.checkpoint", "checkpoint": cp}); err != nil {
		g.log.Error("ship audit checkpoint", "size", cp.Size, "err", err)
	}
}

// Close stops signing, signs the head a last time (and ships it), and
// closes every part.
func (g *gateway) Close() error {
	g.stop()
	g.wg.Wait()
	err := g.audit.Close(context.Background())
	if err == nil && g.opts.Alerts.Webhook != "" {
		g.shipCheckpoint(context.Background())
	}
	g.alerts.Close()
	return errors.Join(g.engine.Close(), err, g.store.Close(), g.meta.Close())
}

// loadDatasets loads every registered dataset's tables into the engine.
func (g *gateway) loadDatasets(ctx context.Context) error {
	ds, err := g.store.Datasets(ctx)
	if err != nil {
		return err
	}
	for _, d := range ds {
		start := time.Now()
		var rows int64
		for _, t := range d.Policy.Tables {
			n, err := g.engine.LoadTable(ctx, d.Name, t.Name, engine.TableFile(g.opts.Dir, d.Name, t.Name), g.key)
			if err != nil {
				return fmt.Errorf("load dataset %s: %w", d.Name, err)
			}
			rows += n
		}
		// Queries do not wait for the ranks: until they exist, the
		// dataset is served by the plans that need none.
		g.engine.RankTables(d.Name, d.Policy)
		g.log.Info("dataset loaded", "dataset", d.Name, "grade", d.Grade, "rows", rows, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// releases builds the release use case over the gateway's parts.
func (g *gateway) releases(quota *quota.Tracker) *release.Service {
	return release.New(release.Config{
		Store: g.store, Engine: g.engine, Audit: g.audit, Quota: quota, Alerts: g.alerts, Signer: g.signer,
		Limits: g.opts.Limits, QueryTimeout: g.opts.QueryTimeout, GradeRules: g.opts.GradeRules, Log: g.log,
	})
}

// apiServer builds the REST API over the gateway's parts.
func (g *gateway) apiServer(quota *quota.Tracker, rel *release.Service) *api.Server {
	return api.New(api.Config{
		Store: g.store, Audit: g.audit, Log: g.log, MaxBody: g.opts.MaxBody, Quota: quota, Alerts: g.alerts,
		Registrar: &ingest.Registrar{Store: g.store, Engine: g.engine, Dir: g.opts.Dir, Key: g.key, ImportDirs: g.opts.ImportDirs, GradeRules: g.opts.GradeRules},
		Release:   rel,
	})
}

// listeners are the addresses a serving gateway answers on, bound before
// the datasets load so that a busy port fails at once.
type listeners struct {
	api, metrics, flight net.Listener
}

// listen binds the API address and, when configured, the metrics and the
// Flight SQL addresses.
func (g *gateway) listen() (*listeners, error) {
	ln, err := net.Listen("tcp", g.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (another process holds it? change addr: in the configuration)", g.opts.Addr, err)
	}
	l := &listeners{api: ln}
	if g.opts.MetricsAddr != "" {
		if l.metrics, err = net.Listen("tcp", g.opts.MetricsAddr); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s: %w (change metrics_addr: in the configuration)", g.opts.MetricsAddr, err)
		}
	}
	if g.opts.FlightAddr != "" {
		if l.flight, err = net.Listen("tcp", g.opts.FlightAddr); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: %w (change --flight-addr or flight_addr: in the configuration)", g.opts.FlightAddr, err)
		}
	}
	return l, nil
}

// Close releases listeners that were never served.
func (l *listeners) Close() {
	for _, ln := range []net.Listener{l.api, l.metrics, l.flight} {
		if ln != nil {
			ln.Close()
		}
	}
}

// drain is how long shutdown waits for requests in flight: at least the
// longest a query may run, so that a query under way when the gateway is
// stopped still answers, records its history and audits its release.
func (g *gateway) drain() time.Duration {
	return max(30*time.Second, g.opts.QueryTimeout+5*time.Second)
}

// listenAndLoad binds the listeners, then loads the datasets and builds
// the Article 11 tracker: what every serving command does before it
// serves.
func (g *gateway) listenAndLoad(ctx context.Context, warnings []float64) (*listeners, *quota.Tracker, error) {
	l, err := g.listen()
	if err != nil {
		return nil, nil, err
	}
	q, err := g.load(ctx, warnings)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, q, nil
}

// serve runs the API (and the metrics and Flight SQL listeners, when
// configured) on l until ctx ends, then drains requests. Any listener
// failing stops them all.
func (g *gateway) serve(ctx context.Context, quota *quota.Tracker, l *listeners) error {
	tlsConfig, err := serverTLS(g.opts.TLSCert, g.opts.TLSKey)
	if err != nil {
		l.Close()
		return err
	}
	rel := g.releases(quota)
	srv := g.apiServer(quota, rel)
	var fl *flight.Server
	if l.flight != nil {
		if fl, err = g.flightServer(rel); err != nil {
			l.Close()
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	run := func(i int, f func() error) {
		wg.Go(func() {
			defer cancel()
			errs[i] = f()
		})
	}
	run(0, func() error { return serveOn(ctx, g.log, "gateway", l.api, srv.Handler(), tlsConfig, g.drain()) })
	if l.metrics != nil {
		run(1, func() error { return serveOn(ctx, g.log, "metrics", l.metrics, srv.MetricsHandler(), nil, g.drain()) })
	}
	if fl != nil {
		run(2, func() error { return serveFlight(ctx, g.log, l.flight, fl, tlsConfig, g.drain()) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// flightServer builds the Flight SQL service over the same release use
// case as the API.
func (g *gateway) flightServer(rel *release.Service) (*flight.Server, error) {
	return flight.New(flight.Config{Store: g.store, Release: rel, Audit: g.audit, Log: g.log, Version: gatewayVersion()})
}

// serveFlight serves Flight SQL on ln (over TLS when tlsConfig is set)
// until ctx ends, then lets calls in flight finish for up to drain.
func serveFlight(ctx context.Context, log *slog.Logger, ln net.Listener, fl *flight.Server, tlsConfig *tls.Config, drain time.Duration) error {
	var opts []grpc.ServerOption
	scheme := "grpc"
	if tlsConfig != nil {
		opts, scheme = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig))), "grpc+tls"
	}
	gs := fl.GRPC(opts...)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	log.Info("flight sql serving", "addr", scheme+"://"+ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve flight sql: %w", err)
	case <-ctx.Done():
	}
	log.Info("flight sql draining", "for_at_most", drain)
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(drain):
		gs.Stop()
		<-stopped
	}
	<-errc
	return nil
}

// serverTLS is the TLS configuration of an API served with the PEM pair
// cert and key, or nil when cert is empty (plain HTTP).
func serverTLS(cert, key string) (*tls.Config, error) {
	if cert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// serveOn serves h on ln (over TLS when tlsConfig is set) until ctx ends,
// then drains requests for up to drain.
func serveOn(ctx context.Context, log *slog.Logger, what string, ln net.Listener, h http.Handler, tlsConfig *tls.Config, drain time.Duration) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsConfig}
	errc := make(chan error, 1)
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
		go func() { errc <- hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- hs.Serve(ln) }()
	}
	base := scheme + "://" + ln.Addr().String()
	log.Info(what+" serving", "addr", base)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", what, err)
	case <-ctx.Done():
	}
	log.Info(what+" draining", "for_at_most", drain)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down %s: %w", what, err)
	}
	<-errc
	return nil
}
