// Package fedtest starts a whole federation in-process for tests,
// benchmarks and the demo: several hospital gateways, each with its own
// synthetic data, DuckDB and metadata store, their federation endpoints
// behind mutual TLS on loopback, and a coordinator.
package fedtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/hospital/gateway/api/apitest"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/federation"
)

// Options size the federation.
type Options struct {
	Nodes    int     // default 3
	Patients int     // per hospital, default 2000
	Epsilon  float64 // each researcher's budget at each hospital, default 3
	// Postgres, when set, is a PostgreSQL DSN: the first hospital keeps
	// its metadata there (in a schema of its own), the others in SQLite.
	Postgres string
}

// Cluster is a running federation.
type Cluster struct {
	// URL is the coordinator's; Token authenticates the researchers below.
	URL         string
	Coordinator *federation.Coordinator
	Hospitals   []*apitest.Env
	Names       []string
	// Tokens are coordinator tokens for the demo researchers
	// "researcher_internal" and "researcher".
	Tokens map[string]string

	mu   sync.Mutex
	drop map[string]string // node -> path whose requests it drops
	srvs []*httptest.Server
}

// Start starts a federation; everything stops when tb ends.
func Start(tb testing.TB, o Options) *Cluster {
	tb.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	ctx := context.Background()
	dir := tb.TempDir()
	c := &Cluster{drop: map[string]string{}, Tokens: map[string]string{}}
	for i := range o.Nodes {
		c.Names = append(c.Names, fmt.Sprintf("hospital-%d", i+1))
	}
	if err := federation.IssueCertificates(dir, append([]string{"coordinator"}, c.Names...)); err != nil {
		tb.Fatal(err)
	}
	var members []federation.Member
	for i, name := range c.Names {
		ho := apitest.Options{Patients: o.Patients, Epsilon: o.Epsilon, Seed: uint64(1000 + i)}
		if i == 0 && o.Postgres != "" {
			ho.Metadata = apitest.PostgresSchema(tb, o.Postgres)
		}
		env := apitest.New(tb, ho)
		c.Hospitals = append(c.Hospitals, env)
		id, err := federation.LoadIdentity(dir, name)
		if err != nil {
			tb.Fatal(err)
		}
		node, err := federation.NewNode(federation.NodeConfig{Identity: id, Members: c.Names, Coordinator: "coordinator", Querier: env.Release, Log: quiet})
		if err != nil {
			tb.Fatal(err)
		}
		h := node.Handler()
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.mu.Lock()
			path := c.drop[name]
			c.mu.Unlock()
			if path != "" && (path == "*" || path == r.URL.Path) {
				// The hospital goes down: the connection breaks off.
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						conn.Close()
						return
					}
				}
				panic(http.ErrAbortHandler)
			}
			h.ServeHTTP(w, r)
		}))
		srv.TLS = id.ServerTLS()
		srv.StartTLS()
		tb.Cleanup(srv.Close)
		c.srvs = append(c.srvs, srv)
		members = append(members, federation.Member{Name: name, URL: srv.URL})
	}
	parser, err := engine.Open(ctx, engine.Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { parser.Close() })
	id, err := federation.LoadIdentity(dir, "coordinator")
	if err != nil {
		tb.Fatal(err)
	}
	var researchers []federation.Researcher
	for _, r := range []string{"researcher_internal", "researcher"} {
		tok := token()
		c.Tokens[r] = tok
		researchers = append(researchers, federation.Researcher{ID: r, TokenSM3: catalog.HashToken(tok)})
	}
	coord, err := federation.NewCoordinator(federation.CoordinatorConfig{Identity: id, Nodes: members, Researchers: researchers, Parser: parser, Log: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(coord.Close)
	c.Coordinator = coord
	hs := httptest.NewServer(coord.Handler())
	tb.Cleanup(hs.Close)
	c.URL = hs.URL
	return c
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func token() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Drop makes node i break off every request to path ("*" for all) from now
// on, as a hospital that goes down would; "" brings it back.
func (c *Cluster) Drop(i int, path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drop[c.Names[i]] = path
}

// Addr is node i's federation address.
func (c *Cluster) Addr(i int) net.Addr { return c.srvs[i].Listener.Addr() }
