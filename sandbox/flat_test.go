package sandbox

import (
	"reflect"
	"testing"
)

func TestFlatten(t *testing.T) {
	names := []string{"__pu", "__g0", "__a0"}
	cases := []struct {
		name, base string
		want       *Flat
	}{
		{
			name: "plain",
			base: "SELECT p.patient_id AS __pu, TRY(p.sex) AS __g0, 1 AS __a0 FROM s.patients AS p WHERE (age > 50)",
			want: &Flat{Exprs: map[string]string{"__pu": "p.patient_id", "__g0": "TRY(p.sex)", "__a0": "1"}, From: "FROM s.patients AS p WHERE (age > 50)"},
		},
		{
			name: "a constant after the last delimiter is the WHERE clause's",
			base: "SELECT p.patient_id AS __pu, TRY(p.sex) AS __g0, 1 AS __a0 FROM s.patients AS p WHERE (ward = ' FROM ')",
			want: &Flat{Exprs: map[string]string{"__pu": "p.patient_id", "__g0": "TRY(p.sex)", "__a0": "1"}, From: "FROM s.patients AS p WHERE (ward = ' FROM ')"},
		},
		{
			name: "a constant holding a delimiter",
			base: "SELECT p.patient_id AS __pu, TRY(p.sex) AS __g0, 1 AS __a0 FROM s.patients AS p WHERE (ward <> ' AS __a0 FROM ')",
		},
		{
			name: "a constant holding an earlier delimiter",
			base: "SELECT p.patient_id AS __pu, (p.sex || ' AS __pu, ') AS __g0, 1 AS __a0 FROM s.patients AS p",
		},
		{
			name: "a delimiter overlapping another by its space",
			base: "SELECT p.patient_id AS __pu, x AS __g0, AS __g0, 1 AS __a0 FROM s.patients AS p",
		},
		{name: "not a select", base: "FROM s.patients SELECT p.patient_id AS __pu, p.sex AS __g0, 1 AS __a0"},
		{name: "a column missing", base: "SELECT p.patient_id AS __pu, 1 AS __a0 FROM s.patients AS p"},
		{name: "columns out of order", base: "SELECT p.sex AS __g0, p.patient_id AS __pu, 1 AS __a0 FROM s.patients AS p"},
		{name: "an empty expression", base: "SELECT p.patient_id AS __pu,  AS __g0, 1 AS __a0 FROM s.patients AS p"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := flatten(c.base, names); !reflect.DeepEqual(got, c.want) {
				t.Errorf("flatten(%q) = %+v, want %+v", c.base, got, c.want)
			}
		})
	}
}

func TestOccurrences(t *testing.T) {
	for _, c := range []struct {
		s, sub string
		want   int
	}{
		{"", " a ", 0},
		{" a ", " a ", 1},
		{" a  a ", " a ", 2},
		{" a a ", " a ", 2}, // overlapping by the space
		{"aaaa", "aa", 3},
	} {
		if got := occurrences(c.s, c.sub); got != c.want {
			t.Errorf("occurrences(%q, %q) = %d, want %d", c.s, c.sub, got, c.want)
		}
	}
}
