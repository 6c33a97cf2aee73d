package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/ingest"
	"github.com/hospital/gateway/policy"
)

func runRegister(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("dataset register")
	var opts options
	dataFlags(fs, &opts)
	url := fs.String("url", "", "base URL of the running gateway to register into (its API)")
	token := fs.String("token", "", "the steward's bearer token for --url (default $GATEWAY_TOKEN)")
	steward := fs.String("as", "", "with --dir: the registering steward's person id (recorded in the audit log)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (*url == "") == (*steward == "") {
		return usageError{"dataset register takes --url URL --token TOKEN MANIFEST.yaml, or --as STEWARD --dir DIR MANIFEST.yaml; see gateway dataset register --help"}
	}
	m, err := ingest.ReadManifest(fs.Arg(0))
	if err != nil {
		return err
	}
	if *url != "" {
		if *token == "" {
			*token = os.Getenv("GATEWAY_TOKEN")
		}
		if *token == "" {
			return usageError{"--url needs the steward's --token TOKEN (or GATEWAY_TOKEN)"}
		}
		return uploadManifest(ctx, *url, *token, m, stdout)
	}
	if err := opts.existing(); err != nil {
		return err
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	p, err := g.store.Person(ctx, *steward)
	if err != nil {
		return err
	}
	if !p.Has(catalog.Steward) {
		return fmt.Errorf("%s is not a data steward", *steward)
	}
	reg := ingest.Registrar{Store: g.store, Engine: g.engine, Dir: g.opts.Dir, Key: g.key, GradeRules: g.opts.GradeRules}
	r, err := reg.Register(ctx, m, *steward, progress())
	if err != nil {
		return err
	}
	d := r.Dataset
	if r.Regraded {
		fmt.Fprintf(stdout, "row count changed by more than %.0f%%: %s is flagged for re-grading (Art. 7)\n", 100*m.RegradeShare, m.Name)
	}
	detail, _ := json.Marshal(map[string]any{"rows": d.Rows, "units": d.Units, "bytes": r.Bytes, "needs_regrade": d.NeedsRegrade})
	if _, err := g.audit.Append(ctx, audit.Entry{Actor: *steward, Role: "steward", Action: "dataset.register", Dataset: m.Name, Grade: string(m.Grade), Outcome: "ok", Detail: detail}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %s (%s): %d rows, %d patients, %d bytes read in %s; a running gateway serves it from its next start (use --url to register into it at once)\n",
		m.Name, m.Grade, d.Rows, d.Units, r.Bytes, r.Took.Round(time.Millisecond))
	return nil
}

// runSuggest prints a starting manifest for files, for a steward to edit:
// see ingest.Suggest for what it proposes and why it never shows an
// exact extreme.
func runSuggest(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("dataset suggest")
	k := fs.Int("k", 10, "fewest patients a category of a proposed public list may hold (at least the grade's min_k)")
	outPath := fs.String("out", "", "write the manifest to this new file, with file paths relative to it (default: stdout, absolute paths)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 || *k < 2 {
		return usageError{"dataset suggest [--k K] [--out FILE] TABLE=FILE...; see gateway dataset suggest --help"}
	}
	files := map[string]string{}
	for _, a := range fs.Args() {
		name, path, ok := strings.Cut(a, "=")
		if !ok || !policy.IsIdentifier(name) {
			return usageError{fmt.Sprintf("give tables as TABLE=FILE with TABLE a plain name, not %q", a)}
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		files[name] = abs
	}
	eng, err := engine.Open(ctx, engine.Config{})
	if err != nil {
		return err
	}
	defer eng.Close()
	sug, err := ingest.Suggest(ctx, eng, files, *k)
	if err != nil {
		return err
	}
	manifestFiles := map[string]string{}
	for t, f := range files {
		manifestFiles[t] = f
		if *outPath != "" {
			dir, err := filepath.Abs(filepath.Dir(*outPath))
			if err != nil {
				return err
			}
			if rel, err := filepath.Rel(dir, f); err == nil {
				manifestFiles[t] = rel
			}
		}
	}
	ph := ingest.Placeholder
	m := ingest.Manifest{Name: "NAME", Grade: catalog.Core, Source: ph, Category: ph, Purpose: ph, Method: ph, Responsible: ph,
		CrossBorder: "none", Protection: ph, Files: manifestFiles, Policy: sug.Policy}
	var doc yaml.Node
	if err := doc.Encode(m); err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	annotate(&doc, sug.Notes)
	doc.HeadComment = "Suggested starting manifest. Before registering: name the dataset, choose its grade,\n" +
		"fill in every " + ph + ", review every role, and confirm or remove each line marked CONFIRM.\n" +
		"Bounds and lists are shown to researchers: never put a patient's exact value in them."
	w := stdout
	if *outPath != "" {
		f, err := os.OpenFile(*outPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("write manifest: %w", err)
		}
		defer f.Close()
		w = f
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return enc.Close()
}

// annotate puts each note on its column's line of the encoded manifest
// (policy.tables[].columns[], keyed "table.column").
func annotate(doc *yaml.Node, notes map[string]string) {
	tables := find(find(doc, "policy"), "tables")
	if tables == nil {
		return
	}
	for _, t := range tables.Content {
		name := find(t, "name")
		cols := find(t, "columns")
		if name == nil || cols == nil {
			continue
		}
		if n, ok := notes[name.Value+"."]; ok {
			name.LineComment = n
		}
		for _, c := range cols.Content {
			if cn := find(c, "name"); cn != nil {
				if n, ok := notes[name.Value+"."+cn.Value]; ok {
					cn.LineComment = n
				}
			}
		}
	}
}

// find is the value of key in mapping node n, or nil.
func find(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// runReport prints the Article 6 catalog report as a table or JSON.
func runReport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("catalog report")
	var opts options
	dataFlags(fs, &opts)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := opts.existing(); err != nil {
		return err
	}
	store, err := catalog.Open(ctx, opts.Metadata)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := store.Report(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DATASET\tGRADE\tSCALE\tSOURCE\tCATEGORY\tPURPOSE\tMETHOD\tRESPONSIBLE\tCROSS-BORDER\tPROTECTION")
	for _, r := range rep {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Dataset, r.Grade, r.Scale, r.Source, r.Category, r.Purpose, r.Method, r.Responsible, r.CrossBorder, r.Protection)
	}
	return tw.Flush()
}
