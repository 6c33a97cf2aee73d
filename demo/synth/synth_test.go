package synth_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/demo/synth"
)

// serialize generates cfg and returns each table as IPC stream bytes,
// checking on the way that batches respect cfg.BatchRows and that every
// patients batch comes before every encounters batch.
func serialize(t *testing.T, cfg synth.Config) map[string][]byte {
	t.Helper()
	limit := cfg.BatchRows
	if limit == 0 {
		limit = synth.DefaultBatchRows
	}
	schemas := synth.Schemas()
	bufs := map[string]*bytes.Buffer{}
	writers := map[string]*ipc.Writer{}
	var order []string
	err := synth.Generate(cfg, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
		if rec.NumRows() < 1 || rec.NumRows() > int64(limit) {
			return fmt.Errorf("%s batch of %d rows, limit %d", table, rec.NumRows(), limit)
		}
		if !rec.Schema().Equal(schemas[table]) {
			return fmt.Errorf("%s batch schema %s", table, rec.Schema())
		}
		if len(order) == 0 || order[len(order)-1] != table {
			order = append(order, table)
		}
		w, ok := writers[table]
		if !ok {
			bufs[table] = new(bytes.Buffer)
			w = ipc.NewWriter(bufs[table], ipc.WithSchema(schemas[table]))
			writers[table] = w
		}
		return w.Write(rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{synth.TablePatients, synth.TableEncounters}; !slices.Equal(order, want) {
		t.Fatalf("tables emitted in order %v, want %v", order, want)
	}
	out := map[string][]byte{}
	for table, w := range writers {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		out[table] = bufs[table].Bytes()
	}
	return out
}

func TestDeterministic(t *testing.T) {
	cases := []struct {
		name string
		cfg  synth.Config
	}{
		{"default batches", synth.Config{Patients: 3000, Seed: 1}},
		{"small batches", synth.Config{Patients: 3000, Seed: 1, BatchRows: 1000}},
		{"odd batches", synth.Config{Patients: 500, Seed: 99, BatchRows: 7}},
		{"one patient", synth.Config{Patients: 1, Seed: 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := serialize(t, tc.cfg), serialize(t, tc.cfg)
			for _, table := range []string{synth.TablePatients, synth.TableEncounters} {
				if !bytes.Equal(a[table], b[table]) {
					t.Errorf("%s differs between two runs", table)
				}
			}
			other := tc.cfg
			other.Seed++
			if c := serialize(t, other); bytes.Equal(a[synth.TablePatients], c[synth.TablePatients]) {
				t.Errorf("seeds %d and %d gave the same patients", tc.cfg.Seed, other.Seed)
			}
		})
	}
}

func TestBatchSizeDoesNotChangeData(t *testing.T) {
	// The same rows, whatever the cut: compare table contents read back.
	read := func(cfg synth.Config) map[string]arrow.Table {
		tables := map[string]arrow.Table{}
		for name, data := range serialize(t, cfg) {
			r, err := ipc.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			var recs []arrow.RecordBatch
			for r.Next() {
				rec := r.RecordBatch()
				rec.Retain()
				recs = append(recs, rec)
			}
			tables[name] = array.NewTableFromRecords(r.Schema(), recs)
			for _, rec := range recs {
				rec.Release()
			}
			r.Release()
		}
		return tables
	}
	a := read(synth.Config{Patients: 2000, Seed: 3})
	b := read(synth.Config{Patients: 2000, Seed: 3, BatchRows: 333})
	for name, ta := range a {
		tb := b[name]
		if !array.TableEqual(ta, tb) {
			t.Errorf("%s differs with another batch size", name)
		}
		ta.Release()
		tb.Release()
	}
}

func TestInvalidConfig(t *testing.T) {
	ok := func(string, arrow.RecordBatch) error { return nil }
	cases := []struct {
		name string
		cfg  synth.Config
		emit func(string, arrow.RecordBatch) error
	}{
		{"no patients", synth.Config{Patients: 0}, ok},
		{"negative patients", synth.Config{Patients: -1}, ok},
		{"negative batch rows", synth.Config{Patients: 10, BatchRows: -1}, ok},
		{"nil emit", synth.Config{Patients: 10}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := synth.Generate(tc.cfg, memory.DefaultAllocator, tc.emit); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestEmitErrorStops(t *testing.T) {
	stop := errors.New("disk full")
	cases := []struct {
		name  string
		table string
	}{
		{"in patients", synth.TablePatients},
		{"in encounters", synth.TableEncounters},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := synth.Generate(synth.Config{Patients: 1000, Seed: 1, BatchRows: 100}, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
				if table == tc.table {
					calls++
					return stop
				}
				return nil
			})
			if !errors.Is(err, stop) {
				t.Fatalf("error %v, want it to wrap %v", err, stop)
			}
			if calls != 1 {
				t.Fatalf("emit called %d times after failing", calls)
			}
		})
	}
}

// validNationalID checks an 18-character resident ID with ISO 7064
// MOD 11-2, computed here from its definition: sum over all 18 characters
// of value * 2^(17-i) must be 1 mod 11, with X worth 10.
func validNationalID(id string) bool {
	if len(id) != 18 {
		return false
	}
	sum := 0
	for i := 0; i < 18; i++ {
		var v int
		switch c := id[i]; {
		case c >= '0' && c <= '9':
			v = int(c - '0')
		case c == 'X' && i == 17:
			v = 10
		default:
			return false
		}
		w := 1
		for range 17 - i {
			w = w * 2 % 11
		}
		sum += v * w
	}
	return sum%11 == 1
}

func TestValidNationalID(t *testing.T) {
	cases := []struct {
		name string
		id   string
		want bool
	}{
		{"standard example with X", "11010519491231002X", true},
		{"wrong check digit", "110105194912310021", false},
		{"transposed digits", "11010519491213002X", false},
		{"too short", "11010519491231002", false},
		{"X in the middle", "1101051949X231002X", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := validNationalID(tc.id); got != tc.want {
				t.Fatalf("validNationalID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

// ageOn returns the completed years of someone born on birth at ref.
func ageOn(birth, ref time.Time) int {
	age := ref.Year() - birth.Year()
	if ref.Month() < birth.Month() || ref.Month() == birth.Month() && ref.Day() < birth.Day() {
		age--
	}
	return age
}

// tally is what TestValues learns from a generated dataset.
type tally struct {
	patients, female, femaleOfAge   int
	pregnant, hiv, mental, deceased int
	children, elderly               int
	encounters                      int
	perPatient                      []int
	departments, diagnoses          map[string]int
	losUpTo14                       int
	costs                           []float64
}

func TestValues(t *testing.T) {
	const patients = 100_000
	ref := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admitFirst := arrow.Date32FromTime(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	admitLast := arrow.Date32FromTime(time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC))
	pub := synth.PublicCategories()
	provinces := map[string]bool{}
	for _, p := range pub[synth.ColProvince] {
		provinces[p] = true
	}
	departments := map[string]bool{}
	for _, d := range pub[synth.ColDepartment] {
		departments[d] = true
	}
	s := tally{perPatient: make([]int, patients+1), departments: map[string]int{}, diagnoses: map[string]int{}}
	var births []arrow.Date32 // by patient_id
	births = append(births, 0)
	lastPatient := int64(0)
	fail := func(format string, args ...any) error { return fmt.Errorf(format, args...) }

	err := synth.Generate(synth.Config{Patients: patients, Seed: 20260101}, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
		col := func(name string) arrow.Array {
			idx := rec.Schema().FieldIndices(name)
			return rec.Column(idx[0])
		}
		for i, c := range rec.Columns() {
			if c.NullN() != 0 {
				return fail("%s.%s has nulls", table, rec.Schema().Field(i).Name)
			}
		}
		switch table {
		case synth.TablePatients:
			var (
				ids      = col(synth.ColPatientID).(*array.Int64)
				names    = col(synth.ColName).(*array.String)
				national = col(synth.ColNationalID).(*array.String)
				phones   = col(synth.ColPhone).(*array.String)
				birth    = col(synth.ColBirthDate).(*array.Date32)
				sex      = col(synth.ColSex).(*array.String)
				age      = col(synth.ColAge).(*array.Int32)
				province = col(synth.ColProvince).(*array.String)
				preg     = col(synth.ColIsPregnant).(*array.Boolean)
				hiv      = col(synth.ColHIVPositive).(*array.Boolean)
				mental   = col(synth.ColMentalDisorder).(*array.Boolean)
				dead     = col(synth.ColDeceased).(*array.Boolean)
			)
			for i := 0; i < int(rec.NumRows()); i++ {
				s.patients++
				if ids.Value(i) != int64(s.patients) {
					return fail("patient_id %d at row %d", ids.Value(i), s.patients)
				}
				id := national.Value(i)
				bd := birth.Value(i).ToTime()
				if !validNationalID(id) {
					return fail("patient %d: invalid national_id %q", s.patients, id)
				}
				if id[6:14] != bd.Format("20060102") {
					return fail("patient %d: national_id %s does not embed birth date %s", s.patients, id, bd.Format(time.DateOnly))
				}
				if female := sex.Value(i) == "F"; (id[16]-'0')%2 == 1 == female {
					return fail("patient %d: national_id %s has the wrong sex digit for %s", s.patients, id, sex.Value(i))
				}
				ph := phones.Value(i)
				if len(ph) != 11 || strings.Trim(ph, "0123456789") != "" || !strings.Contains("13 15 18", ph[:2]) {
					return fail("patient %d: phone %q", s.patients, ph)
				}
				if n := names.Value(i); !strings.Contains(n, " ") || len(n) < 4 {
					return fail("patient %d: name %q", s.patients, n)
				}
				a := int(age.Value(i))
				if a < 0 || a > synth.MaxAge {
					return fail("patient %d: age %d", s.patients, a)
				}
				if got := ageOn(bd, ref); got != a {
					return fail("patient %d: age %d but born %s, which makes %d", s.patients, a, bd.Format(time.DateOnly), got)
				}
				if v := sex.Value(i); v != "F" && v != "M" {
					return fail("patient %d: sex %q", s.patients, v)
				}
				if !provinces[province.Value(i)] {
					return fail("patient %d: province %q", s.patients, province.Value(i))
				}
				female := sex.Value(i) == "F"
				fertile := female && a >= 15 && a <= 49
				if preg.Value(i) && !fertile {
					return fail("patient %d: pregnant, sex %s age %d", s.patients, sex.Value(i), a)
				}
				s.female += b2i(female)
				s.femaleOfAge += b2i(fertile)
				s.pregnant += b2i(preg.Value(i))
				s.hiv += b2i(hiv.Value(i))
				s.mental += b2i(mental.Value(i))
				s.deceased += b2i(dead.Value(i))
				s.children += b2i(a < 18)
				s.elderly += b2i(a >= 60)
				births = append(births, birth.Value(i))
			}
		case synth.TableEncounters:
			var (
				ids   = col(synth.ColEncounterID).(*array.Int64)
				pids  = col(synth.ColPatientID).(*array.Int64)
				admit = col(synth.ColAdmitDate).(*array.Date32)
				dept  = col(synth.ColDepartment).(*array.String)
				dx    = col(synth.ColDiagnosis).(*array.String)
				los   = col(synth.ColLengthOfStay).(*array.Int32)
				cost  = col(synth.ColCostYuan).(*array.Float64)
			)
			for i := 0; i < int(rec.NumRows()); i++ {
				s.encounters++
				if ids.Value(i) != int64(s.encounters) {
					return fail("encounter_id %d at row %d", ids.Value(i), s.encounters)
				}
				pid := pids.Value(i)
				if pid < 1 || pid > patients {
					return fail("encounter %d: no patient %d", s.encounters, pid)
				}
				if pid < lastPatient {
					return fail("encounter %d: patient %d after patient %d", s.encounters, pid, lastPatient)
				}
				lastPatient = pid
				s.perPatient[pid]++
				if d := admit.Value(i); d < admitFirst || d > admitLast || d < births[pid] {
					return fail("encounter %d: admitted %s, patient born %s", s.encounters, d.FormattedString(), births[pid].FormattedString())
				}
				if !departments[dept.Value(i)] {
					return fail("encounter %d: department %q", s.encounters, dept.Value(i))
				}
				if l := los.Value(i); l < 0 || l > synth.MaxLengthOfStay {
					return fail("encounter %d: length of stay %d", s.encounters, l)
				} else if l <= 14 {
					s.losUpTo14++
				}
				if c := cost.Value(i); c < 0 || c > synth.MaxCostYuan || math.IsNaN(c) {
					return fail("encounter %d: cost %v", s.encounters, c)
				}
				s.departments[dept.Value(i)]++
				s.diagnoses[dx.Value(i)]++
				s.costs = append(s.costs, cost.Value(i))
			}
		default:
			return fail("unknown table %q", table)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.patients != patients {
		t.Fatalf("%d patients, want %d", s.patients, patients)
	}
	longest, without := 0, 0
	for _, n := range s.perPatient[1:] {
		longest = max(longest, n)
		without += b2i(n == 0)
	}
	slices.Sort(s.costs)
	share := func(n, of int) float64 { return float64(n) / float64(of) }
	checks := []struct {
		name     string
		got      float64
		min, max float64
	}{
		{"share female", share(s.female, s.patients), 0.48, 0.52},
		{"share pregnant of women 15-49", share(s.pregnant, s.femaleOfAge), 0.04, 0.06},
		{"share hiv positive", share(s.hiv, s.patients), 0.0005, 0.0016},
		{"share mental disorder", share(s.mental, s.patients), 0.017, 0.023},
		{"share deceased", share(s.deceased, s.patients), 0.007, 0.014},
		{"share children", share(s.children, s.patients), 0.08, 0.2},
		{"share aged 60+", share(s.elderly, s.patients), 0.3, 0.5},
		{"patients without encounters", float64(without), 0, 0},
		{"encounters per patient", share(s.encounters, s.patients), 3.5, 4.5},
		{"most encounters of a patient", float64(longest), 21, 201},
		{"departments used", float64(len(s.departments)), 12, 12},
		{"distinct diagnoses", float64(len(s.diagnoses)), 35, 55},
		{"share of stays up to 14 days", share(s.losUpTo14, s.encounters), 0.8, 0.95},
		{"median cost", s.costs[len(s.costs)/2], 1000, 10000},
		{"99.9th percentile cost", s.costs[len(s.costs)*999/1000], 50000, synth.MaxCostYuan},
	}
	for _, c := range checks {
		t.Logf("%s = %v", c.name, c.got)
		if c.got < c.min || c.got > c.max {
			t.Errorf("%s = %v, want %v..%v", c.name, c.got, c.min, c.max)
		}
	}
	t.Logf("%d encounters, longest %d, departments %v", s.encounters, longest, s.departments)
}

func TestPublicCategories(t *testing.T) {
	pub := synth.PublicCategories()
	cases := []struct {
		column string
		n      int
		has    string
	}{
		{synth.ColSex, 2, "F"},
		{synth.ColProvince, 31, "Guangdong"},
		{synth.ColDepartment, 12, "Infectious Disease"},
	}
	for _, tc := range cases {
		t.Run(tc.column, func(t *testing.T) {
			vals := pub[tc.column]
			if len(vals) != tc.n || !slices.Contains(vals, tc.has) {
				t.Fatalf("%s = %v", tc.column, vals)
			}
			if len(slices.Compact(slices.Sorted(slices.Values(vals)))) != tc.n {
				t.Fatalf("%s has duplicates: %v", tc.column, vals)
			}
			vals[0] = "changed"
			if synth.PublicCategories()[tc.column][0] == "changed" {
				t.Fatal("PublicCategories shares its slices between calls")
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func BenchmarkGenerate100k(b *testing.B) {
	for b.Loop() {
		rows := int64(0)
		err := synth.Generate(synth.Config{Patients: 100_000, Seed: 1}, memory.DefaultAllocator, func(_ string, rec arrow.RecordBatch) error {
			rows += rec.NumRows()
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(rows), "rows/op")
	}
}
