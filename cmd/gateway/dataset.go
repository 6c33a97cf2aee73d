package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
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
	m, err := catalog.ReadManifest(fs.Arg(0))
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
	reg := catalog.Registrar{Store: g.store, Engine: g.engine, Dir: g.opts.Dir, Key: g.key, GradeRules: g.opts.GradeRules}
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

// identifierNames are column names that suggest direct identifiers.
var identifierNames = []string{"name", "national_id", "id_number", "id_card", "phone", "mobile", "address", "email", "passport", "encounter_id", "mrn"}

// runSuggest prints a starting policy for files, for a steward to edit.
func runSuggest(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("dataset suggest")
	k := fs.Int("k", 10, "minimum patients in every category of a proposed public list (the grade's min_k or more)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	args = fs.Args()
	if len(args) == 0 || *k < 2 {
		return usageError{"dataset suggest [--k K] TABLE=FILE...; see gateway dataset suggest --help"}
	}
	pol := catalog.Policy{Contribution: catalog.Contribution{MaxGroups: 4, MaxRows: 5}, K: 10, SpecialK: 20, SpecialShare: 0.5}
	files := map[string]string{}
	for _, a := range args {
		name, path, ok := strings.Cut(a, "=")
		if !ok {
			return usageError{"give tables as TABLE=FILE"}
		}
		files[name] = path
		r, closeR, err := engine.OpenFile(ctx, path, memory.DefaultAllocator)
		if err != nil {
			return err
		}
		if !r.Next() {
			closeR()
			return fmt.Errorf("%s has no rows", path)
		}
		t := catalog.Table{Name: name}
		for _, f := range r.RecordBatch().Schema().Fields() {
			c := catalog.Column{Name: f.Name, Type: f.Type.String(), Role: catalog.Attribute}
			lower := strings.ToLower(f.Name)
			switch {
			case lower == "patient_id" || lower == "person_id":
				c.Role = catalog.Unit
			case containsAny(lower, identifierNames):
				c.Role = catalog.Identifier
			}
			t.Columns = append(t.Columns, c)
		}
		closeR()
		pol.Tables = append(pol.Tables, t)
	}
	m := catalog.Manifest{Name: "NAME", Grade: catalog.Core, CrossBorder: "none", Files: files, Policy: pol}
	fmt.Fprintln(stdout, "# Suggested starting policy: review every role, add min/max bounds to numeric columns")
	fmt.Fprintln(stdout, "# that may be summed or averaged, and public category lists where the domain is public.")
	return yaml.NewEncoder(stdout).Encode(m)
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if s == w || strings.HasSuffix(s, "_"+w) || strings.HasPrefix(s, w+"_") {
			return true
		}
	}
	return false
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
