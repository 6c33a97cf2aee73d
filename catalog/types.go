package catalog

import (
	"time"

	"github.com/hospital/gateway/accountant"
)

// Dataset is a registered dataset: its Article 6 description and its policy.
type Dataset struct {
	Name        string `json:"name"`
	Grade       Grade  `json:"grade"`
	Source      string `json:"source"`
	Category    string `json:"category"`
	Purpose     string `json:"purpose"`
	Method      string `json:"processing_method"`
	Responsible string `json:"responsible_party"`
	// CrossBorder states whether and where the dataset is transmitted
	// abroad; for this gateway it is "none" unless an export assessment is
	// recorded.
	CrossBorder string `json:"cross_border"`
	// Protection lists the protection measures applied.
	Protection string `json:"protection_measures"`
	Policy     Policy `json:"policy"`
	// PolicyDigest, for a dataset read from the store, is the SHA-256 of
	// the stored text Policy was decoded from: equal digests, equal
	// policies. It is zero for a dataset not read from the store, and a
	// caller that changes Policy must zero it.
	PolicyDigest [32]byte `json:"-"`
	// Rows and Units are the dataset's scale: rows over all tables and
	// distinct privacy units (patients).
	Rows  int64 `json:"rows"`
	Units int64 `json:"units"`
	// NeedsRegrade is set when a reload changed the scale materially
	// (Art. 7) and cleared when a steward confirms the grade.
	NeedsRegrade bool `json:"needs_regrade"`
	// ExactAnswers allows exact, small-cell-suppressed answers for this
	// dataset, where its grade's rules allow them at all; it is switched on
	// only by a steward's proposal that an approver verifies.
	ExactAnswers bool      `json:"exact_answers"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Role of a person. A person may hold several.
type PersonRole string

// The roles.
const (
	Admin      PersonRole = "admin"
	Steward    PersonRole = "steward"
	Approver   PersonRole = "approver"
	Researcher PersonRole = "researcher"
	Auditor    PersonRole = "auditor"
)

// Org is a legal entity that people belong to.
type Org struct {
	ID   string  `json:"id"`
	Name string  `json:"name"`
	Kind OrgKind `json:"kind"`
	// ExportAssessment is true when an approved cross-border export
	// assessment is recorded for this organisation (Art. 22(4)).
	ExportAssessment bool `json:"export_assessment"`
}

// Person is someone with a token.
type Person struct {
	ID     string       `json:"id"`
	Name   string       `json:"name"`
	Org    Org          `json:"org"`
	Roles  []PersonRole `json:"roles"`
	Active bool         `json:"active"`
}

// Has reports whether p holds role r.
func (p Person) Has(r PersonRole) bool {
	for _, x := range p.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// RequestState is where an access request stands.
type RequestState string

// The states of an access request: pending, approved by a steward, granted
// after a leadership approver's verification, or rejected.
const (
	Pending  RequestState = "pending"
	Approved RequestState = "approved"
	Granted  RequestState = "granted"
	Rejected RequestState = "rejected"
)

// AccessRequest is a researcher's application for access (Art. 10, 13).
type AccessRequest struct {
	ID         string       `json:"id"`
	Researcher string       `json:"researcher"`
	Datasets   []string     `json:"datasets"`
	Columns    []string     `json:"columns,omitempty"`
	Purpose    string       `json:"purpose"`
	Method     string       `json:"processing_method,omitempty"`
	Epsilon    float64      `json:"epsilon"`
	Delta      float64      `json:"delta"`
	ExpiresAt  time.Time    `json:"expires_at"`
	State      RequestState `json:"state"`
	Steward    string       `json:"approved_by,omitempty"`
	Approver   string       `json:"verified_by,omitempty"`
	Reason     string       `json:"reason,omitempty"`
	GrantID    string       `json:"grant_id,omitempty"`
	CreatedAt  time.Time    `json:"created_at"`
}

// Grant is a live permission with its privacy budget.
type Grant struct {
	ID           string   `json:"grant_id"`
	RequestID    string   `json:"request_id"`
	Researcher   string   `json:"researcher"`
	Datasets     []string `json:"datasets"`
	Columns      []string `json:"columns,omitempty"`
	Purpose      string   `json:"purpose"`
	EpsilonTotal float64  `json:"epsilon_total"`
	// EpsilonSpent and DeltaSpent are what the accountant charges: the
	// better of basic composition and zCDP (see package accountant),
	// named by EpsilonSpentBy ("sum" or "zcdp").
	EpsilonSpent   float64 `json:"epsilon_spent"`
	DeltaTotal     float64 `json:"delta_total"`
	DeltaSpent     float64 `json:"delta_spent"`
	EpsilonSpentBy string  `json:"epsilon_spent_by"`
	// EpsilonSum and DeltaSum are the plain sums of the queries' epsilons
	// and deltas (what the history adds up to), RhoSpent the sum of their
	// zCDP costs and DeltaPartitionSpent of their k rules' deltas.
	EpsilonSum          float64 `json:"epsilon_sum"`
	DeltaSum            float64 `json:"delta_sum"`
	RhoSpent            float64 `json:"rho_spent"`
	DeltaPartitionSpent float64 `json:"delta_partition_spent"`
	// Accounting is the accountant's name: "zcdp".
	Accounting string `json:"accounting"`
	// Spent holds the sums in integer units.
	Spent          accountant.Spent `json:"-"`
	DefaultEpsilon float64          `json:"default_epsilon"`
	ExpiresAt      time.Time        `json:"expires_at"`
	RevokedAt      *time.Time       `json:"revoked_at,omitempty"`
	CreatedAt      time.Time        `json:"created_at"`
}

// Dataset returns the grant's single dataset, or "" when it covers several.
func (g Grant) Dataset() string {
	if len(g.Datasets) == 1 {
		return g.Datasets[0]
	}
	return ""
}

// Budget is what the grant may spend, as stated.
func (g Grant) Budget() accountant.Budget {
	return accountant.Budget{Epsilon: g.EpsilonTotal, Delta: g.DeltaTotal}
}

// Live reports whether the grant may be used at now.
func (g Grant) Live(now time.Time) bool {
	return g.RevokedAt == nil && now.Before(g.ExpiresAt)
}
