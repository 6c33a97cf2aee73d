// Package synth generates demo_hospital, the gateway's synthetic hospital
// dataset, as Arrow record batches: a "patients" table holding direct
// identifiers (name, national ID, phone), quasi-identifiers (birth date,
// sex, age, province) and special-group flags, and an "encounters" table of
// admissions whose per-patient counts have a long tail of chronic patients.
// The data is fully determined by Config, so a demo, a test and a benchmark
// built from the same Config see byte-identical tables (with the same Go
// release on the same architecture, since math.Exp and math.Log may differ
// in the last bit elsewhere). It is built with typed Arrow builders so
// that millions of rows take seconds; callers stream the batches into the
// engine or into encrypted table files.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Table names.
const (
	TablePatients   = "patients"
	TableEncounters = "encounters"
)

// Columns of the patients table, in schema order.
const (
	ColPatientID      = "patient_id"
	ColName           = "name"
	ColNationalID     = "national_id"
	ColPhone          = "phone"
	ColBirthDate      = "birth_date"
	ColSex            = "sex"
	ColAge            = "age"
	ColProvince       = "province"
	ColIsPregnant     = "is_pregnant"
	ColHIVPositive    = "hiv_positive"
	ColMentalDisorder = "mental_disorder"
	ColDeceased       = "deceased"
)

// Columns of the encounters table, in schema order (ColPatientID is the
// second).
const (
	ColEncounterID  = "encounter_id"
	ColAdmitDate    = "admit_date"
	ColDepartment   = "department"
	ColDiagnosis    = "diagnosis_icd10"
	ColLengthOfStay = "length_of_stay_days"
	ColCostYuan     = "cost_yuan"
)

// DefaultBatchRows is the batch size used when Config.BatchRows is zero.
const DefaultBatchRows = 65536

// Bounds of the generated values: ages are 0..MaxAge, stays
// 0..MaxLengthOfStay days, costs 0..MaxCostYuan.
const (
	MaxAge          = 110
	MaxLengthOfStay = 365
	MaxCostYuan     = 1_000_000
)

// Config determines the dataset: the same Config always gives the same
// data.
type Config struct {
	// Patients is the number of patients, at least 1.
	Patients int
	// Seed selects the dataset.
	Seed uint64
	// BatchRows caps the rows of each emitted batch; 0 means
	// DefaultBatchRows.
	BatchRows int
}

// Schemas returns a fresh schema for each table, keyed by table name.
func Schemas() map[string]*arrow.Schema {
	return map[string]*arrow.Schema{
		TablePatients: arrow.NewSchema([]arrow.Field{
			{Name: ColPatientID, Type: arrow.PrimitiveTypes.Int64},
			{Name: ColName, Type: arrow.BinaryTypes.String},
			{Name: ColNationalID, Type: arrow.BinaryTypes.String},
			{Name: ColPhone, Type: arrow.BinaryTypes.String},
			{Name: ColBirthDate, Type: arrow.FixedWidthTypes.Date32},
			{Name: ColSex, Type: arrow.BinaryTypes.String},
			{Name: ColAge, Type: arrow.PrimitiveTypes.Int32},
			{Name: ColProvince, Type: arrow.BinaryTypes.String},
			{Name: ColIsPregnant, Type: arrow.FixedWidthTypes.Boolean},
			{Name: ColHIVPositive, Type: arrow.FixedWidthTypes.Boolean},
			{Name: ColMentalDisorder, Type: arrow.FixedWidthTypes.Boolean},
			{Name: ColDeceased, Type: arrow.FixedWidthTypes.Boolean},
		}, nil),
		TableEncounters: arrow.NewSchema([]arrow.Field{
			{Name: ColEncounterID, Type: arrow.PrimitiveTypes.Int64},
			{Name: ColPatientID, Type: arrow.PrimitiveTypes.Int64},
			{Name: ColAdmitDate, Type: arrow.FixedWidthTypes.Date32},
			{Name: ColDepartment, Type: arrow.BinaryTypes.String},
			{Name: ColDiagnosis, Type: arrow.BinaryTypes.String},
			{Name: ColLengthOfStay, Type: arrow.PrimitiveTypes.Int32},
			{Name: ColCostYuan, Type: arrow.PrimitiveTypes.Float64},
		}, nil),
	}
}

// PublicCategories returns the domains of the columns whose possible
// values are public knowledge ("sex", "province", "department"), which a
// data steward may declare so that grouping on them needs no partition
// selection. The slices are fresh copies.
func PublicCategories() map[string][]string {
	provs := provinces()
	names := make([]string, len(provs))
	for i, p := range provs {
		names[i] = p.name
	}
	return map[string][]string{
		ColSex:        {"F", "M"},
		ColProvince:   names,
		ColDepartment: departmentNames(),
	}
}

// refYear is the year whose first day ages are computed at: age is the
// number of completed years on 2026-01-01.
const refYear = 2026

// Admissions fall in [firstAdmitYear-01-01, lastAdmitYear-12-31].
const (
	firstAdmitYear = 2020
	lastAdmitYear  = 2025
)

// Generate builds the dataset described by cfg and hands it to emit in
// batches of at most cfg.BatchRows rows: all of the patients table, then
// all of the encounters table, which lists each patient's admissions in
// patient order and, per patient, by date. Generate releases each batch
// after emit returns, so emit must Retain a batch it keeps. An error from
// emit stops generation and is returned wrapped. A nil mem means
// memory.DefaultAllocator.
func Generate(cfg Config, mem memory.Allocator, emit func(table string, rec arrow.RecordBatch) error) error {
	if cfg.Patients < 1 {
		return fmt.Errorf("synth: patients must be at least 1, got %d", cfg.Patients)
	}
	if cfg.BatchRows < 0 {
		return fmt.Errorf("synth: batch rows must not be negative, got %d", cfg.BatchRows)
	}
	if cfg.BatchRows == 0 {
		cfg.BatchRows = DefaultBatchRows
	}
	if emit == nil {
		return fmt.Errorf("synth: emit function is nil")
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	m := newModel()
	schemas := Schemas()
	// Two independent streams, so that a change to how patients are drawn
	// does not reshuffle the encounters and vice versa.
	prng := rand.New(rand.NewPCG(cfg.Seed, 0x7061_7469_656e_7473)) // "patients"
	erng := rand.New(rand.NewPCG(cfg.Seed, 0x656e_636f_756e_7472)) // "encountr"

	people := make([]person, cfg.Patients)
	if err := generatePatients(cfg, m, prng, people, schemas[TablePatients], mem, emit); err != nil {
		return err
	}
	return generateEncounters(cfg, m, erng, people, schemas[TableEncounters], mem, emit)
}

// person is what the encounters of a patient depend on.
type person struct {
	birth  int32 // days since 1970-01-01
	age    uint8
	female bool
	preg   bool
	hiv    bool
	mental bool
}

// batcher cuts the rows appended to a record builder into emitted batches.
type batcher struct {
	table string
	b     *array.RecordBuilder
	max   int
	rows  int
	emit  func(string, arrow.RecordBatch) error
	// reserve sizes the builders for the next batch.
	reserve func()
}

// row counts one appended row and emits a batch when it is full.
func (bt *batcher) row() error {
	bt.rows++
	if bt.rows < bt.max {
		return nil
	}
	return bt.flush()
}

func (bt *batcher) flush() error {
	if bt.rows == 0 {
		return nil
	}
	rec := bt.b.NewRecordBatch()
	bt.rows = 0
	err := bt.emit(bt.table, rec)
	rec.Release()
	if err != nil {
		return fmt.Errorf("synth: emit %s batch: %w", bt.table, err)
	}
	bt.reserve()
	return nil
}

func generatePatients(cfg Config, m *model, rng *rand.Rand, people []person, schema *arrow.Schema, mem memory.Allocator, emit func(string, arrow.RecordBatch) error) error {
	rb := array.NewRecordBuilder(mem, schema)
	defer rb.Release()
	var (
		cID       = rb.Field(0).(*array.Int64Builder)
		cName     = rb.Field(1).(*array.StringBuilder)
		cNational = rb.Field(2).(*array.StringBuilder)
		cPhone    = rb.Field(3).(*array.StringBuilder)
		cBirth    = rb.Field(4).(*array.Date32Builder)
		cSex      = rb.Field(5).(*array.StringBuilder)
		cAge      = rb.Field(6).(*array.Int32Builder)
		cProvince = rb.Field(7).(*array.StringBuilder)
		cPregnant = rb.Field(8).(*array.BooleanBuilder)
		cHIV      = rb.Field(9).(*array.BooleanBuilder)
		cMental   = rb.Field(10).(*array.BooleanBuilder)
		cDeceased = rb.Field(11).(*array.BooleanBuilder)
	)
	n := min(cfg.BatchRows, len(people))
	bt := &batcher{table: TablePatients, b: rb, max: cfg.BatchRows, emit: emit, reserve: func() {
		rb.Reserve(n)
		cName.ReserveData(n * 14)
		cNational.ReserveData(n * 18)
		cPhone.ReserveData(n * 11)
		cSex.ReserveData(n)
		cProvince.ReserveData(n * 8)
	}}
	bt.reserve()

	sexes := [2][]byte{[]byte("M"), []byte("F")}
	var (
		id    [18]byte
		phone [11]byte
		name  = make([]byte, 0, 32)
	)
	for i := range people {
		p := person{female: rng.IntN(2) == 0}
		p.age = uint8(m.age.pick(rng.Float64()))
		// Born between (2025-age)-01-02 and (2026-age)-01-01, so that
		// the completed age on 2026-01-01 is exactly age; babies are born
		// by 2025-12-31, the last admission day.
		y := refYear - 1 - int(p.age)
		first := daysFromCivil(y, 1, 2)
		span := int(daysFromCivil(y+1, 1, 2) - first)
		if p.age == 0 {
			span--
		}
		p.birth = first + int32(rng.IntN(span))
		p.preg = p.female && p.age >= 15 && p.age <= 49 && rng.Float64() < 0.05
		p.hiv = rng.Float64() < 0.001
		p.mental = rng.Float64() < 0.02
		deceased := rng.Float64() < deathRate(int(p.age))
		people[i] = p
		prov := m.province.pick(rng.Float64())

		// Resident ID (GB 11643): region code within the patient's
		// province, birth date, sequence whose last digit is odd for men
		// and even for women, check character.
		region := m.provs[prov].code*10000 + (1+rng.IntN(12))*100 + 1 + rng.IntN(18)
		putDigits(id[0:6], uint64(region))
		by, bm, bd := civilFromDays(p.birth)
		putDigits(id[6:10], uint64(by))
		putDigits(id[10:12], uint64(bm))
		putDigits(id[12:14], uint64(bd))
		seq := 2 * rng.IntN(500) // even, 000..998
		if !p.female {
			seq++
		}
		putDigits(id[14:17], uint64(seq))
		id[17] = checkChar(id[:17])

		// Mobile number: 1, a 13x/15x/18x network prefix, 8 digits.
		pre := m.phonePrefixes[rng.IntN(len(m.phonePrefixes))]
		phone[0], phone[1], phone[2] = '1', pre[0], pre[1]
		putDigits(phone[3:], rng.Uint64N(100_000_000))

		// Pinyin name: surname, then a one- or two-syllable given name
		// such as "Wang Fang" or "Li Xiuying".
		given := m.givenM
		if p.female {
			given = m.givenF
		}
		name = append(name[:0], m.surnames[m.surname.pick(rng.Float64())]...)
		name = append(name, ' ')
		name = append(name, given[rng.IntN(len(given))]...)
		if rng.IntN(3) != 0 {
			s := given[rng.IntN(len(given))]
			name = append(name, s[0]+('a'-'A'))
			name = append(name, s[1:]...)
		}

		cID.Append(int64(i + 1))
		cName.BinaryBuilder.Append(name)
		cNational.BinaryBuilder.Append(id[:])
		cPhone.BinaryBuilder.Append(phone[:])
		cBirth.Append(arrow.Date32(p.birth))
		cSex.BinaryBuilder.Append(sexes[b2i(p.female)])
		cAge.Append(int32(p.age))
		cProvince.BinaryBuilder.Append(m.provNames[prov])
		cPregnant.Append(p.preg)
		cHIV.Append(p.hiv)
		cMental.Append(p.mental)
		cDeceased.Append(deceased)
		if err := bt.row(); err != nil {
			return err
		}
	}
	return bt.flush()
}

func generateEncounters(cfg Config, m *model, rng *rand.Rand, people []person, schema *arrow.Schema, mem memory.Allocator, emit func(string, arrow.RecordBatch) error) error {
	rb := array.NewRecordBuilder(mem, schema)
	defer rb.Release()
	var (
		cID    = rb.Field(0).(*array.Int64Builder)
		cPID   = rb.Field(1).(*array.Int64Builder)
		cAdmit = rb.Field(2).(*array.Date32Builder)
		cDept  = rb.Field(3).(*array.StringBuilder)
		cDiag  = rb.Field(4).(*array.StringBuilder)
		cLOS   = rb.Field(5).(*array.Int32Builder)
		cCost  = rb.Field(6).(*array.Float64Builder)
	)
	n := min(cfg.BatchRows, 4*len(people)+256)
	bt := &batcher{table: TableEncounters, b: rb, max: cfg.BatchRows, emit: emit, reserve: func() {
		rb.Reserve(n)
		cDept.ReserveData(n * 11)
		cDiag.ReserveData(n * 5)
	}}
	bt.reserve()

	admitFirst := daysFromCivil(firstAdmitYear, 1, 1)
	admitLast := daysFromCivil(lastAdmitYear, 12, 31)
	var (
		eid   int64
		dates []int32
	)
	for i, p := range people {
		count := m.encounterCount(rng, p)
		lo := max(admitFirst, p.birth)
		dates = dates[:0]
		for range count {
			dates = append(dates, lo+int32(rng.IntN(int(admitLast-lo)+1)))
		}
		slices.Sort(dates)
		prof := m.profile(p)
		for _, day := range dates {
			dept, dx := m.department(rng, p, prof)
			los := m.lengthOfStay(rng, dept)
			eid++
			cID.Append(eid)
			cPID.Append(int64(i + 1))
			cAdmit.Append(arrow.Date32(day))
			cDept.BinaryBuilder.Append(m.deptNames[dept])
			cDiag.BinaryBuilder.Append(dx)
			cLOS.Append(int32(los))
			cCost.Append(m.cost(rng, dept, los))
			if err := bt.row(); err != nil {
				return err
			}
		}
	}
	return bt.flush()
}

// deathRate is the chance that a patient of the given age is recorded as
// deceased; over the age mix of the dataset it averages about 1%.
func deathRate(age int) float64 {
	switch {
	case age < 1:
		return 0.004
	case age < 50:
		return 0.0015
	case age < 65:
		return 0.005
	case age < 75:
		return 0.012
	case age < 85:
		return 0.03
	default:
		return 0.08
	}
}

// encounterCount draws how many admissions a patient has: 1 plus a
// geometric count whose mean grows with age, or, for a small share of
// chronic patients, 20 to 200.
func (m *model) encounterCount(rng *rand.Rand, p person) int {
	chronic := 0.004
	if p.age >= 65 || p.hiv || p.mental {
		chronic = 0.012
	}
	if rng.Float64() < chronic {
		u := rng.Float64()
		return 20 + int(181*u*u)
	}
	mean := 2.1
	switch {
	case p.age >= 65:
		mean = 3.2
	case p.age >= 45:
		mean = 2.6
	case p.age < 5:
		mean = 2.4
	}
	if p.preg {
		mean += 1.5
	}
	// A geometric count with this mean is the floor of an exponential
	// variate with rate ln(1 + 1/mean).
	return 1 + int(rng.ExpFloat64()/math.Log1p(1/mean))
}

// lengthOfStay draws the days in hospital: exponential around the
// department's mean with a rare heavy (Pareto) tail, within
// [0, MaxLengthOfStay].
func (m *model) lengthOfStay(rng *rand.Rand, dept int) int {
	var d float64
	if rng.Float64() < 0.015 {
		// Pareto with minimum 15 days and shape 1.2.
		d = 15 * math.Pow(1-rng.Float64(), -1/1.2)
	} else {
		d = rng.ExpFloat64() * m.depts[dept].meanStay
	}
	return int(math.Min(d, MaxLengthOfStay))
}

// cost draws the bill in yuan: a log-normal admission cost plus a
// log-normal daily charge for each day of stay, rounded to the fen and
// clamped to [0, MaxCostYuan].
func (m *model) cost(rng *rand.Rand, dept, los int) float64 {
	d := &m.depts[dept]
	// The explicit conversions keep the compiler from fusing a multiply
	// and an add, which would change the result on some architectures.
	c := float64(d.baseCost * math.Exp(0.8*rng.NormFloat64()))
	if los > 0 {
		c += float64(float64(los) * d.dailyCost * math.Exp(0.35*rng.NormFloat64()))
	}
	c = math.Round(c*100) / 100
	return math.Max(0, math.Min(c, MaxCostYuan))
}

// putDigits writes v as len(dst) decimal digits, zero padded; higher
// digits of v are dropped.
func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// checkChar is the ISO 7064 MOD 11-2 check character of the first 17
// digits of a resident ID: digit i (from 0) has weight 2^(17-i) mod 11,
// and the check value c makes the weighted sum plus c equal 1 mod 11; 10
// is written 'X'.
func checkChar(first17 []byte) byte {
	sum, w := 0, 1
	for i := 16; i >= 0; i-- {
		w = w * 2 % 11
		sum += int(first17[i]-'0') * w
	}
	c := (12 - sum%11) % 11
	if c == 10 {
		return 'X'
	}
	return byte('0' + c)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// daysFromCivil returns the days since 1970-01-01 of a proleptic
// Gregorian date. It counts years from March, so that the leap day is the
// last day of its year, in 400-year eras of 146097 days.
func daysFromCivil(y, m, d int) int32 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400                  // year of era, 0..399
	doy := (153*((m+9)%12)+2)/5 + d - 1 // day of the March-based year
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int32(era*146097 + doe - 719468) // 719468: 0000-03-01 to 1970-01-01
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(days int32) (y, m, d int) {
	z := int(days) + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if m > 12 {
		m -= 12
	}
	y = yoe + era*400
	if m <= 2 {
		y++
	}
	return y, m, d
}
