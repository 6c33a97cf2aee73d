package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
	"github.com/hospital/gateway/quota"
)

// fileConfig is the YAML configuration of gateway serve; see
// gateway.example.yaml for every field with its meaning.
type fileConfig struct {
	Addr          string    `yaml:"addr"`
	Dir           string    `yaml:"dir"`
	Metadata      string    `yaml:"metadata"`
	MemoryLimit   string    `yaml:"memory_limit"`
	ProcessMemory string    `yaml:"process_memory_limit"`
	Threads       int       `yaml:"threads"`
	QueryTimeout  string    `yaml:"query_timeout"`
	MaxBodyBytes  int64     `yaml:"max_body_bytes"`
	MaxGroups     int       `yaml:"max_groups"`
	MaxEpsilon    float64   `yaml:"max_epsilon_per_query"`
	QuotaWarnings []float64 `yaml:"quota_warnings"`
	AlertWebhook  string    `yaml:"alert_webhook"`
	WorkingHours  [2]int    `yaml:"working_hours"`
	BurstQueries  int       `yaml:"burst_queries_per_minute"`
	GradeRules    string    `yaml:"grade_rules"`
	TLSCert       string    `yaml:"tls_cert"`
	TLSKey        string    `yaml:"tls_key"`
	Keys          string    `yaml:"keys"`
	Audit         struct {
		SignInterval    string `yaml:"sign_interval"`
		CheckpointEvery string `yaml:"checkpoint_every"`
	} `yaml:"audit"`
	ImportDirs  []string `yaml:"import_dirs"`
	MetricsAddr string   `yaml:"metrics_addr"`
	FlightAddr  string   `yaml:"flight_addr"`
}

func loadConfig(path string) (options, []float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return options{}, nil, fmt.Errorf("read config: %w", err)
	}
	var fc fileConfig
	if err := yaml.Unmarshal(b, &fc); err != nil {
		return options{}, nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	// Every path is read from the configuration file's folder, so that a
	// copy of gateway.example.yaml works wherever the gateway is started.
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	metadata := fc.Metadata
	if !isPostgres(metadata) {
		metadata = rel(strings.TrimPrefix(metadata, "sqlite:"))
	}
	o := options{Addr: fc.Addr, Dir: rel(fc.Dir), Keys: rel(fc.Keys), Metadata: metadata, MemoryLimit: fc.MemoryLimit, Threads: fc.Threads, MaxBody: fc.MaxBodyBytes}
	o.ProcessMemoryLimit = fc.ProcessMemory
	if fc.ProcessMemory != "" {
		if _, err := engine.ParseBytes(fc.ProcessMemory); err != nil {
			return options{}, nil, fmt.Errorf("config %s: process_memory_limit: %w", path, err)
		}
	}
	o.Limits.MaxGroups, o.Limits.MaxEpsilon = fc.MaxGroups, fc.MaxEpsilon
	o.TLSCert, o.TLSKey, o.MetricsAddr, o.FlightAddr = rel(fc.TLSCert), rel(fc.TLSKey), fc.MetricsAddr, fc.FlightAddr
	for _, d := range fc.ImportDirs {
		o.ImportDirs = append(o.ImportDirs, filepath.Clean(rel(d)))
	}
	if fc.GradeRules != "" {
		if o.GradeRules, err = policy.LoadGradeRules(rel(fc.GradeRules)); err != nil {
			return options{}, nil, err
		}
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return options{}, nil, fmt.Errorf("config %s: give both tls_cert and tls_key, or neither", path)
	}
	o.Alerts.Webhook, o.Alerts.Policy.WorkingHours, o.Alerts.Policy.BurstQueries = fc.AlertWebhook, fc.WorkingHours, fc.BurstQueries
	if fc.QueryTimeout != "" {
		if o.QueryTimeout, err = time.ParseDuration(fc.QueryTimeout); err != nil {
			return options{}, nil, fmt.Errorf("config %s: query_timeout: %w", path, err)
		}
	}
	periods := []struct {
		name, v string
		to      *time.Duration
	}{
		{"audit.sign_interval", fc.Audit.SignInterval, &o.SignInterval},
		{"audit.checkpoint_every", fc.Audit.CheckpointEvery, &o.CheckpointEvery},
	}
	for _, d := range periods {
		if d.v == "" {
			continue
		}
		if *d.to, err = time.ParseDuration(d.v); err != nil || *d.to <= 0 {
			return options{}, nil, fmt.Errorf("config %s: %s takes a positive duration such as 2s, not %q", path, d.name, d.v)
		}
	}

	return o, fc.QuotaWarnings, nil
}

// configFlag parses the one flag of a command run from a configuration
// file, --config FILE, which it requires.
func configFlag(command string, args []string) (string, error) {
	fs := newFlags(command)
	path := fs.String("config", "", "YAML configuration file")
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if *path == "" {
		return "", usageError{command + " needs --config FILE"}
	}
	return *path, nil
}

func runServe(ctx context.Context, args []string, log *slog.Logger) error {
	fs := newFlags("serve")
	cfgPath := fs.String("config", "", "YAML configuration file")
	flightAddr := fs.String("flight-addr", "", "also serve Arrow Flight SQL on this address (overrides flight_addr:)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"serve needs --config FILE"}
	}
	opts, warnings, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *flightAddr != "" {
		opts.FlightAddr = *flightAddr
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	l, q, err := g.listenAndLoad(ctx, warnings)
	if err != nil {
		return err
	}
	return g.serve(ctx, q, l)
}

// load loads every registered dataset into the engine and builds the
// Article 11 tracker with the given warning lines: what every serving
// command does before it listens.
func (g *gateway) load(ctx context.Context, warnings []float64) (*quota.Tracker, error) {
	if err := g.loadDatasets(ctx); err != nil {
		return nil, err
	}
	return g.quota(ctx, warnings)
}

// quota builds the Article 11 tracker, whose warnings go to the log and the
// audit log.
func (g *gateway) quota(ctx context.Context, warnings []float64) (*quota.Tracker, error) {
	return quota.New(ctx, g.meta, g.store, g.engine, quota.Config{
		Warnings: warnings, Log: g.log,
		Alert: func(ctx context.Context, dataset, kind, message string) {
			b := []byte(fmt.Sprintf(`{"message":%q}`, message))
			if _, err := g.audit.Append(ctx, audit.Entry{Actor: "gateway", Action: kind, Dataset: dataset, Grade: "core", Outcome: "alert", Detail: b}); err != nil {
				g.log.Error("audit append failed", "action", kind, "err", err)
			}
			if _, err := g.alerts.Raise(ctx, kind, "", dataset, message, nil); err != nil {
				g.log.Error("raise alert", "kind", kind, "err", err)
			}
		},
	})
}
