// Package policy is the gateway's vocabulary of protection, with no
// database or engine behind it: the grades of Art. 5, the roles of columns
// and the column policy a data steward declares, the rules each grade
// imposes whatever a dataset's own policy says, and the cross-border rule
// of Art. 22(4). The catalog stores these words; sandbox reads them to
// refuse queries that touch identifiers, privacy to bound each patient's
// contribution and calibrate noise, release to apply the grade and
// cross-border rules.
package policy

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// identifier is what dataset and table names must be: they become
// directory and file names on disk and SQL names in DuckDB, so nothing
// that could climb out of a directory or out of quotes is allowed.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// IsIdentifier reports whether s is a plain identifier: a letter or
// underscore, then letters, digits or underscores, at most 63 in all.
func IsIdentifier(s string) bool { return identifier.MatchString(s) }

// Grade is a dataset's classification under Art. 5 of the 2026 Measures.
type Grade string

// The three grades, from most to least protected.
const (
	Core      Grade = "core"
	Important Grade = "important"
	General   Grade = "general"
)

// rank orders grades so that mixed data takes the highest one.
func (g Grade) rank() int {
	switch g {
	case Core:
		return 3
	case Important:
		return 2
	case General:
		return 1
	}
	return 0
}

// Below reports whether g protects less than o.
func (g Grade) Below(o Grade) bool { return g.rank() < o.rank() }

// Valid reports whether g is one of the three grades.
func (g Grade) Valid() bool { return g.rank() > 0 }

// Highest returns the most protected grade among gs (Art. 5, 8: mixed and
// derived data take the highest grade of their sources).
func Highest(gs ...Grade) Grade {
	var best Grade
	for _, g := range gs {
		if g.rank() > best.rank() {
			best = g
		}
	}
	return best
}

// Role is what a column is, for privacy purposes.
type Role string

// Column roles a steward can declare.
const (
	// Unit is the privacy unit (the patient): never released, usable only to
	// join tables and in COUNT(DISTINCT unit).
	Unit Role = "unit"
	// Identifier columns (names, ID numbers, phones) never appear in a query.
	Identifier Role = "identifier"
	// QuasiIdentifier columns (age, sex, province) may be grouped on, under k.
	QuasiIdentifier Role = "quasi_identifier"
	// Sensitive columns (diagnoses) may be grouped and filtered on.
	Sensitive Role = "sensitive"
	// SpecialGroup flags (pregnancy, HIV, mental disorder, deceased) raise the
	// minimum group size and shrink the budget share of queries that use them.
	SpecialGroup Role = "special_group"
	// Attribute is any other column.
	Attribute Role = "attribute"
)

var roles = []Role{Unit, Identifier, QuasiIdentifier, Sensitive, SpecialGroup, Attribute}

// Column is one column's policy.
type Column struct {
	Name string `json:"name" yaml:"name"`
	Type string `json:"type" yaml:"type"`
	Role Role   `json:"role" yaml:"role"`
	// Public lists the column's categories when the domain is public
	// knowledge (sex, province): grouping on it then needs no partition
	// selection and every category appears in the answer. Registration
	// refuses a file with a value outside the list; rows where it is NULL
	// are left out of every answer grouped on the column.
	Public []string `json:"public,omitempty" yaml:"public,omitempty"`
	// MaxDistinct, when set, declares at most how many distinct values the
	// column holds (diagnosis codes, admission dates). Registration checks
	// it against the file. Together with public lists, integer bounds and
	// booleans it is what bounds the number of groups a query may form
	// before any data is read (see Distinct).
	MaxDistinct int64 `json:"max_distinct,omitempty" yaml:"max_distinct,omitempty"`
	// Min and Max bound numeric values: required for SUM, AVG, variance and
	// quantiles over the column; values are clamped to them.
	Min *float64 `json:"min,omitempty" yaml:"min,omitempty"`
	Max *float64 `json:"max,omitempty" yaml:"max,omitempty"`
	// DomainMin and DomainMax, when set, declare every value the column
	// can hold, around Min and Max: registration refuses a file with a
	// value outside them. Values are still clamped to Min and Max for the
	// noise, and what clamping cuts, up to the domain, is estimated in
	// every answer beside the value (see privacy). Without a domain the
	// clamping cut is not estimated, and answers say so.
	DomainMin *float64 `json:"domain_min,omitempty" yaml:"domain_min,omitempty"`
	DomainMax *float64 `json:"domain_max,omitempty" yaml:"domain_max,omitempty"`
}

// Domain returns the values the column can hold: the declared domain, or
// the clamping bounds when it declares none.
func (c Column) Domain() (lo, hi float64, ok bool) {
	if !c.Bounded() {
		return 0, 0, false
	}
	lo, hi = *c.Min, *c.Max
	if c.DomainMin != nil && c.DomainMax != nil {
		lo, hi = *c.DomainMin, *c.DomainMax
	}
	return lo, hi, true
}

// Bounded reports whether the column has declared numeric bounds.
func (c Column) Bounded() bool { return c.Min != nil && c.Max != nil }

// Distinct is an upper bound, known from the policy alone, on the number of
// distinct non-NULL values the column can hold in a group key, or 0 when the
// policy does not bound it: the length of a public list (other values are
// left out of grouped answers), 2 for a boolean, or the declared
// MaxDistinct, which registration checks against the file; the smallest
// of those that apply. Min and max do not bound it: they are clamping
// bounds, and values beyond them are kept.
func (c Column) Distinct() int64 {
	var best int64
	take := func(n int64) {
		if n > 0 && (best == 0 || n < best) {
			best = n
		}
	}
	if len(c.Public) > 0 {
		take(int64(len(c.Public)))
	}
	if t := strings.ToUpper(strings.TrimSpace(c.Type)); t == "BOOLEAN" || t == "BOOL" {
		take(2)
	}
	take(c.MaxDistinct)
	return best
}

// Table is one table's policy.
type Table struct {
	Name    string   `json:"name" yaml:"name"`
	Columns []Column `json:"columns" yaml:"columns"`
	// OneRowPerUnit declares that each patient has at most one row (the
	// patients table), which lets queries over it use tighter noise.
	OneRowPerUnit bool `json:"one_row_per_unit,omitempty" yaml:"one_row_per_unit,omitempty"`
}

// Column returns the named column's policy.
func (t Table) Column(name string) (Column, bool) {
	for _, c := range t.Columns {
		if strings.EqualFold(c.Name, name) {
			return c, true
		}
	}
	return Column{}, false
}

// UnitColumn returns the table's privacy unit column.
func (t Table) UnitColumn() (Column, bool) {
	for _, c := range t.Columns {
		if c.Role == Unit {
			return c, true
		}
	}
	return Column{}, false
}

// Contribution bounds how much one patient can add to a result.
type Contribution struct {
	// MaxGroups is how many output groups one patient may contribute to.
	MaxGroups int `json:"max_groups" yaml:"max_groups"`
	// MaxRows is how many rows one patient may contribute to one group.
	MaxRows int `json:"max_rows" yaml:"max_rows"`
}

// Policy is a dataset's full column policy.
type Policy struct {
	Tables       []Table      `json:"tables" yaml:"tables"`
	Contribution Contribution `json:"contribution" yaml:"contribution"`
	// K is the minimum number of distinct patients in a released group.
	K int `json:"k" yaml:"k"`
	// SpecialK replaces K when a query touches a special-group column.
	SpecialK int `json:"special_k" yaml:"special_k"`
	// SpecialShare (0 < s <= 1) is the share of a query's epsilon that
	// calibrates the noise when it touches a special-group column: the full
	// epsilon is charged, the noise is that of epsilon*SpecialShare.
	SpecialShare float64 `json:"special_share" yaml:"special_share"`
}

// Table returns the named table's policy.
func (p Policy) Table(name string) (Table, bool) {
	for _, t := range p.Tables {
		if strings.EqualFold(t.Name, name) {
			return t, true
		}
	}
	return Table{}, false
}

// Validate reports the first problem that would make the policy unsafe or
// unusable, in words a steward can act on.
func (p Policy) Validate() error {
	if len(p.Tables) == 0 {
		return fmt.Errorf("policy declares no tables")
	}
	if p.Contribution.MaxGroups < 1 || p.Contribution.MaxRows < 1 {
		return fmt.Errorf("contribution limits must be at least 1 (max_groups %d, max_rows %d)",
			p.Contribution.MaxGroups, p.Contribution.MaxRows)
	}
	if p.K < 2 {
		return fmt.Errorf("k is %d; the minimum group size must be at least 2", p.K)
	}
	if p.SpecialK < p.K {
		return fmt.Errorf("special_k %d is below k %d; special groups need at least the same protection", p.SpecialK, p.K)
	}
	if p.SpecialShare <= 0 || p.SpecialShare > 1 {
		return fmt.Errorf("special_share %g must be in (0, 1]", p.SpecialShare)
	}
	seen := map[string]bool{}
	for _, t := range p.Tables {
		if !IsIdentifier(t.Name) {
			return fmt.Errorf("table name %q must be a plain identifier (letters, digits, underscores)", t.Name)
		}
		key := strings.ToLower(t.Name)
		if seen[key] {
			return fmt.Errorf("table %s is declared twice", t.Name)
		}
		seen[key] = true
		units := 0
		cols := map[string]bool{}
		for _, c := range t.Columns {
			if c.Name == "" || strings.ContainsAny(c.Name, "\"\x00\n\r") {
				return fmt.Errorf("table %s: column name %q is empty or holds a quote or control character", t.Name, c.Name)
			}
			if Reserved(c.Name) {
				return fmt.Errorf("table %s: column name %s is reserved for the gateway's hidden columns (%s, %s, %s...); rename the column", t.Name, c.Name, RankColumn, RowsColumn, CodePrefix)
			}
			ck := strings.ToLower(c.Name)
			if cols[ck] {
				return fmt.Errorf("table %s: column %s is declared twice", t.Name, c.Name)
			}
			cols[ck] = true
			if !slices.Contains(roles, c.Role) {
				return fmt.Errorf("table %s: column %s has unknown role %q (one of %v)", t.Name, c.Name, c.Role, roles)
			}
			if c.Role == Unit {
				units++
			}
			if (c.Min == nil) != (c.Max == nil) {
				return fmt.Errorf("table %s: column %s declares only one bound; give both min and max", t.Name, c.Name)
			}
			if c.MaxDistinct < 0 {
				return fmt.Errorf("table %s: column %s has max_distinct %d; give a positive number or leave it out", t.Name, c.Name, c.MaxDistinct)
			}
			if c.Bounded() && *c.Min > *c.Max {
				return fmt.Errorf("table %s: column %s has bounds reversed (min %g > max %g)", t.Name, c.Name, *c.Min, *c.Max)
			}
			if (c.DomainMin == nil) != (c.DomainMax == nil) {
				return fmt.Errorf("table %s: column %s declares only one end of its domain; give both domain_min and domain_max", t.Name, c.Name)
			}
			if c.DomainMin != nil && (!c.Bounded() || *c.DomainMin > *c.Min || *c.DomainMax < *c.Max) {
				return fmt.Errorf("table %s: column %s has a domain that does not hold its clamping bounds; give min and max within domain_min and domain_max", t.Name, c.Name)
			}
		}
		if units != 1 {
			return fmt.Errorf("table %s declares %d privacy unit columns; declare exactly one (role: unit)", t.Name, units)
		}
	}
	return nil
}

// Looser lists how p is looser than old: smaller k, larger contribution
// bounds or special-group share, wider or dropped column bounds, a column
// whose role or public categories changed, a table newly declared one row
// per patient, or tables and columns old did not declare.
func (p Policy) Looser(old Policy) []string {
	var out []string
	less := func(what string, nv, ov float64) {
		if nv > ov {
			out = append(out, fmt.Sprintf("%s %g is above %g", what, nv, ov))
		}
	}
	if p.K < old.K {
		out = append(out, fmt.Sprintf("k %d is below %d", p.K, old.K))
	}
	if p.SpecialK < old.SpecialK {
		out = append(out, fmt.Sprintf("special_k %d is below %d", p.SpecialK, old.SpecialK))
	}
	less("special_share", p.SpecialShare, old.SpecialShare)
	less("contribution max_groups", float64(p.Contribution.MaxGroups), float64(old.Contribution.MaxGroups))
	less("contribution max_rows", float64(p.Contribution.MaxRows), float64(old.Contribution.MaxRows))
	for _, t := range p.Tables {
		ot, ok := old.Table(t.Name)
		if !ok {
			out = append(out, fmt.Sprintf("table %s is new", t.Name))
			continue
		}
		if t.OneRowPerUnit && !ot.OneRowPerUnit {
			out = append(out, fmt.Sprintf("table %s is newly declared one row per patient", t.Name))
		}
		for _, c := range t.Columns {
			oc, ok := ot.Column(c.Name)
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("column %s.%s is new", t.Name, c.Name))
			case c.Role != oc.Role && c.Role != Identifier:
				out = append(out, fmt.Sprintf("column %s.%s changes role from %s to %s", t.Name, c.Name, oc.Role, c.Role))
			case !slices.Equal(c.Public, oc.Public) && len(c.Public) > 0:
				out = append(out, fmt.Sprintf("column %s.%s changes its public categories", t.Name, c.Name))
			case oc.Bounded() && !c.Bounded():
				// Unbounded columns cannot be summed at all: stricter.
			case c.Bounded() && (!oc.Bounded() || *c.Min < *oc.Min || *c.Max > *oc.Max):
				out = append(out, fmt.Sprintf("column %s.%s has wider bounds", t.Name, c.Name))
			}
		}
	}
	return out
}

// RankColumn is the hidden column engine.RankRows adds to a table: the rank of
// each row among the rows of its privacy unit, in an order drawn at random.
// It is never in a dataset's column policy, so researchers cannot name it
// (the sandbox resolves columns against the policy only), and it never
// leaves the engine: table files at rest are written from the source files,
// not from DuckDB. CreateTable refuses a table with a column of that name.
const RankColumn = "__rank"

// RowsColumn is the hidden column engine.RankRows adds beside RankColumn:
// how many rows the row's privacy unit has in the table (at most the
// largest rank). It depends on that unit's own rows only, and like
// RankColumn researchers cannot name it and it never leaves the engine.
const RowsColumn = "__rows"

// CodePrefix begins the hidden code columns engine.RankTables adds to a
// table for its columns with a public list: CodeColumn(c, list) holds the
// 1-based position of c's value in list (NULL for NULL and for a value not
// in it), so that plans group on a small integer instead of a string.
// Like RankColumn, researchers cannot name them and they never leave the
// engine.
const CodePrefix = "__code_"

// CodeColumn is the hidden code column of column c built from list. Its
// name carries a digest of the list, so that a plan made for one list
// never reads positions in another: if the table is rebuilt from another
// list meanwhile, the column it names does not exist.
func CodeColumn(c string, list []string) string {
	h := sha256.New()
	for _, v := range list {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	return fmt.Sprintf("%s%s_%x", CodePrefix, strings.ToLower(c), h.Sum(nil)[:6])
}

// Reserved reports whether a column name is one of the hidden columns.
func Reserved(name string) bool {
	return strings.EqualFold(name, RankColumn) || strings.EqualFold(name, RowsColumn) ||
		len(name) >= len(CodePrefix) && strings.EqualFold(name[:len(CodePrefix)], CodePrefix)
}

// Clone is a deep copy of p: nothing in it shares memory with p, so
// either can be changed without changing the other.
func (p Policy) Clone() Policy {
	c := p
	c.Tables = slices.Clone(p.Tables)
	for i := range c.Tables {
		t := &c.Tables[i]
		t.Columns = slices.Clone(t.Columns)
		for j := range t.Columns {
			col := &t.Columns[j]
			col.Public = slices.Clone(col.Public)
			col.Min, col.Max = clonePtr(col.Min), clonePtr(col.Max)
			col.DomainMin, col.DomainMax = clonePtr(col.DomainMin), clonePtr(col.DomainMax)
		}
	}
	return c
}

func clonePtr(v *float64) *float64 {
	if v == nil {
		return nil
	}
	c := *v
	return &c
}
