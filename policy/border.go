package policy

import "github.com/hospital/gateway/fault"

// OrgKind is where a recipient organisation stands under Art. 11 and 22(4).
type OrgKind string

// The kinds of organisation.
const (
	// Internal is the institution itself: its use is not "provided to
	// other legal entities" (Art. 11).
	Internal OrgKind = "internal"
	// Domestic is another legal entity inside China.
	Domestic OrgKind = "domestic"
	// Overseas is an organisation outside China (Art. 22(4), 29(7)).
	Overseas OrgKind = "overseas"
)

// CrossBorder applies Art. 22(4) and 29(7): overseas recipients get nothing
// from core or important data, nor personal information, unless an
// approved export assessment is recorded. Every dataset here holds
// patients' personal information, so without an assessment they get
// nothing at all, whatever the grade.
func CrossBorder(org string, kind OrgKind, assessed bool, grade Grade) error {
	if kind != Overseas || assessed {
		return nil
	}
	return fault.E(fault.Forbidden, "%s is an overseas organisation and the data is %s-grade personal health information; no answer can be provided abroad until an approved export assessment is recorded", org, grade)
}
