package ingest

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"gopkg.in/yaml.v3"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/engine/atrest"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// Manifest is a dataset registration file written by a steward: the
// Article 6 description and the column policy, with each table's source
// file. See cmd/gateway/testdata/clinic.yaml for an example.
type Manifest struct {
	Name        string       `yaml:"name" json:"name"`
	Grade       policy.Grade `yaml:"grade" json:"grade"`
	Source      string       `yaml:"source" json:"source"`
	Category    string       `yaml:"category" json:"category"`
	Purpose     string       `yaml:"purpose" json:"purpose"`
	Method      string       `yaml:"processing_method" json:"processing_method"`
	Responsible string       `yaml:"responsible_party" json:"responsible_party"`
	CrossBorder string       `yaml:"cross_border" json:"cross_border"`
	Protection  string       `yaml:"protection_measures" json:"protection_measures"`
	// RegradeShare is the change in row count, as a share, that flags the
	// dataset for re-grading on reload (Art. 7); default 0.2.
	RegradeShare float64           `yaml:"regrade_share" json:"regrade_share"`
	Files        map[string]string `yaml:"files" json:"files"` // table name -> Parquet, CSV or Arrow file
	Policy       policy.Policy     `yaml:"policy" json:"policy"`
}

// ReadManifest reads and checks a manifest file; relative file paths are
// taken from the manifest's folder.
func ReadManifest(path string) (Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	var m Manifest
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", path, err)
	}
	for t, f := range m.Files {
		if !filepath.IsAbs(f) {
			m.Files[t] = filepath.Join(filepath.Dir(path), f)
		}
	}
	if err := m.Check(); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// Check validates the manifest's name, grade, policy and files.
func (m *Manifest) Check() error {
	if !policy.IsIdentifier(m.Name) || strings.HasPrefix(m.Name, "__") {
		return fault.E(fault.Invalid, "name %q must be a plain identifier (letters, digits, underscores; not starting with __)", m.Name)
	}
	if !m.Grade.Valid() {
		return fault.E(fault.Invalid, "grade %q is not one of core, important, general", m.Grade)
	}
	if err := m.checkDescription(); err != nil {
		return err
	}
	if err := m.Policy.Validate(); err != nil {
		return fault.Wrap(fault.Invalid, err, "%v", err)
	}
	for _, t := range m.Policy.Tables {
		if _, ok := m.Files[t.Name]; !ok {
			return fault.E(fault.Invalid, "table %s has no file under files:", t.Name)
		}
	}
	if m.RegradeShare <= 0 {
		m.RegradeShare = 0.2
	}
	return nil
}

// Placeholder is what gateway dataset suggest writes where only the
// steward can know the answer; registration refuses a manifest that still
// holds one, or the name NAME.
const Placeholder = "TO BE FILLED IN"

// checkDescription refuses empty and placeholder Article 6 fields: the
// catalog report is what regulators read, and a dataset registered with
// a blank purpose or responsible party cannot be accounted for.
func (m *Manifest) checkDescription() error {
	if m.Name == "NAME" {
		return fault.E(fault.Invalid, "name is still the placeholder NAME; give the dataset its own name")
	}
	fields := []struct{ key, v string }{
		{"source", m.Source}, {"category", m.Category}, {"purpose", m.Purpose}, {"processing_method", m.Method},
		{"responsible_party", m.Responsible}, {"cross_border", m.CrossBorder}, {"protection_measures", m.Protection},
	}
	var empty, placeholder []string
	for _, f := range fields {
		v := strings.TrimSpace(f.v)
		switch {
		case v == "":
			empty = append(empty, f.key)
		case strings.Contains(strings.ToUpper(v), Placeholder), strings.HasPrefix(strings.ToUpper(v), "TODO"):
			placeholder = append(placeholder, f.key)
		}
	}
	if len(placeholder) > 0 {
		return fault.E(fault.Invalid, "%s still hold the placeholder %q; fill them in (Art. 6: the catalog report shows them)", strings.Join(placeholder, ", "), Placeholder)
	}
	if len(empty) > 0 {
		return fault.E(fault.Invalid, "the Article 6 description needs %s; fill them in (cross_border: none when the data never leaves the country)", strings.Join(empty, ", "))
	}
	return nil
}

// checkSchema compares a file's columns with the table's policy.
func checkSchema(t policy.Table, names []string) error {
	have := map[string]bool{}
	for _, n := range names {
		if policy.Reserved(n) {
			return fault.E(fault.Invalid, "table %s: column name %s is reserved for the gateway; rename the column", t.Name, n)
		}
		have[strings.ToLower(n)] = true
		if _, ok := t.Column(n); !ok {
			return fault.E(fault.Invalid, "table %s: column %s is in the file but not in the policy; declare its role", t.Name, n)
		}
	}
	for _, c := range t.Columns {
		if !have[strings.ToLower(c.Name)] {
			return fault.E(fault.Invalid, "table %s: the policy declares column %s, which the file does not have", t.Name, c.Name)
		}
	}
	return nil
}

// importTable encrypts a source file into dst, checking its columns and
// the facts its policy declares (see facts) and printing progress. The
// caller renames dst into place once every table has passed.
func importTable(ctx context.Context, src, dst string, t policy.Table, key atrest.Key, stdout io.Writer) (rows, size int64, err error) {
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
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	fs := newFacts(t)
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
		if err := fs.add(rec); err != nil {
			w.Close()
			return 0, 0, err
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
	if err := fs.check(); err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(stdout, "\r%s: %d rows from %s\n", t.Name, rows, src)
	return rows, st.Size(), nil
}

// Registrar loads datasets into the gateway: it encrypts source files
// into the data directory, loads them into the engine, counts the privacy
// units and records the dataset.
type Registrar struct {
	Store  *catalog.Store
	Engine *engine.Engine
	Dir    string
	Key    atrest.Key
	// ImportDirs are the only directories whose files may be registered
	// over the API by path (see ImportPath); uploads need none.
	ImportDirs []string
	// policy.GradeRules bound each dataset's policy by its grade; nil means
	// DefaultGradeRules.
	GradeRules policy.GradeRules
}

// Registered is what a registration did.
type Registered struct {
	Dataset catalog.Dataset `json:"dataset"`
	Bytes   int64           `json:"bytes_read"`
	Took    time.Duration   `json:"took_ns"`
	// Regraded is true when this reload flagged the dataset for
	// re-grading (Art. 7).
	Regraded bool `json:"flagged_for_regrade"`
	// Pending is set when the reload's grade or policy would lower the
	// protection in force: that stays in force, and this proposal waits
	// for an approver's verification.
	Pending *catalog.ProtectionChange `json:"pending_protection_change,omitempty"`
}

// Register imports m's files and records the dataset. Progress lines go to
// progress. The dataset is queryable as soon as Register returns.
func (r *Registrar) Register(ctx context.Context, m Manifest, steward string, progress io.Writer) (Registered, error) {
	if err := m.Check(); err != nil {
		return Registered{}, err
	}
	if err := m.Policy.CheckGrade(m.Grade, r.GradeRules); err != nil {
		return Registered{}, err
	}
	start := time.Now()
	var rows, size int64
	// Every table is imported beside its file and checked before any is
	// put in place, so a refused registration leaves the dataset as it was.
	var parts []string
	defer func() {
		for _, p := range parts {
			os.Remove(p)
		}
	}()
	for _, t := range m.Policy.Tables {
		part := engine.TableFile(r.Dir, m.Name, t.Name) + ".part"
		parts = append(parts, part)
		n, b, err := importTable(ctx, m.Files[t.Name], part, t, r.Key, progress)
		if err != nil {
			return Registered{}, err
		}
		rows, size = rows+n, size+b
	}
	for i, t := range m.Policy.Tables {
		if err := os.Rename(parts[i], engine.TableFile(r.Dir, m.Name, t.Name)); err != nil {
			return Registered{}, fmt.Errorf("put table %s in place: %w", t.Name, err)
		}
	}
	var unitQueries []string
	for i, t := range m.Policy.Tables {
		if _, err := r.Engine.LoadTable(ctx, m.Name, t.Name, engine.TableFile(r.Dir, m.Name, t.Name), r.Key); err != nil {
			return Registered{}, err
		}
		if err := r.fillTypes(ctx, m.Name, &m.Policy.Tables[i]); err != nil {
			return Registered{}, err
		}
		u, _ := t.UnitColumn()
		unitQueries = append(unitQueries, fmt.Sprintf(`SELECT "%s" AS u FROM "%s"."%s"`, u.Name, m.Name, t.Name))
	}
	r.Engine.RankTables(m.Name, m.Policy)
	res, err := r.Engine.Query(ctx, "SELECT count(DISTINCT u) FROM ("+strings.Join(unitQueries, " UNION ALL ")+")", 1)
	if err != nil {
		return Registered{}, fmt.Errorf("count privacy units of %s: %w", m.Name, err)
	}
	units, _ := res.Rows[0][0].(int64)
	d := catalog.Dataset{Name: m.Name, Grade: m.Grade, Source: m.Source, Category: m.Category, Purpose: m.Purpose,
		Method: m.Method, Responsible: m.Responsible, CrossBorder: m.CrossBorder, Protection: m.Protection,
		Policy: m.Policy, Rows: rows, Units: units}
	out := Registered{Bytes: size}
	if old, err := r.Store.Dataset(ctx, m.Name); err == nil {
		d.NeedsRegrade = old.NeedsRegrade
		if old.Rows > 0 && math.Abs(float64(rows-old.Rows))/float64(old.Rows) > m.RegradeShare {
			d.NeedsRegrade, out.Regraded = true, true
		}
	}
	pending, err := r.Store.Reload(ctx, d, steward)
	if err != nil {
		return Registered{}, err
	}
	if d, err = r.Store.Dataset(ctx, m.Name); err != nil {
		return Registered{}, err
	}
	out.Dataset, out.Pending, out.Took = d, pending, time.Since(start)
	return out, nil
}

// fillTypes records, for each column of t, the type the engine loaded it
// as, whatever the manifest said, so that researchers see the table's own
// types. (The sandbox reads the engine's types itself.)
func (r *Registrar) fillTypes(ctx context.Context, dataset string, t *policy.Table) error {
	types, err := r.Engine.ColumnTypes(ctx, dataset, t.Name)
	if err != nil {
		return fmt.Errorf("read column types of %s.%s: %w", dataset, t.Name, err)
	}
	for j, c := range t.Columns {
		if typ := types[strings.ToLower(c.Name)]; typ != "" {
			t.Columns[j].Type = typ
		}
	}
	return nil
}
