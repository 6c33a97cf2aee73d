package synth

import "math/rand/v2"

// The lookup tables below are built afresh by newModel for each Generate
// call, so the package keeps no mutable state.

// dist is a discrete distribution over 0..n-1 given by cumulative weights.
type dist struct{ cum []float64 }

func newDist(weights []float64) dist {
	cum := make([]float64, len(weights))
	total := 0.0
	for i, w := range weights {
		total += w
		cum[i] = total
	}
	for i := range cum {
		cum[i] /= total
	}
	return dist{cum: cum}
}

// pick maps u, uniform in [0, 1), to an outcome.
func (d dist) pick(u float64) int {
	lo, hi := 0, len(d.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if d.cum[mid] > u {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

type province struct {
	name   string
	code   int // first two digits of the GB/T 2260 division code
	weight float64
}

// provinces lists the 31 mainland province-level divisions with their
// division codes and rough populations in millions.
func provinces() []province {
	return []province{
		{"Beijing", 11, 22}, {"Tianjin", 12, 14}, {"Hebei", 13, 74},
		{"Shanxi", 14, 35}, {"Inner Mongolia", 15, 24}, {"Liaoning", 21, 42},
		{"Jilin", 22, 24}, {"Heilongjiang", 23, 31}, {"Shanghai", 31, 25},
		{"Jiangsu", 32, 85}, {"Zhejiang", 33, 66}, {"Anhui", 34, 61},
		{"Fujian", 35, 42}, {"Jiangxi", 36, 45}, {"Shandong", 37, 101},
		{"Henan", 41, 98}, {"Hubei", 42, 58}, {"Hunan", 43, 66},
		{"Guangdong", 44, 127}, {"Guangxi", 45, 50}, {"Hainan", 46, 10},
		{"Chongqing", 50, 32}, {"Sichuan", 51, 84}, {"Guizhou", 52, 39},
		{"Yunnan", 53, 47}, {"Tibet", 54, 4}, {"Shaanxi", 61, 40},
		{"Gansu", 62, 25}, {"Qinghai", 63, 6}, {"Ningxia", 64, 7},
		{"Xinjiang", 65, 26},
	}
}

// Department indexes, in the order of departmentNames.
const (
	deptInternal = iota
	deptSurgery
	deptPediatrics
	deptObstetrics
	deptOncology
	deptCardiology
	deptNeurology
	deptPsychiatry
	deptInfectious
	deptEmergency
	deptOrthopedics
	deptGeriatrics
	numDepts
)

func departmentNames() []string {
	return []string{
		"Internal Medicine", "Surgery", "Pediatrics", "Obstetrics", "Oncology", "Cardiology",
		"Neurology", "Psychiatry", "Infectious Disease", "Emergency", "Orthopedics", "Geriatrics",
	}
}

// diagnosis is an ICD-10 code a department records, with the sex it is
// limited to (0 for either) and a relative frequency.
type diagnosis struct {
	code   string
	sex    byte
	weight float64
}

// department holds what encounters in a department look like. The first
// diagnosis of each department applies to either sex.
type department struct {
	meanStay  float64 // days
	baseCost  float64 // median yuan per admission
	dailyCost float64 // median yuan per day of stay
	dx        []diagnosis
	dxDist    dist
	dxCodes   [][]byte
}

func departments() []department {
	return []department{
		deptInternal: {meanStay: 6, baseCost: 1200, dailyCost: 600, dx: []diagnosis{
			{"I10", 0, 3}, {"E11.9", 0, 3}, {"J18.9", 0, 2}, {"K29.7", 0, 2}, {"N39.0", 0, 1.5}}},
		deptSurgery: {meanStay: 7, baseCost: 6000, dailyCost: 900, dx: []diagnosis{
			{"K35.8", 0, 3}, {"K80.2", 0, 3}, {"K40.9", 0, 2}}},
		deptPediatrics: {meanStay: 3.5, baseCost: 600, dailyCost: 500, dx: []diagnosis{
			{"J06.9", 0, 4}, {"J20.9", 0, 3}, {"A09", 0, 2}, {"J18.0", 0, 2}}},
		deptObstetrics: {meanStay: 3.5, baseCost: 3500, dailyCost: 600, dx: []diagnosis{
			{"O80", 0, 4}, {"O82", 0, 3}, {"O24.4", 0, 1}, {"O13", 0, 1}}},
		deptOncology: {meanStay: 9, baseCost: 7000, dailyCost: 1200, dx: []diagnosis{
			{"C34.9", 0, 4}, {"C16.9", 0, 2}, {"C22.0", 0, 2}, {"C18.9", 0, 2},
			{"C50.9", 'F', 3}, {"C61", 'M', 2}}},
		deptCardiology: {meanStay: 6.5, baseCost: 5000, dailyCost: 1000, dx: []diagnosis{
			{"I25.1", 0, 3}, {"I21.9", 0, 1.5}, {"I50.9", 0, 2}, {"I48.9", 0, 1.5}}},
		deptNeurology: {meanStay: 9, baseCost: 2500, dailyCost: 800, dx: []diagnosis{
			{"I63.9", 0, 5}, {"G45.9", 0, 1.5}, {"G40.9", 0, 1}, {"G20", 0, 1}}},
		deptPsychiatry: {meanStay: 18, baseCost: 600, dailyCost: 300, dx: []diagnosis{
			{"F32.9", 0, 3}, {"F20.9", 0, 2}, {"F41.1", 0, 2}, {"F31.9", 0, 1}}},
		deptInfectious: {meanStay: 10, baseCost: 1500, dailyCost: 700, dx: []diagnosis{
			{"B18.1", 0, 3}, {"A15.0", 0, 2}, {"U07.1", 0, 2}, {"A41.9", 0, 1}}},
		deptEmergency: {meanStay: 0.6, baseCost: 400, dailyCost: 1000, dx: []diagnosis{
			{"R07.4", 0, 2}, {"R10.4", 0, 2}, {"S06.0", 0, 1.5}, {"S52.5", 0, 1}}},
		deptOrthopedics: {meanStay: 9, baseCost: 8000, dailyCost: 900, dx: []diagnosis{
			{"S72.0", 0, 2}, {"M17.1", 0, 2}, {"M54.5", 0, 2}, {"S82.2", 0, 1}}},
		deptGeriatrics: {meanStay: 11, baseCost: 1200, dailyCost: 600, dx: []diagnosis{
			{"F03", 0, 2}, {"J44.1", 0, 2}, {"I10", 0, 1.5}, {"M81.9", 0, 1.5}}},
	}
}

// hivCode is the ICD-10 code of HIV disease, recorded only for
// HIV-positive patients.
const hivCode = "B20"

// Patient profiles choose the department of an ordinary admission.
const (
	profChild = iota
	profFertileWoman
	profAdultWoman
	profAdultMan
	profElderly
	profOld
	numProfiles
)

// profileWeights gives, per profile, the weight of each department in
// department order.
func profileWeights() [numProfiles][numDepts]float64 {
	return [numProfiles][numDepts]float64{
		//               IM  Surg Ped Obs Onc Card Neu Psy Inf Emer Orth Geri
		profChild:        {4, 6, 60, 0, 1, 1, 3, 1, 6, 12, 6, 0},
		profFertileWoman: {22, 13, 0, 4, 5, 5, 7, 2, 4, 13, 9, 0},
		profAdultWoman:   {24, 13, 0, 0, 9, 9, 9, 2, 3, 12, 10, 0},
		profAdultMan:     {23, 15, 0, 0, 7, 9, 8, 2, 5, 14, 11, 0},
		profElderly:      {20, 9, 0, 0, 11, 16, 10, 1, 2, 9, 8, 6},
		profOld:          {16, 6, 0, 0, 10, 17, 11, 1, 2, 9, 8, 19},
	}
}

// ageWeights gives the relative share of patients of each age 0..MaxAge:
// hospital patients are mostly adults and the elderly.
func ageWeights() []float64 {
	bands := []struct {
		upTo int
		w    float64
	}{
		{0, 1.6}, {4, 1.0}, {14, 0.6}, {24, 0.7}, {34, 1.2}, {44, 1.1}, {54, 1.4},
		{64, 1.6}, {74, 1.7}, {84, 1.2}, {94, 0.45}, {99, 0.08}, {MaxAge, 0.01},
	}
	w := make([]float64, MaxAge+1)
	b := 0
	for age := range w {
		for bands[b].upTo < age {
			b++
		}
		w[age] = bands[b].w
	}
	return w
}

// model holds the lookup tables of one Generate call.
type model struct {
	age, province, surname dist
	provs                  []province
	provNames              [][]byte
	surnames               [][]byte
	givenF, givenM         []string
	phonePrefixes          []string
	depts                  []department
	deptNames              [][]byte
	profiles               [numProfiles]dist
	hivCode                []byte
}

func newModel() *model {
	m := &model{
		age:   newDist(ageWeights()),
		provs: provinces(),
		givenF: []string{"Fang", "Na", "Min", "Jing", "Li", "Xiu", "Ying", "Yan", "Hua", "Hui",
			"Mei", "Lan", "Xia", "Juan", "Ping", "Hong", "Yu", "Ting", "Qian", "Xue",
			"Dan", "Lin", "Qing", "Yun", "Zhen", "Jie", "Wen", "Shu"},
		givenM: []string{"Wei", "Qiang", "Lei", "Jun", "Yong", "Jie", "Tao", "Ming", "Chao", "Gang",
			"Hao", "Jian", "Bo", "Peng", "Hui", "Xin", "Yu", "Hua", "Long", "Bin",
			"Feng", "Cheng", "Dong", "Kai", "Zhi", "Guo", "Wen", "Liang"},
		phonePrefixes: []string{"30", "31", "32", "33", "34", "35", "36", "37", "38", "39",
			"50", "51", "52", "53", "55", "56", "57", "58", "59",
			"80", "81", "82", "83", "84", "85", "86", "87", "88", "89"},
		depts:   departments(),
		hivCode: []byte(hivCode),
	}
	pw := make([]float64, len(m.provs))
	for i, p := range m.provs {
		pw[i] = p.weight
		m.provNames = append(m.provNames, []byte(p.name))
	}
	m.province = newDist(pw)

	// Common surnames with their rough share of the population in percent.
	surnames := []struct {
		name  string
		share float64
	}{
		{"Wang", 7.1}, {"Li", 7.0}, {"Zhang", 6.8}, {"Liu", 5.4}, {"Chen", 4.6},
		{"Yang", 3.1}, {"Huang", 2.5}, {"Zhao", 2.3}, {"Wu", 2.0}, {"Zhou", 1.9},
		{"Xu", 1.5}, {"Sun", 1.5}, {"Ma", 1.5}, {"Zhu", 1.3}, {"Hu", 1.3},
		{"Guo", 1.2}, {"He", 1.2}, {"Gao", 1.1}, {"Lin", 1.1}, {"Luo", 0.9},
		{"Zheng", 0.9}, {"Liang", 0.9}, {"Xie", 0.8}, {"Song", 0.6}, {"Tang", 0.6},
		{"Han", 0.6}, {"Feng", 0.5}, {"Deng", 0.5}, {"Cao", 0.5}, {"Peng", 0.5},
		{"Zeng", 0.5}, {"Xiao", 0.5}, {"Tian", 0.5}, {"Dong", 0.5}, {"Pan", 0.5},
		{"Yuan", 0.4}, {"Cai", 0.4}, {"Jiang", 0.4}, {"Yu", 0.4}, {"Du", 0.4},
	}
	sw := make([]float64, len(surnames))
	for i, s := range surnames {
		sw[i] = s.share
		m.surnames = append(m.surnames, []byte(s.name))
	}
	m.surname = newDist(sw)

	for i, name := range departmentNames() {
		m.deptNames = append(m.deptNames, []byte(name))
		d := &m.depts[i]
		w := make([]float64, len(d.dx))
		for j, dx := range d.dx {
			w[j] = dx.weight
			d.dxCodes = append(d.dxCodes, []byte(dx.code))
		}
		d.dxDist = newDist(w)
	}
	for i, w := range profileWeights() {
		m.profiles[i] = newDist(w[:])
	}
	return m
}

// profile returns the department distribution of p's ordinary admissions.
func (m *model) profile(p person) *dist {
	switch {
	case p.age < 18:
		return &m.profiles[profChild]
	case p.age >= 75:
		return &m.profiles[profOld]
	case p.age >= 60:
		return &m.profiles[profElderly]
	case !p.female:
		return &m.profiles[profAdultMan]
	case p.age <= 49:
		return &m.profiles[profFertileWoman]
	default:
		return &m.profiles[profAdultWoman]
	}
}

// department draws the department and diagnosis of one admission of p:
// pregnant women mostly go to Obstetrics, patients with a mental disorder
// often to Psychiatry, HIV-positive patients often to Infectious Disease
// with code B20; other admissions follow the patient's profile.
func (m *model) department(rng *rand.Rand, p person, prof *dist) (int, []byte) {
	u := rng.Float64()
	dept := -1
	switch {
	case p.preg && u < 0.55:
		dept = deptObstetrics
	case p.mental && u < 0.4:
		dept = deptPsychiatry
	case p.hiv && u < 0.35:
		return deptInfectious, m.hivCode
	}
	if dept < 0 {
		dept = prof.pick(rng.Float64())
	}
	if dept == deptInfectious && p.hiv && rng.IntN(5) != 0 {
		return dept, m.hivCode
	}
	d := &m.depts[dept]
	k := d.dxDist.pick(rng.Float64())
	if s := d.dx[k].sex; s != 0 && (s == 'F') != p.female {
		k = 0
	}
	return dept, d.dxCodes[k]
}
