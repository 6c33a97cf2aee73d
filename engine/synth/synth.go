// Package synth generates the synthetic hospital dataset demo_hospital as
// Arrow record batches: patients with identifiers, quasi-identifiers and
// special-group flags, and their encounters with a long tail of chronic
// patients. It is deterministic from a seed, so a demo, a test and a
// benchmark built from the same Config see the same data, and it is fast
// enough to build 10 million encounters in seconds.
package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Config sizes the dataset.
type Config struct {
	Patients  int
	Seed      uint64
	BatchRows int // rows per record batch; default 65536
}

// Schemas returns the Arrow schema of each table.
func Schemas() map[string]*arrow.Schema {
	return map[string]*arrow.Schema{
		"patients": arrow.NewSchema([]arrow.Field{
			{Name: "patient_id", Type: arrow.PrimitiveTypes.Int64},
			{Name: "name", Type: arrow.BinaryTypes.String},
			{Name: "national_id", Type: arrow.BinaryTypes.String},
			{Name: "phone", Type: arrow.BinaryTypes.String},
			{Name: "birth_date", Type: arrow.FixedWidthTypes.Date32},
			{Name: "sex", Type: arrow.BinaryTypes.String},
			{Name: "age", Type: arrow.PrimitiveTypes.Int32},
			{Name: "province", Type: arrow.BinaryTypes.String},
			{Name: "is_pregnant", Type: arrow.FixedWidthTypes.Boolean},
			{Name: "hiv_positive", Type: arrow.FixedWidthTypes.Boolean},
			{Name: "mental_disorder", Type: arrow.FixedWidthTypes.Boolean},
			{Name: "deceased", Type: arrow.FixedWidthTypes.Boolean},
		}, nil),
		"encounters": arrow.NewSchema([]arrow.Field{
			{Name: "encounter_id", Type: arrow.PrimitiveTypes.Int64},
			{Name: "patient_id", Type: arrow.PrimitiveTypes.Int64},
			{Name: "admit_date", Type: arrow.FixedWidthTypes.Date32},
			{Name: "department", Type: arrow.BinaryTypes.String},
			{Name: "diagnosis_icd10", Type: arrow.BinaryTypes.String},
			{Name: "length_of_stay_days", Type: arrow.PrimitiveTypes.Int32},
			{Name: "cost_yuan", Type: arrow.PrimitiveTypes.Float64},
		}, nil),
	}
}

// provinces are the 31 mainland province-level divisions with rough
// population weights (millions).
var provinces = []struct {
	name   string
	weight float64
}{
	{"Guangdong", 126}, {"Shandong", 101}, {"Henan", 99}, {"Jiangsu", 85}, {"Sichuan", 84},
	{"Hebei", 75}, {"Hunan", 66}, {"Zhejiang", 65}, {"Anhui", 61}, {"Hubei", 58},
	{"Guangxi", 50}, {"Yunnan", 47}, {"Jiangxi", 45}, {"Liaoning", 43}, {"Fujian", 42},
	{"Shaanxi", 40}, {"Guizhou", 39}, {"Shanxi", 35}, {"Chongqing", 32}, {"Heilongjiang", 31},
	{"Xinjiang", 26}, {"Inner Mongolia", 24}, {"Shanghai", 25}, {"Jilin", 24}, {"Beijing", 22},
	{"Tianjin", 14}, {"Gansu", 25}, {"Hainan", 10}, {"Ningxia", 7}, {"Qinghai", 6}, {"Tibet", 4},
}

var departments = []string{
	"Internal Medicine", "Surgery", "Pediatrics", "Obstetrics", "Oncology", "Cardiology",
	"Neurology", "Psychiatry", "Infectious Disease", "Emergency", "Orthopedics", "Geriatrics",
}

// diagnoses are ICD-10 codes per department.
var diagnoses = map[string][]string{
	"Internal Medicine":  {"E11.9", "I10", "K29.7", "J18.9", "N39.0", "E78.5"},
	"Surgery":            {"K35.8", "K80.2", "K40.9", "T81.4"},
	"Pediatrics":         {"J06.9", "A09", "J20.9", "H66.9", "B01.9"},
	"Obstetrics":         {"O80", "O82", "O24.4", "O13", "Z34.0"},
	"Oncology":           {"C34.9", "C50.9", "C16.9", "C22.0", "C18.9"},
	"Cardiology":         {"I21.9", "I50.9", "I48", "I25.1"},
	"Neurology":          {"I63.9", "G40.9", "G43.9", "G20"},
	"Psychiatry":         {"F32.9", "F20.9", "F41.1", "F31.9"},
	"Infectious Disease": {"B20", "A15.0", "B18.1", "A41.9"},
	"Emergency":          {"S06.0", "T14.9", "R07.4", "S52.5"},
	"Orthopedics":        {"S72.0", "M17.1", "M54.5", "S82.2"},
	"Geriatrics":         {"F03", "M81.0", "I10", "J44.1"},
}

var surnames = []string{"Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Gao", "Luo"}
var givenNames = []string{"Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong", "Yan", "Jie", "Tao", "Ming", "Chao", "Xiu", "Hua", "Ping", "Gang", "Hui", "Xin", "Yu", "Hao"}

// PublicCategories returns the domains that are public knowledge, which a
// steward may declare so that grouping on them needs no partition selection.
func PublicCategories() map[string][]string {
	ps := make([]string, len(provinces))
	for i, p := range provinces {
		ps[i] = p.name
	}
	return map[string][]string{
		"sex":        {"F", "M"},
		"province":   ps,
		"department": append([]string(nil), departments...),
	}
}

// reference is the date ages are computed at.
var reference = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func days(t time.Time) arrow.Date32 { return arrow.Date32FromTime(t) }

// checkDigit is the ISO 7064 MOD 11-2 check character of a resident ID.
func checkDigit(first17 string) byte {
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := 0; i < 17; i++ {
		sum += int(first17[i]-'0') * weights[i]
	}
	return "10X98765432"[sum%11]
}

// patient is what encounters need to know about a patient.
type patient struct {
	age      int
	female   bool
	pregnant bool
	hiv      bool
	mental   bool
}

// Generate produces the dataset and hands each batch to emit: all of
// patients, then all of encounters. Batches are released after emit
// returns.
func Generate(cfg Config, mem memory.Allocator, emit func(table string, rec arrow.RecordBatch) error) error {
	if cfg.Patients < 1 {
		return fmt.Errorf("synth: patients must be positive, got %d", cfg.Patients)
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 65536
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6761746577617921))
	var cum []float64
	total := 0.0
	for _, p := range provinces {
		total += p.weight
		cum = append(cum, total)
	}
	schemas := Schemas()
	people := make([]patient, cfg.Patients)

	pb := array.NewRecordBuilder(mem, schemas["patients"])
	defer pb.Release()
	flush := func(table string, b *array.RecordBuilder) error {
		rec := b.NewRecordBatch()
		defer rec.Release()
		if rec.NumRows() == 0 {
			return nil
		}
		return emit(table, rec)
	}
	var id [18]byte
	for i := 0; i < cfg.Patients; i++ {
		p := patient{female: rng.IntN(2) == 0}
		// Age: a mixture giving more adults and elderly than children.
		switch r := rng.Float64(); {
		case r < 0.18:
			p.age = rng.IntN(18)
		case r < 0.70:
			p.age = 18 + rng.IntN(42)
		default:
			p.age = 60 + int(math.Min(50, rng.ExpFloat64()*12))
		}
		birth := reference.AddDate(-p.age-1, 0, 1+rng.IntN(364))
		prov := 0
		x := rng.Float64() * total
		for prov < len(cum)-1 && cum[prov] < x {
			prov++
		}
		p.pregnant = p.female && p.age >= 15 && p.age <= 49 && rng.Float64() < 0.05
		p.hiv = rng.Float64() < 0.001
		p.mental = rng.Float64() < 0.02
		deceased := rng.Float64() < 0.002+float64(max(0, p.age-60))*0.001
		people[i] = p

		// 18-character resident ID: region, birth date, sequence (odd for
		// men), check digit.
		copy(id[:6], fmt.Sprintf("%06d", 110000+prov*10000+rng.IntN(9000)))
		copy(id[6:14], birth.Format("20060102"))
		seq := rng.IntN(500) * 2
		if !p.female {
			seq++
		}
		copy(id[14:17], fmt.Sprintf("%03d", seq))
		id[17] = checkDigit(string(id[:17]))

		sex := "M"
		if p.female {
			sex = "F"
		}
		pb.Field(0).(*array.Int64Builder).Append(int64(i + 1))
		pb.Field(1).(*array.StringBuilder).Append(surnames[rng.IntN(len(surnames))] + " " + givenNames[rng.IntN(len(givenNames))])
		pb.Field(2).(*array.StringBuilder).Append(string(id[:]))
		pb.Field(3).(*array.StringBuilder).Append(fmt.Sprintf("1%d%d%08d", []int{3, 5, 8}[rng.IntN(3)], rng.IntN(10), rng.IntN(100000000)))
		pb.Field(4).(*array.Date32Builder).Append(days(birth))
		pb.Field(5).(*array.StringBuilder).Append(sex)
		pb.Field(6).(*array.Int32Builder).Append(int32(p.age))
		pb.Field(7).(*array.StringBuilder).Append(provinces[prov].name)
		pb.Field(8).(*array.BooleanBuilder).Append(p.pregnant)
		pb.Field(9).(*array.BooleanBuilder).Append(p.hiv)
		pb.Field(10).(*array.BooleanBuilder).Append(p.mental)
		pb.Field(11).(*array.BooleanBuilder).Append(deceased)
		if (i+1)%cfg.BatchRows == 0 {
			if err := flush("patients", pb); err != nil {
				return err
			}
		}
	}
	if err := flush("patients", pb); err != nil {
		return err
	}

	eb := array.NewRecordBuilder(mem, schemas["encounters"])
	defer eb.Release()
	start := days(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	span := int32(days(time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)) - start)
	var enc int64
	rows := 0
	for i, p := range people {
		n := 1 + int(rng.ExpFloat64()*3)
		if rng.Float64() < 0.01 { // chronic patients: the long tail
			n = 20 + rng.IntN(181)
		}
		for j := 0; j < n; j++ {
			dept := pickDepartment(rng, p)
			codes := diagnoses[dept]
			code := codes[rng.IntN(len(codes))]
			if p.hiv && rng.Float64() < 0.3 {
				dept, code = "Infectious Disease", "B20"
			}
			los := int(math.Min(365, rng.ExpFloat64()*3))
			if rng.Float64() < 0.01 {
				los = int(math.Min(365, 30+rng.ExpFloat64()*60))
			}
			cost := math.Min(1e6, math.Max(0, math.Exp(7.5+rng.NormFloat64()*0.8)*(1+float64(los)/2)))
			enc++
			eb.Field(0).(*array.Int64Builder).Append(enc)
			eb.Field(1).(*array.Int64Builder).Append(int64(i + 1))
			eb.Field(2).(*array.Date32Builder).Append(start + arrow.Date32(rng.Int32N(span+1)))
			eb.Field(3).(*array.StringBuilder).Append(dept)
			eb.Field(4).(*array.StringBuilder).Append(code)
			eb.Field(5).(*array.Int32Builder).Append(int32(los))
			eb.Field(6).(*array.Float64Builder).Append(math.Round(cost*100) / 100)
			rows++
			if rows == cfg.BatchRows {
				if err := flush("encounters", eb); err != nil {
					return err
				}
				rows = 0
			}
		}
	}
	return flush("encounters", eb)
}

func pickDepartment(rng *rand.Rand, p patient) string {
	switch {
	case p.age < 18 && rng.Float64() < 0.7:
		return "Pediatrics"
	case p.pregnant && rng.Float64() < 0.6:
		return "Obstetrics"
	case p.mental && rng.Float64() < 0.5:
		return "Psychiatry"
	case p.age >= 75 && rng.Float64() < 0.3:
		return "Geriatrics"
	}
	for {
		d := departments[rng.IntN(len(departments))]
		if (d == "Pediatrics" && p.age >= 18) || (d == "Obstetrics" && !p.female) || (d == "Geriatrics" && p.age < 60) {
			continue
		}
		return d
	}
}
