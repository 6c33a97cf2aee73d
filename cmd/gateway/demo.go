package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/demo"
	"github.com/hospital/gateway/demo/synth"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

const demoDataset = demo.Dataset

// demoSeed draws the demo hospital of CONTRACT.md.
const demoSeed = 20260101

func runDemo(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("demo")
	var opts options
	var patients int
	fs.StringVar(&opts.Addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&opts.FlightAddr, "flight-addr", "", "also serve Arrow Flight SQL on this address")
	dataFlags(fs, &opts)
	fs.IntVar(&patients, "patients", 100000, "demo patients")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if patients < 100 {
		return usageError{"--patients must be at least 100"}
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := g.ensureDemo(ctx, patients, demoSeed, stdout); err != nil {
		return err
	}
	l, q, err := g.listenAndLoad(ctx, nil)
	if err != nil {
		return err
	}
	return g.serve(ctx, q, l)
}

// ensureDemo creates the demo dataset, people and grants on first start.
func (g *gateway) ensureDemo(ctx context.Context, patients int, seed uint64, stdout io.Writer) error {
	credPath := filepath.Join(g.opts.Dir, "demo-credentials.json")
	if _, err := g.store.Dataset(ctx, demoDataset); err == nil {
		if _, err := os.Stat(credPath); err == nil {
			fmt.Fprintf(stdout, "reusing %s in %s (credentials in %s)\n", demoDataset, g.opts.Dir, credPath)
			return nil
		}
		return fmt.Errorf("%s is registered in %s but %s is missing; start with an empty --dir", demoDataset, g.opts.Dir, credPath)
	} else if !fault.Is(err, fault.NotFound) {
		return err
	}
	start := time.Now()
	rows, units, err := writeDemoData(g.opts.Dir, demoDataset, patients, seed, g.key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "generated %s: %d patients, %d rows in %s (encrypted at rest with %s)\n",
		demoDataset, units, rows, time.Since(start).Round(time.Millisecond), g.key.Cipher)

	tokens, err := demo.Seed(ctx, g.store, demo.Description(rows, units), demo.Options{}, g.record)
	if err != nil {
		return err
	}
	creds := map[string]any{"base_url": "http://" + g.opts.Addr, "tokens": tokens}
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	if err := os.WriteFile(credPath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", credPath, err)
	}
	fmt.Fprintf(stdout, "demo people and grants created; tokens in %s\n", credPath)
	return nil
}

func (g *gateway) record(ctx context.Context, actor, action string, fields map[string]any) {
	b, _ := json.Marshal(fields)
	if _, err := g.audit.Append(ctx, audit.Entry{Actor: actor, Action: action, Dataset: demoDataset, Grade: string(policy.Core), Outcome: "ok", Detail: b}); err != nil {
		g.log.Error("audit append failed", "action", action, "err", err)
	}
}

// writeDemoData generates the demo tables into encrypted files.
func writeDemoData(dir, dataset string, patients int, seed uint64, key atrest.Key) (rows, units int64, err error) {
	writers := map[string]*atrest.Writer{}
	closeAll := func() error {
		var errs []error
		for _, w := range writers {
			errs = append(errs, w.Close())
		}
		return errors.Join(errs...)
	}
	schemas := synth.Schemas()
	err = synth.Generate(synth.Config{Patients: patients, Seed: seed}, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
		w, ok := writers[table]
		if !ok {
			path := engine.TableFile(dir, dataset, table)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return fmt.Errorf("create dataset directory: %w", err)
			}
			w, err = atrest.Create(path, key, schemas[table], memory.DefaultAllocator)
			if err != nil {
				return err
			}
			writers[table] = w
		}
		rows += rec.NumRows()
		return w.Write(rec)
	})
	if err != nil {
		for _, w := range writers {
			w.Abort() // no half-written table is left behind
		}
		return 0, 0, fmt.Errorf("generate demo data: %w", err)
	}
	if err := closeAll(); err != nil {
		return 0, 0, fmt.Errorf("write demo data: %w", err)
	}
	return rows, int64(patients), nil
}
