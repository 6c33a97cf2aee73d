package synth_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine/synth"
)

type stats struct {
	patients, encounters int64
	perPatient           map[int64]int
	minAge, maxAge       int32
	badSex, badID        int
	maxLOS               int32
	maxCost              float64
	hash                 uint64
}

func collect(t *testing.T, patients int) stats {
	t.Helper()
	s := stats{perPatient: map[int64]int{}, minAge: 1000}
	err := synth.Generate(synth.Config{Patients: patients, Seed: 7}, memory.DefaultAllocator, func(table string, rec arrow.RecordBatch) error {
		switch table {
		case "patients":
			s.patients += rec.NumRows()
			ages := rec.Column(6).(*array.Int32)
			sex := rec.Column(5).(*array.String)
			ids := rec.Column(2).(*array.String)
			for i := 0; i < int(rec.NumRows()); i++ {
				s.minAge, s.maxAge = min(s.minAge, ages.Value(i)), max(s.maxAge, ages.Value(i))
				if v := sex.Value(i); v != "F" && v != "M" {
					s.badSex++
				}
				if !validID(ids.Value(i)) {
					s.badID++
				}
				s.hash = s.hash*31 + uint64(len(ids.Value(i))) + uint64(ids.Value(i)[16])
			}
		case "encounters":
			s.encounters += rec.NumRows()
			pid := rec.Column(1).(*array.Int64)
			los := rec.Column(5).(*array.Int32)
			cost := rec.Column(6).(*array.Float64)
			for i := 0; i < int(rec.NumRows()); i++ {
				s.perPatient[pid.Value(i)]++
				s.maxLOS = max(s.maxLOS, los.Value(i))
				s.maxCost = max(s.maxCost, cost.Value(i))
				s.hash = s.hash*31 + uint64(cost.Value(i))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validID(id string) bool {
	if len(id) != 18 {
		return false
	}
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := 0; i < 17; i++ {
		if id[i] < '0' || id[i] > '9' {
			return false
		}
		sum += int(id[i]-'0') * weights[i]
	}
	return "10X98765432"[sum%11] == id[17]
}

func TestGenerate(t *testing.T) {
	a := collect(t, 20000)
	b := collect(t, 20000)
	if a.hash != b.hash || a.encounters != b.encounters {
		t.Fatal("same seed produced different data")
	}
	if a.patients != 20000 || len(a.perPatient) != 20000 {
		t.Errorf("patients %d, with encounters %d", a.patients, len(a.perPatient))
	}
	if a.minAge < 0 || a.maxAge > 110 || a.badSex > 0 || a.badID > 0 {
		t.Errorf("ranges: %+v", a)
	}
	if a.maxLOS > 365 || a.maxCost > 1e6 {
		t.Errorf("encounter ranges: los %d cost %g", a.maxLOS, a.maxCost)
	}
	longest := 0
	for _, n := range a.perPatient {
		longest = max(longest, n)
	}
	if mean := float64(a.encounters) / 20000; mean < 3 || mean > 6 || longest < 20 {
		t.Errorf("encounters per patient: mean %.2f, longest %d", mean, longest)
	}
}

func BenchmarkGenerate100k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		synth.Generate(synth.Config{Patients: 100000, Seed: 1}, memory.DefaultAllocator, func(string, arrow.RecordBatch) error { return nil })
	}
}
