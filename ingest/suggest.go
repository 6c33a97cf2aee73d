package ingest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/policy"
)

// A suggested policy is shown to researchers once registered, so nothing
// in it may be one patient's value: bounds come from the 1st and 99th
// percentiles rounded outward to a round step, never from the minimum or
// maximum, and a public list is proposed only for a column of few
// categories each of which holds at least k patients. Every such
// proposal carries a note for the steward to confirm it.

// maxPublic is the most categories a proposed public list has.
const maxPublic = 20

// Suggestion is a starting policy for files and, per "table.column", what
// the steward must confirm about it.
type Suggestion struct {
	Policy policy.Policy
	Notes  map[string]string
}

// Suggest reads files (table name -> file) into eng, under dataset name
// __suggest, and proposes a role for each column from its name and type,
// bounds for numeric ones, and public lists, with k the fewest patients a
// listed category may hold.
func Suggest(ctx context.Context, eng *engine.Engine, files map[string]string, k int) (Suggestion, error) {
	const ds = "__suggest"
	out := Suggestion{Policy: policy.Policy{Contribution: policy.Contribution{MaxGroups: 4, MaxRows: 5}, K: k, SpecialK: 2 * k, SpecialShare: 0.5}, Notes: map[string]string{}}
	names := make([]string, 0, len(files))
	for t := range files {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, name := range names {
		schema, err := loadForSuggest(ctx, eng, ds, name, files[name])
		if err != nil {
			return Suggestion{}, err
		}
		t := policy.Table{Name: name}
		unit := ""
		for _, f := range schema.Fields() {
			c := policy.Column{Name: f.Name, Role: roleFromName(f.Name)}
			if c.Role == policy.Unit {
				unit = f.Name
			}
			t.Columns = append(t.Columns, c)
		}
		if unit == "" {
			out.Notes[name+"."] = "no column is named like a patient id (patient_id, person_id): give one column role: unit"
		}
		for i, f := range schema.Fields() {
			c := &t.Columns[i]
			if c.Role == policy.Unit || c.Role == policy.Identifier || unit == "" {
				continue
			}
			key := name + "." + c.Name
			col := fmt.Sprintf(`"%s"`, strings.ReplaceAll(c.Name, `"`, `""`))
			from := fmt.Sprintf(`"%s"."%s"`, ds, name)
			if numeric(f.Type) {
				res, err := eng.Query(ctx, fmt.Sprintf(`SELECT quantile_cont(%s, 0.01)::DOUBLE, quantile_cont(%s, 0.99)::DOUBLE FROM %s`, col, col, from), 1)
				if err != nil {
					return Suggestion{}, fmt.Errorf("percentiles of %s: %w", key, err)
				}
				lo, ok1 := res.Rows[0][0].(float64)
				hi, ok2 := res.Rows[0][1].(float64)
				if ok1 && ok2 {
					min, max := outward(lo, hi)
					c.Min, c.Max = &min, &max
					out.Notes[key] = fmt.Sprintf("CONFIRM: the 1st to 99th percentiles (%s to %s) rounded outward; widen to the values the column can take", trim(lo), trim(hi))
				}
			}
			res, err := eng.Query(ctx, fmt.Sprintf(`SELECT %s::VARCHAR, count(DISTINCT "%s") FROM %s WHERE %s IS NOT NULL GROUP BY 1 ORDER BY 1 LIMIT %d`,
				col, strings.ReplaceAll(unit, `"`, `""`), from, col, maxPublic+1), maxPublic+1)
			if err != nil {
				return Suggestion{}, fmt.Errorf("categories of %s: %w", key, err)
			}
			if len(res.Rows) == 0 || len(res.Rows) > maxPublic || numeric(f.Type) && len(res.Rows) > 2 {
				continue
			}
			var list []string
			small := false
			for _, r := range res.Rows {
				if n, _ := r[1].(int64); n < int64(k) {
					small = true
				}
				v, _ := r[0].(string)
				list = append(list, v)
			}
			if small {
				out.Notes[key] = fmt.Sprintf("no public list: a category has fewer than %d patients", k)
				continue
			}
			c.Public = list
			out.Notes[key] = fmt.Sprintf("CONFIRM: keep this list only if these categories are public knowledge (each has at least %d patients here)", k)
		}
		out.Policy.Tables = append(out.Policy.Tables, t)
	}
	return out, nil
}

func loadForSuggest(ctx context.Context, eng *engine.Engine, ds, table, path string) (*arrow.Schema, error) {
	r, closeR, err := engine.OpenFile(ctx, path, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	defer closeR()
	var schema *arrow.Schema
	var l *engine.Loader
	for r.Next() {
		rec := r.RecordBatch()
		if l == nil {
			// A CSV file's types are known from its first batch only.
			schema = rec.Schema()
			if err := eng.CreateTable(ctx, ds, table, schema); err != nil {
				return nil, err
			}
			if l, err = eng.NewLoader(ctx, ds, table); err != nil {
				return nil, err
			}
		}
		if err := l.Append(rec); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := r.Err(); err != nil {
		if l != nil {
			l.Close()
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if l == nil {
		return nil, fmt.Errorf("table %s: %s has no rows", table, path)
	}
	return schema, l.Close()
}

// identifierNames are column names that suggest direct identifiers.
var identifierNames = []string{"name", "national_id", "id_number", "id_card", "phone", "mobile", "address", "email", "passport", "encounter_id", "mrn"}

var quasiNames = []string{"age", "sex", "gender", "birth_date", "birthdate", "dob", "province", "city", "zip", "postcode", "ethnicity"}

var specialNames = []string{"pregnant", "hiv", "mental", "deceased", "psychiatric"}

var sensitiveNames = []string{"diagnosis", "icd10", "icd", "drug", "procedure"}

func roleFromName(name string) policy.Role {
	lower := strings.ToLower(name)
	switch {
	case lower == "patient_id" || lower == "person_id":
		return policy.Unit
	case nameHas(lower, identifierNames):
		return policy.Identifier
	case nameHas(lower, specialNames) || slices.ContainsFunc(specialNames, func(w string) bool { return strings.Contains(lower, w) }):
		return policy.SpecialGroup
	case nameHas(lower, quasiNames):
		return policy.QuasiIdentifier
	case nameHas(lower, sensitiveNames):
		return policy.Sensitive
	}
	return policy.Attribute
}

func nameHas(s string, words []string) bool {
	for _, w := range words {
		if s == w || strings.HasSuffix(s, "_"+w) || strings.HasPrefix(s, w+"_") || strings.Contains(s, "_"+w+"_") {
			return true
		}
	}
	return false
}

func numeric(t arrow.DataType) bool {
	return arrow.IsInteger(t.ID()) || arrow.IsFloating(t.ID()) || arrow.IsDecimal(t.ID())
}

// outward rounds [lo, hi] outward to a multiple of a round step, a tenth
// of the range's order of magnitude or more, so that neither bound is a
// value read from the data.
func outward(lo, hi float64) (float64, float64) {
	span := hi - lo
	if span <= 0 {
		span = math.Max(math.Abs(hi), 1)
	}
	step := math.Pow(10, math.Floor(math.Log10(span)))
	min, max := math.Floor(lo/step)*step, math.Ceil(hi/step)*step
	if min == lo {
		min -= step
	}
	if max == hi {
		max += step
	}
	if lo >= 0 && min < 0 {
		min = 0
	}
	return min, max
}

func trim(f float64) string { return fmt.Sprintf("%.4g", f) }
