package synth

import (
	"testing"
	"time"
)

func TestCivilDays(t *testing.T) {
	cases := []struct {
		name string
		from time.Time
		days int
	}{
		{"all days since 1900", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), 200 * 366},
		{"around the epoch", time.Date(1969, 12, 1, 0, 0, 0, 0, time.UTC), 100},
		{"2000 leap day", time.Date(2000, 2, 27, 0, 0, 0, 0, time.UTC), 5},
		{"1900 not leap", time.Date(1900, 2, 27, 0, 0, 0, 0, time.UTC), 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.days {
				d := tc.from.AddDate(0, 0, i)
				want := int32(d.Unix() / 86400)
				if got := daysFromCivil(d.Year(), int(d.Month()), d.Day()); got != want {
					t.Fatalf("daysFromCivil(%s) = %d, want %d", d.Format(time.DateOnly), got, want)
				}
				y, m, dd := civilFromDays(want)
				if y != d.Year() || m != int(d.Month()) || dd != d.Day() {
					t.Fatalf("civilFromDays(%d) = %d-%d-%d, want %s", want, y, m, dd, d.Format(time.DateOnly))
				}
			}
		})
	}
}

func TestCheckChar(t *testing.T) {
	cases := []struct {
		name  string
		first string
		want  byte
	}{
		{"check X", "11010519491231002", 'X'},
		{"all zeros", "00000000000000000", '1'},
		{"check 0", "11010519900307018", '0'},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkChar([]byte(tc.first)); got != tc.want {
				t.Fatalf("checkChar(%s) = %c, want %c", tc.first, got, tc.want)
			}
		})
	}
}

func TestDistPick(t *testing.T) {
	d := newDist([]float64{1, 0, 3})
	cases := []struct {
		name string
		u    float64
		want int
	}{
		{"zero", 0, 0},
		{"inside first", 0.2499, 0},
		{"boundary skips empty outcome", 0.25, 2},
		{"near one", 0.9999999, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := d.pick(tc.u); got != tc.want {
				t.Fatalf("pick(%v) = %d, want %d", tc.u, got, tc.want)
			}
		})
	}
}
