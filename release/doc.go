// Package release is the gateway's main use case: it turns a researcher's
// question into a protected release, and owns every step of it, for a
// local answer and for a hospital's share of a federated query alike:
//
//	admit     a live grant, the analysis of the SQL against its scope
//	          (once, and kept for the grant), the grade rules, the
//	          cross-border rule, and the ranks if the engine has them
//	plan      contribution bounds and noise (privacy.NewPlan)
//	cache     a repeated question gets the stored answer at no cost
//	quota     the Article 11 check, before any budget is spent
//	prepare   DuckDB binds the plan; errors here spend nothing
//	reserve   the budget, before any data is read (committed at once,
//	          durable with the release's commit, before any answer)
//	run       the bounded SQL (one refusal for whatever stops it)
//	measure   the patients whose rows entered the answer
//	protect   noise and the k rule (privacy.Plan.Release)
//	commit    the answer, its history line, its Article 11 measure and
//	          its audit entry, in one transaction written in a line
//	observe   the abnormal-use detectors
//
// The HTTP API decodes a request, calls Service.Answer or Service.Share and
// writes what it returns; the federation node calls Service.Share. Nothing
// below this package knows about HTTP.
package release
