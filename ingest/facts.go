package ingest

import (
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/policy"
)

// facts checks, while a table's file is read, the declarations the noise
// relies on and that a file could break: one row per patient for a table
// declared one_row_per_unit (its queries get the noise of one row per
// patient), max_distinct, and public lists (a listed column holds only
// listed values or NULL), since the Distinct bound caps the groups a
// query may form before any data is read.
type facts struct {
	table policy.Table
	units map[string]struct{} // nil unless the table is one_row_per_unit
	unit  string
	rows  int64
	cols  map[string]*distinct
	lists map[string]map[string]bool // public lists, by lower-case column
	doms  map[string][2]float64      // declared domains, by lower-case column
}

type distinct struct {
	limit  int64
	values map[string]struct{}
}

func newFacts(t policy.Table) *facts {
	f := &facts{table: t, cols: map[string]*distinct{}, lists: map[string]map[string]bool{}, doms: map[string][2]float64{}}
	if t.OneRowPerUnit {
		u, _ := t.UnitColumn()
		f.unit, f.units = strings.ToLower(u.Name), map[string]struct{}{}
	}
	for _, c := range t.Columns {
		if len(c.Public) > 0 {
			l := map[string]bool{}
			for _, v := range c.Public {
				l[v] = true
			}
			f.lists[strings.ToLower(c.Name)] = l
		}
		if c.DomainMin != nil && c.DomainMax != nil {
			f.doms[strings.ToLower(c.Name)] = [2]float64{*c.DomainMin, *c.DomainMax}
		}
		if c.MaxDistinct > 0 {
			f.cols[strings.ToLower(c.Name)] = &distinct{limit: c.MaxDistinct, values: map[string]struct{}{}}
		}
	}
	return f
}

// add reads one record batch.
func (f *facts) add(rec arrow.RecordBatch) error {
	f.rows += rec.NumRows()
	for i, field := range rec.Schema().Fields() {
		name := strings.ToLower(field.Name)
		col := rec.Column(i)
		if f.units != nil && name == f.unit {
			for r := 0; r < col.Len(); r++ {
				if !col.IsNull(r) {
					f.units[col.ValueStr(r)] = struct{}{}
				}
			}
		}
		if l, ok := f.lists[name]; ok {
			for r := 0; r < col.Len(); r++ {
				if v := col.ValueStr(r); !col.IsNull(r) && !l[v] {
					return fault.E(fault.Invalid, "table %s: column %s holds %q, which is not in its public list; add it to the list or remove the list", f.table.Name, field.Name, v)
				}
			}
		}
		if dom, ok := f.doms[name]; ok {
			if err := f.inDomain(field.Name, col, dom); err != nil {
				return err
			}
		}
		d, ok := f.cols[name]
		if !ok {
			continue
		}
		for r := 0; r < col.Len(); r++ {
			if col.IsNull(r) {
				continue
			}
			d.values[col.ValueStr(r)] = struct{}{}
			if int64(len(d.values)) > d.limit {
				return fault.E(fault.Invalid, "table %s: column %s has more than %d distinct values, the max_distinct its policy declares; correct the declaration", f.table.Name, field.Name, d.limit)
			}
		}
	}
	return nil
}

// inDomain checks that a numeric column holds only values of its declared
// domain, which the bias estimates of answers rely on to cover the truth.
func (f *facts) inDomain(name string, col arrow.Array, dom [2]float64) error {
	// The column's accessor is chosen once, not for every row.
	var value func(r int) (float64, error)
	switch c := col.(type) {
	case *array.Int32:
		value = func(r int) (float64, error) { return float64(c.Value(r)), nil }
	case *array.Int64:
		value = func(r int) (float64, error) { return float64(c.Value(r)), nil }
	case *array.Float64:
		value = func(r int) (float64, error) { return c.Value(r), nil }
	default:
		value = func(r int) (float64, error) { return strconv.ParseFloat(col.ValueStr(r), 64) }
	}
	for r := 0; r < col.Len(); r++ {
		if col.IsNull(r) {
			continue
		}
		v, err := value(r)
		if err != nil {
			return fault.E(fault.Invalid, "table %s: column %s declares a numeric domain but is not numeric; remove domain_min and domain_max or fix the file", f.table.Name, name)
		}
		if !(v >= dom[0] && v <= dom[1]) { // NaN is in no domain
			return fault.E(fault.Invalid, "table %s: column %s holds a value outside its declared domain [%g, %g]; widen the domain or fix the file", f.table.Name, name, dom[0], dom[1])
		}
	}
	return nil
}

// check reports a broken one-row-per-patient declaration once the whole
// file is read.
func (f *facts) check() error {
	if f.units != nil && int64(len(f.units)) != f.rows {
		return fault.E(fault.Invalid, "table %s is declared one_row_per_unit but its file has %d rows for %d patients; remove one_row_per_unit or fix the file", f.table.Name, f.rows, len(f.units))
	}
	return nil
}
