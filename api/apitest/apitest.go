// Package apitest starts a whole gateway in-process for tests and benchmarks:
// a real DuckDB loaded with the synthetic demo hospital, a real SQLite (or
// PostgreSQL) metadata store, the audit log, the quota tracker and the REST
// API on a loopback port, with the demo people's tokens.
package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/emmansun/gmsm/sm2"

	"github.com/hospital/gateway/alerts"
	"github.com/hospital/gateway/api"
	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/demo/synth"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/ingest"
	"github.com/hospital/gateway/metadb"
	"github.com/hospital/gateway/privacy"
	"github.com/hospital/gateway/quota"
	"github.com/hospital/gateway/release"
)

// Options size the environment.
type Options struct {
	Patients int     // demo patients (default 2000)
	Epsilon  float64 // each researcher's budget (default 3)
	Delta    float64 // each researcher's delta (default the demo's, 2e-5)
	// Metadata is the store DSN; default an SQLite file in a temp dir.
	Metadata string
	Threads  int
	Timeout  time.Duration
	// ProcessMemoryLimit is the engine's process memory limit (default
	// the engine's).
	ProcessMemoryLimit string
	Alerts             alerts.Config
	// Bare leaves out the audit log, the quota tracker and the detectors,
	// to measure what they cost.
	Bare bool
	// Unchecked skips checking each accepted request body against the
	// served OpenAPI document in Do: the check compiles a schema validator
	// per request (a quarter of a millisecond and more of the client's
	// CPU), and benchmarks time the gateway, not the tests' own checks.
	Unchecked bool
	// Seed draws the synthetic hospital (default 20260101); federation
	// tests give each node its own.
	Seed uint64
	// AnonymousPerMinute is the server's limit on requests without a
	// valid token per address (default the server's).
	AnonymousPerMinute int
	// MaxConcurrentQueries is the server's per-person cap on queries in
	// flight (default 1024, so that bursts in tests are not refused).
	MaxConcurrentQueries int
	// Limits bound each query (default privacy.DefaultLimits); benchmarks
	// of large answers raise MaxGroups.
	Limits privacy.Limits
	// Unranked leaves the tables with several rows per patient without
	// their ranks, as a gateway that has just loaded them and is still
	// ranking them; by default New waits for the ranks, so that every
	// query of a test is planned the same way.
	Unranked bool
}

// Env is a running gateway.
type Env struct {
	URL    string
	Tokens map[string]string
	Server *api.Server
	// Release is the use case behind the server, which a federation node
	// calls.
	Release *release.Service
	Store   *catalog.Store
	// Meta is the metadata database the store, the quota, the alerts and
	// the audit log live in.
	Meta   *metadb.DB
	Engine *engine.Engine
	Audit  *audit.Log
	Quota  *quota.Tracker
	Alerts *alerts.Alerter
	// AuditKey signs the audit log's heads and exports.
	AuditKey *sm2.PrivateKey
	Client   *http.Client
	// Dir is the gateway's data directory; ImportDir, inside it, is the
	// one import directory from which datasets may be registered by path.
	Dir, ImportDir string

	tb       testing.TB
	requests *requestSchemas
}

// PostgresSchema creates a schema of its own in the PostgreSQL database at
// dsn, dropped when tb ends, and returns a DSN that uses it.
func PostgresSchema(tb testing.TB, dsn string) string {
	tb.Helper()
	ctx := context.Background()
	admin, err := metadb.Open(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("api_%d", time.Now().UnixNano())
	if _, err := admin.Writer().ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if a, err := metadb.Open(context.Background(), dsn); err == nil {
			a.Writer().Exec("DROP SCHEMA " + schema + " CASCADE")
			a.Close()
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

// LoadDemo generates the demo dataset into e and returns its row count.
func LoadDemo(ctx context.Context, e *engine.Engine, patients int) (int64, error) {
	return LoadSeeded(ctx, e, patients, 20260101)
}

// LoadSeeded generates a demo hospital drawn from seed into e.
func LoadSeeded(ctx context.Context, e *engine.Engine, patients int, seed uint64) (int64, error) {
	loaders := map[string]*engine.Loader{}
	schemas := synth.Schemas()
	var rows int64
	err := synth.Generate(synth.Config{Patients: patients, Seed: seed}, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
		l, ok := loaders[table]
		if !ok {
			if err := e.CreateTable(ctx, demo.Dataset, table, schemas[table]); err != nil {
				return err
			}
			var err error
			if l, err = e.NewLoader(ctx, demo.Dataset, table); err != nil {
				return err
			}
			loaders[table] = l
		}
		rows += rec.NumRows()
		return l.Append(rec)
	})
	for _, l := range loaders {
		if cerr := l.Close(); err == nil {
			err = cerr
		}
	}
	return rows, err
}

// New starts an environment; everything is closed when tb ends.
func New(tb testing.TB, o Options) *Env {
	tb.Helper()
	if o.Patients == 0 {
		o.Patients = 2000
	}
	ctx := context.Background()
	dir := tb.TempDir()
	if o.Metadata == "" {
		o.Metadata = filepath.Join(dir, "meta.db")
	}
	meta, err := metadb.Open(ctx, o.Metadata)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { meta.Close() })
	store, err := catalog.New(ctx, meta)
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := engine.Open(ctx, engine.Config{MemoryLimit: "4GB", Threads: o.Threads, ProcessMemoryLimit: o.ProcessMemoryLimit})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { eng.Close() })
	if o.Seed == 0 {
		o.Seed = 20260101
	}
	rows, err := LoadSeeded(ctx, eng, o.Patients, o.Seed)
	if err != nil {
		tb.Fatal(err)
	}
	if !o.Unranked {
		// As a gateway does at load, and waits for them.
		eng.RankTables(demo.Dataset, demo.Policy())
		if err := eng.WaitTables(ctx, demo.Dataset); err != nil {
			tb.Fatal(err)
		}
	}
	signer, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	log, err := audit.Open(ctx, meta, audit.Config{Signer: signer})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { log.Close(context.Background()) })
	record := func(ctx context.Context, actor, action string, fields map[string]any) {
		b, _ := json.Marshal(fields)
		if _, err := log.Append(ctx, audit.Entry{Actor: actor, Action: action, Outcome: "ok", Detail: b}); err != nil {
			tb.Errorf("audit: %v", err)
		}
	}
	tokens, err := demo.Seed(ctx, store, demo.Description(rows, int64(o.Patients)), demo.Options{Epsilon: o.Epsilon, Delta: o.Delta}, record)
	if err != nil {
		tb.Fatal(err)
	}
	q, err := quota.New(ctx, meta, store, eng, quota.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	key, err := atrest.NewKey(atrest.SM4GCM)
	if err != nil {
		tb.Fatal(err)
	}
	importDir := filepath.Join(dir, "import")
	if err := os.MkdirAll(importDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	reg := &ingest.Registrar{Store: store, Engine: eng, Dir: dir, Key: key, ImportDirs: []string{importDir}}
	al, err := alerts.New(ctx, meta, o.Alerts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(al.Close)
	rcfg := release.Config{Store: store, Engine: eng, Audit: log, Quota: q, Alerts: al, Signer: signer, QueryTimeout: o.Timeout, Limits: o.Limits,
		MaxConcurrentQueries: o.MaxConcurrentQueries}
	if rcfg.MaxConcurrentQueries == 0 {
		// Tests fire bursts of one person's queries at once to look for
		// races; the per-person cap has its own test.
		rcfg.MaxConcurrentQueries = 1 << 10
	}
	cfg := api.Config{Store: store, Audit: log, Quota: q, Registrar: reg, Alerts: al, AnonymousPerMinute: o.AnonymousPerMinute}
	if o.Bare {
		cfg.Audit, cfg.Quota, cfg.Alerts = nil, nil, nil
		rcfg.Audit, rcfg.Quota, rcfg.Alerts = nil, nil, nil
	}
	rel := release.New(rcfg)
	cfg.Release = rel
	srv := api.New(cfg)
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	var requests *requestSchemas
	if !o.Unchecked {
		if requests, err = loadRequestSchemas(hs.URL); err != nil {
			tb.Fatal(err)
		}
	}
	return &Env{URL: hs.URL, Tokens: tokens, Server: srv, Release: rel, Store: store, Meta: meta, Engine: eng, Audit: log, Quota: q, Alerts: al, AuditKey: signer,
		Dir: dir, ImportDir: importDir,
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		tb:     tb, requests: requests}
}

// Do sends a request as person and decodes the JSON answer into out (when
// not nil). It returns the HTTP status. A body the gateway accepts must
// fit the OpenAPI document's request schema, or the test fails.
func (e *Env) Do(method, path, person string, body, out any) (int, error) {
	var rd io.Reader
	var sent []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd, sent = bytes.NewReader(b), b
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		return 0, err
	}
	if tok, ok := e.Tokens[person]; ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else if person != "" {
		req.Header.Set("Authorization", "Bearer "+person)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if e.requests != nil && sent != nil && resp.StatusCode/100 == 2 {
		if err := e.requests.Check(req, sent); err != nil {
			e.tb.Errorf("%v", err)
		}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", b, err)
		}
	}
	return resp.StatusCode, nil
}
