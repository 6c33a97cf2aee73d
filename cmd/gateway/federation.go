package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/federation"
	"github.com/hospital/gateway/quota"
)

// nodeConfig is the federation block of a node's YAML configuration; the
// rest of the file is gateway serve's.
type nodeConfig struct {
	Federation struct {
		Name        string   `yaml:"name"`
		Listen      string   `yaml:"listen"`
		Certs       string   `yaml:"certs"`
		Members     []string `yaml:"members"`
		Coordinator string   `yaml:"coordinator"`
	} `yaml:"federation"`
}

// coordinatorConfig is the YAML configuration of gateway coordinator.
type coordinatorConfig struct {
	Addr        string                  `yaml:"addr"`
	Name        string                  `yaml:"name"`
	Certs       string                  `yaml:"certs"`
	Timeout     string                  `yaml:"timeout"`
	Nodes       []federation.Member     `yaml:"nodes"`
	Researchers []federation.Researcher `yaml:"researchers"`
	TLSCert     string                  `yaml:"tls_cert"`
	TLSKey      string                  `yaml:"tls_key"`
}

func runFederation(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return usageError{"federation takes the subcommand certs or demo"}
	}
	switch args[0] {
	case "certs":
		fs := newFlags("federation certs")
		dir := fs.String("dir", "./federation-certs", "certificate directory")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return usageError{"federation certs needs the members' names"}
		}
		if err := federation.IssueCertificates(*dir, fs.Args()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "certificates for %s in %s (keys mode 0600; hand each member its NAME.pem, NAME.key and ca.pem)\n", strings.Join(fs.Args(), ", "), *dir)
		return nil
	case "demo":
		return runFederationDemo(ctx, args[1:], stdout, log)
	}
	return usageError{fmt.Sprintf("unknown federation subcommand %q", args[0])}
}

// runNode serves a hospital's gateway and its federation endpoint.
func runNode(ctx context.Context, args []string, log *slog.Logger) error {
	cfgPath, err := configFlag("node", args)
	if err != nil {
		return err
	}
	opts, warnings, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var nc nodeConfig
	if err := yaml.Unmarshal(b, &nc); err != nil {
		return fmt.Errorf("parse config %s: %w", cfgPath, err)
	}
	f := nc.Federation
	if f.Name == "" || f.Listen == "" || f.Certs == "" || len(f.Members) == 0 || f.Coordinator == "" {
		return fmt.Errorf("config %s: federation needs name, listen, certs, members and coordinator", cfgPath)
	}
	if !filepath.IsAbs(f.Certs) {
		f.Certs = filepath.Join(filepath.Dir(cfgPath), f.Certs)
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	restLn, err := net.Listen("tcp", g.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", g.opts.Addr, err)
	}
	fedLn, err := net.Listen("tcp", f.Listen)
	if err != nil {
		restLn.Close()
		return fmt.Errorf("listen on %s: %w", f.Listen, err)
	}
	q, err := g.load(ctx, warnings)
	if err != nil {
		restLn.Close()
		fedLn.Close()
		return err
	}
	return g.serveNode(ctx, q, f.Name, f.Certs, f.Members, f.Coordinator, restLn, fedLn)
}

// serveNode serves the hospital's REST API on restLn and its federation
// endpoint on fedLn until ctx ends.
func (g *gateway) serveNode(ctx context.Context, q *quota.Tracker, name, certs string, members []string, coordinator string, restLn, fedLn net.Listener) error {
	id, err := federation.LoadIdentity(certs, name)
	if err != nil {
		restLn.Close()
		fedLn.Close()
		return err
	}
	rel := g.releases(q)
	srv := g.apiServer(q, rel)
	node, err := federation.NewNode(federation.NodeConfig{Identity: id, Members: members, Coordinator: coordinator, Querier: rel, Log: g.log})
	if err != nil {
		restLn.Close()
		fedLn.Close()
		return err
	}
	tlsConfig, err := serverTLS(g.opts.TLSCert, g.opts.TLSKey)
	if err != nil {
		restLn.Close()
		fedLn.Close()
		return err
	}
	return serveAll(ctx,
		func(ctx context.Context) error {
			return serveOn(ctx, g.log, name+" gateway", restLn, srv.Handler(), tlsConfig, g.drain())
		},
		func(ctx context.Context) error {
			return serveOn(ctx, g.log, name+" federation endpoint", fedLn, node.Handler(), id.ServerTLS(), g.drain())
		})
}

// serveAll runs every server until ctx ends or one fails, which stops the
// others; it waits for all of them.
func serveAll(ctx context.Context, servers ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			err := s(ctx)
			cancel()
			errc <- err
		}()
	}
	var errs []error
	for range servers {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// runCoordinator serves researchers' federated queries.
func runCoordinator(ctx context.Context, args []string, log *slog.Logger) error {
	cfgPath, err := configFlag("coordinator", args)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cc coordinatorConfig
	if err := yaml.Unmarshal(b, &cc); err != nil {
		return fmt.Errorf("parse config %s: %w", cfgPath, err)
	}
	if cc.Addr == "" {
		cc.Addr = "127.0.0.1:8090"
	}
	if cc.Name == "" {
		cc.Name = "coordinator"
	}
	if cc.Certs != "" && !filepath.IsAbs(cc.Certs) {
		cc.Certs = filepath.Join(filepath.Dir(cfgPath), cc.Certs)
	}
	timeout := 2 * time.Minute
	if cc.Timeout != "" {
		if timeout, err = time.ParseDuration(cc.Timeout); err != nil {
			return fmt.Errorf("config %s: timeout: %w", cfgPath, err)
		}
	}
	ln, err := net.Listen("tcp", cc.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cc.Addr, err)
	}
	return serveCoordinator(ctx, log, cc, timeout, ln)
}

func serveCoordinator(ctx context.Context, log *slog.Logger, cc coordinatorConfig, timeout time.Duration, ln net.Listener) error {
	id, err := federation.LoadIdentity(cc.Certs, cc.Name)
	if err != nil {
		ln.Close()
		return err
	}
	// A DuckDB with no data, only to parse researchers' SQL.
	parser, err := engine.Open(ctx, engine.Config{MemoryLimit: "256MB", Threads: 1})
	if err != nil {
		ln.Close()
		return err
	}
	defer parser.Close()
	coord, err := federation.NewCoordinator(federation.CoordinatorConfig{Identity: id, Nodes: cc.Nodes, Researchers: cc.Researchers,
		Parser: parser, Timeout: timeout, Log: log})
	if err != nil {
		ln.Close()
		return err
	}
	defer coord.Close()
	tlsConfig, err := serverTLS(cc.TLSCert, cc.TLSKey)
	if err != nil {
		ln.Close()
		return err
	}
	return serveOn(ctx, log, "coordinator", ln, coord.Handler(), tlsConfig, 30*time.Second)
}

// runFederationDemo starts, in one process on loopback, several synthetic
// hospitals (each a whole gateway with its own data, keys, metadata store
// and audit log, under DIR/hospital-N), their federation endpoints and a
// coordinator. A second start on the same DIR reuses what is there.
func runFederationDemo(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("federation demo")
	dir := fs.String("dir", "./federation-data", "data directory of the whole federation")
	addr := fs.String("addr", "127.0.0.1:8090", "the coordinator's listen address")
	nodes := fs.Int("nodes", 3, "hospitals")
	patients := fs.Int("patients", 20000, "patients per hospital")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *nodes < 2 || *nodes > 16 {
		return usageError{"--nodes must be between 2 and 16"}
	}
	if *patients < 100 {
		return usageError{"--patients must be at least 100"}
	}
	certs := filepath.Join(*dir, "certs")
	var names []string
	for i := range *nodes {
		names = append(names, fmt.Sprintf("hospital-%d", i+1))
	}
	if err := federation.IssueCertificates(certs, append([]string{"coordinator"}, names...)); err != nil {
		return err
	}
	credPath := filepath.Join(*dir, "federation-credentials.json")
	creds, err := demoCoordinatorCredentials(credPath, *addr)
	if err != nil {
		return err
	}

	var servers []func(context.Context) error
	var members []federation.Member
	for i, name := range names {
		g, err := openGateway(ctx, options{Dir: filepath.Join(*dir, name)}, log.With("hospital", name))
		if err != nil {
			return err
		}
		defer g.Close()
		if err := g.ensureDemo(ctx, *patients, uint64(1000+i), io.Discard); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		q, err := g.load(ctx, nil)
		if err != nil {
			return err
		}
		if err := g.assessStudy(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		restLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		fedLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			restLn.Close()
			return err
		}
		members = append(members, federation.Member{Name: name, URL: "https://" + fedLn.Addr().String()})
		fmt.Fprintf(stdout, "%s: gateway http://%s (people's tokens in %s), federation endpoint https://%s\n",
			name, restLn.Addr(), filepath.Join(g.opts.Dir, "demo-credentials.json"), fedLn.Addr())
		servers = append(servers, func(ctx context.Context) error {
			return g.serveNode(ctx, q, name, certs, names, "coordinator", restLn, fedLn)
		})
	}
	var researchers []federation.Researcher
	for id, tok := range creds.Tokens {
		researchers = append(researchers, federation.Researcher{ID: id, TokenSM3: catalog.HashToken(tok)})
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	cc := coordinatorConfig{Name: "coordinator", Certs: certs, Nodes: members, Researchers: researchers}
	servers = append(servers, func(ctx context.Context) error { return serveCoordinator(ctx, log, cc, 2*time.Minute, ln) })
	fmt.Fprintf(stdout, "coordinator http://%s for %d hospitals; researcher tokens in %s\n", ln.Addr(), len(names), credPath)
	return serveAll(ctx, servers...)
}

type coordinatorCredentials struct {
	BaseURL string            `json:"base_url"`
	Tokens  map[string]string `json:"tokens"`
}

// demoCoordinatorCredentials reads the demo researchers' coordinator tokens,
// creating them on first start.
func demoCoordinatorCredentials(path, addr string) (coordinatorCredentials, error) {
	var c coordinatorCredentials
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("read %s: %w", path, err)
		}
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	c = coordinatorCredentials{BaseURL: "http://" + addr, Tokens: map[string]string{}}
	for _, id := range []string{"researcher"} {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return c, fmt.Errorf("draw token: %w", err)
		}
		c.Tokens[id] = hex.EncodeToString(b)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return c, fmt.Errorf("write %s: %w", path, err)
	}
	return c, nil
}

// assessStudy records, once, the approved Article 11 risk assessment that
// lets each demo hospital provide its core data to the partner institute's
// multi-centre study (the demo's "researcher" is another legal entity).
func (g *gateway) assessStudy(ctx context.Context, q *quota.Tracker) error {
	st, err := q.Status(ctx, demoDataset)
	if err != nil {
		return err
	}
	if st.Threshold >= 1 {
		return nil
	}
	const ref = "multi-centre study MC-2026-001: approved risk assessment"
	if _, err := q.RecordAssessment(ctx, demoDataset, 1, ref, "approver"); err != nil && !fault.Is(err, fault.Invalid) {
		return err
	}
	g.record(ctx, "approver", "quota_risk_assessment", map[string]any{"threshold": 1, "reference": ref})
	return nil
}
