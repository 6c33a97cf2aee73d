package catalog

import "github.com/hospital/gateway/policy"

// The catalog stores the policy vocabulary (package policy); these names
// keep the catalog's own code short. Other packages use policy directly.
type (
	Grade        = policy.Grade
	Role         = policy.Role
	Column       = policy.Column
	Table        = policy.Table
	Contribution = policy.Contribution
	Policy       = policy.Policy
	GradeRule    = policy.GradeRule
	GradeRules   = policy.GradeRules
	OrgKind      = policy.OrgKind
)

// The grades, column roles and organisation kinds, as in policy.
const (
	Core            = policy.Core
	Important       = policy.Important
	General         = policy.General
	Unit            = policy.Unit
	Identifier      = policy.Identifier
	QuasiIdentifier = policy.QuasiIdentifier
	Sensitive       = policy.Sensitive
	SpecialGroup    = policy.SpecialGroup
	Attribute       = policy.Attribute
	Internal        = policy.Internal
	Domestic        = policy.Domestic
	Overseas        = policy.Overseas
)
