package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/engine/atrest"
)

// manifest is a dataset registration file written by a steward: the
// Article 6 description and the column policy, with each table's source
// file. See testdata/clinic.yaml for an example.
type manifest struct {
	Name        string        `yaml:"name"`
	Grade       catalog.Grade `yaml:"grade"`
	Source      string        `yaml:"source"`
	Category    string        `yaml:"category"`
	Purpose     string        `yaml:"purpose"`
	Method      string        `yaml:"processing_method"`
	Responsible string        `yaml:"responsible_party"`
	CrossBorder string        `yaml:"cross_border"`
	Protection  string        `yaml:"protection_measures"`
	// RegradeShare is the change in row count, as a share, that flags the
	// dataset for re-grading on reload (Art. 7); default 0.2.
	RegradeShare float64           `yaml:"regrade_share"`
	Files        map[string]string `yaml:"files"` // table name -> Parquet, CSV or Arrow file
	Policy       catalog.Policy    `yaml:"policy"`
}

// runDataset handles `gateway dataset register|suggest`.
func runDataset(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return usageError{"dataset takes register or suggest"}
	}
	switch args[0] {
	case "register":
		return runRegister(ctx, args[1:], stdout, log)
	case "suggest":
		return runSuggest(ctx, args[1:], stdout)
	}
	return usageError{fmt.Sprintf("unknown dataset subcommand %q", args[0])}
}

func readManifest(path string) (manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	var m manifest
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return manifest{}, fmt.Errorf("manifest %s: %w", path, err)
	}
	if m.Name == "" || strings.ContainsAny(m.Name, `"./\ `) {
		return manifest{}, fmt.Errorf("manifest %s: name %q must be a plain identifier", path, m.Name)
	}
	if !m.Grade.Valid() {
		return manifest{}, fmt.Errorf("manifest %s: grade %q is not one of core, important, general", path, m.Grade)
	}
	if err := m.Policy.Validate(); err != nil {
		return manifest{}, fmt.Errorf("manifest %s: %w", path, err)
	}
	for _, t := range m.Policy.Tables {
		f, ok := m.Files[t.Name]
		if !ok {
			return manifest{}, fmt.Errorf("manifest %s: table %s has no file under files:", path, t.Name)
		}
		if !filepath.IsAbs(f) {
			m.Files[t.Name] = filepath.Join(filepath.Dir(path), f)
		}
	}
	if m.RegradeShare <= 0 {
		m.RegradeShare = 0.2
	}
	return m, nil
}

// checkSchema compares a file's columns with the table's policy.
func checkSchema(t catalog.Table, names []string) error {
	have := map[string]bool{}
	for _, n := range names {
		have[strings.ToLower(n)] = true
		if _, ok := t.Column(n); !ok {
			return fmt.Errorf("table %s: column %s is in the file but not in the policy; declare its role", t.Name, n)
		}
	}
	for _, c := range t.Columns {
		if !have[strings.ToLower(c.Name)] {
			return fmt.Errorf("table %s: the policy declares column %s, which the file does not have", t.Name, c.Name)
		}
	}
	return nil
}

func runRegister(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("dataset register")
	var opts options
	fs.StringVar(&opts.Dir, "dir", "./gateway-data", "data directory")
	fs.StringVar(&opts.Metadata, "metadata", "", "metadata store DSN")
	steward := fs.String("as", "", "the registering steward's person id (recorded in the audit log)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() != 1 || *steward == "" {
		return usageError{"dataset register --as STEWARD [--dir DIR] MANIFEST.yaml"}
	}
	m, err := readManifest(fs.Arg(0))
	if err != nil {
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
	start := time.Now()
	var rows, bytes int64
	for _, t := range m.Policy.Tables {
		n, b, err := importTable(ctx, m.Files[t.Name], engine.TableFile(g.opts.Dir, m.Name, t.Name), t, g.key, stdout)
		if err != nil {
			return err
		}
		rows, bytes = rows+n, bytes+b
	}
	units, err := g.countUnits(ctx, m)
	if err != nil {
		return err
	}
	d := catalog.Dataset{Name: m.Name, Grade: m.Grade, Source: m.Source, Category: m.Category, Purpose: m.Purpose,
		Method: m.Method, Responsible: m.Responsible, CrossBorder: m.CrossBorder, Protection: m.Protection,
		Policy: m.Policy, Rows: rows, Units: units}
	if old, err := g.store.Dataset(ctx, m.Name); err == nil {
		d.NeedsRegrade = old.NeedsRegrade
		if old.Rows > 0 && math.Abs(float64(rows-old.Rows))/float64(old.Rows) > m.RegradeShare {
			d.NeedsRegrade = true
			fmt.Fprintf(stdout, "row count changed from %d to %d (over %.0f%%): %s is flagged for re-grading (Art. 7)\n", old.Rows, rows, 100*m.RegradeShare, m.Name)
		}
	}
	if err := g.store.PutDataset(ctx, d, *steward); err != nil {
		return err
	}
	detail, _ := json.Marshal(map[string]any{"rows": rows, "units": units, "bytes": bytes, "needs_regrade": d.NeedsRegrade})
	if _, err := g.audit.Append(ctx, audit.Entry{Actor: *steward, Role: "steward", Action: "dataset.register", Dataset: m.Name, Grade: string(m.Grade), Outcome: "ok", Detail: detail}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %s (%s): %d rows, %d patients, %d bytes read in %s; served from the next start\n",
		m.Name, m.Grade, rows, units, bytes, time.Since(start).Round(time.Millisecond))
	return nil
}

// importTable encrypts a source file into the table file, checking its
// columns against the policy and printing progress.
func importTable(ctx context.Context, src, dst string, t catalog.Table, key atrest.Key, stdout io.Writer) (rows, size int64, err error) {
	st, err := os.Stat(src)
	if err != nil {
		return 0, 0, fmt.Errorf("table %s: %w", t.Name, err)
	}
	r, closeR, err := engine.OpenFile(ctx, src, memory.DefaultAllocator)
	if err != nil {
		return 0, 0, err
	}
	defer closeR()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return 0, 0, fmt.Errorf("create dataset directory: %w", err)
	}
	var w *atrest.Writer
	for r.Next() {
		rec := r.RecordBatch()
		if w == nil {
			var names []string
			for _, f := range rec.Schema().Fields() {
				names = append(names, f.Name)
			}
			if err := checkSchema(t, names); err != nil {
				return 0, 0, err
			}
			if w, err = atrest.Create(dst, key, rec.Schema(), memory.DefaultAllocator); err != nil {
				return 0, 0, err
			}
		}
		if err := w.Write(rec); err != nil {
			w.Close()
			return 0, 0, err
		}
		rows += rec.NumRows()
		fmt.Fprintf(stdout, "\r%s: %d rows", t.Name, rows)
	}
	if err := r.Err(); err != nil {
		if w != nil {
			w.Close()
		}
		return 0, 0, fmt.Errorf("read %s: %w", src, err)
	}
	if w == nil {
		return 0, 0, fmt.Errorf("table %s: %s has no rows", t.Name, src)
	}
	if err := w.Close(); err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(stdout, "\r%s: %d rows from %s\n", t.Name, rows, src)
	return rows, st.Size(), nil
}

// countUnits loads the new tables into the engine and counts distinct
// privacy units across them.
func (g *gateway) countUnits(ctx context.Context, m manifest) (int64, error) {
	var parts []string
	for _, t := range m.Policy.Tables {
		if _, err := g.engine.LoadTable(ctx, m.Name, t.Name, engine.TableFile(g.opts.Dir, m.Name, t.Name), g.key); err != nil {
			return 0, err
		}
		u, _ := t.UnitColumn()
		parts = append(parts, fmt.Sprintf(`SELECT "%s" AS u FROM "%s"."%s"`, u.Name, m.Name, t.Name))
	}
	res, err := g.engine.Query(ctx, "SELECT count(DISTINCT u) FROM ("+strings.Join(parts, " UNION ALL ")+")", 1)
	if err != nil {
		return 0, fmt.Errorf("count privacy units of %s: %w", m.Name, err)
	}
	n, _ := res.Rows[0][0].(int64)
	return n, nil
}

// identifierNames are column names that suggest direct identifiers.
var identifierNames = []string{"name", "national_id", "id_number", "id_card", "phone", "mobile", "address", "email", "passport", "encounter_id", "mrn"}

// runSuggest prints a starting policy for files, for a steward to edit.
func runSuggest(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{"dataset suggest TABLE=FILE..."}
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
	m := manifest{Name: "NAME", Grade: catalog.Core, CrossBorder: "none", Files: files, Policy: pol}
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
	dir := fs.String("dir", "./gateway-data", "data directory")
	meta := fs.String("metadata", "", "metadata store DSN")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if *meta == "" {
		*meta = filepath.Join(*dir, "metadata.db")
	}
	store, err := catalog.Open(ctx, *meta)
	if err != nil {
		return err
	}
	defer store.Close()
	ds, err := store.Datasets(ctx)
	if err != nil {
		return err
	}
	rep := catalog.Report(ds)
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
