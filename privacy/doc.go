// Package privacy turns an accepted query into a protected answer, and this
// comment is the gateway's privacy argument.
//
// # The guarantee
//
// Each grant is (epsilon, delta)-differentially private at the user level:
// the unit is the patient (the column of role unit), and two datasets are
// neighbours when one has all the rows of one patient more than the other,
// in every table. What every answered query costs is charged to the grant
// before its data is read (catalog.Store.ReserveFor): its epsilon and
// delta, and its zCDP cost rho, the sum over its noised quantities
// (Plan.Quantities, Plan.Charge: e^2/2 for a Laplace quantity of epsilon
// e, L2^2/(2 sigma^2) for a Gaussian one), with the delta of its noisy k
// rule beside. Queries compose sequentially, and the grant holds both the
// basic composition of their (epsilon, delta) and the zCDP composition of
// their rho, converted back to (epsilon, delta) with a share of the
// grant's delta (package accountant); it is charged the smaller epsilon.
// While the bound is chosen from data, rho is charged at the largest of
// the bounds it may choose. A repeated question returns the stored answer
// at no cost, which is post-processing of the first. Queries refused
// before the reservation read no data and cost nothing; a query stopped
// after it keeps its charge.
//
// # How one answer is made
//
//  1. Plan wraps the sandbox's base query (one row per input row: the
//     patient, the group keys, the aggregated values) in SQL that bounds
//     each patient's contribution (at most MaxRows rows in a group, at most
//     MaxGroups groups, chosen by a salted hash of the patient's own rows
//     and groups; when every key has a public list whose combinations are
//     at most MaxGroups, only rows of listed values are aggregated, which
//     are the only groups ever released, so no patient can reach more and
//     none is chosen), clamps values to their declared bounds, and computes
//     the bounded aggregates inside DuckDB. Rows never reach Go.
//  2. Release adds noise to each output cell with Google's differential
//     privacy library (Laplace by default, Gaussian when delta > 0; secure
//     samplers, never math/rand or SQL random), decides the k rule on a
//     noisy patient count, and reports the noise scale and a 95% interval
//     per column.
//
// Sensitivities are as tight as the policy allows: when every table read has
// one row per patient, a patient adds at most one row to one group, and when
// every group key is a per-patient attribute (sex, province), a patient falls
// in exactly one group however many rows they have. Plan.Sensitivities
// states, per result column, the L0 and Linf the noise is calibrated to,
// and the sensitivity tester (sensitivity_test.go) checks them on
// neighbouring datasets for every query shape the analyser accepts.
//
// Joins. The sandbox accepts a table only if its unit is equated with the
// unit of a table already joined (sandbox.Analyze), for inner and outer
// joins and USING alike, and at most one table with several rows per
// patient, and only between units of the same kind of type (a string unit
// equated with a number would let DuckDB cast several ids onto one
// patient). So every row of the join belongs to exactly one patient (with
// outer joins, the first unit that is not NULL), adding a patient adds
// only their own rows, and the per-patient bounds above hold whatever the
// join tree. The Article 11 measure counts that same patient per row.
//
// Bounding by rank. The engine gives every row of a table with several rows
// per patient a hidden rank among its patient's rows (engine.RankRows), in
// the order of a hash of the row's own values keyed with a secret drawn at
// each load: a patient's ranks depend on their own rows and the key only.
// When a query reads one such table, joins it only on the patient to tables
// of one row per patient (inner joins) and filters none of its rows (see
// sandbox.Query.RowRank), each patient's rows of it reach the aggregation
// all or none, and keeping rows of rank at most m = MaxGroups*MaxRows
// (MaxRows when a patient falls in one group) keeps at most m rows per
// patient in all groups together. The guarantee: for any key, with or
// without one patient, every other patient keeps exactly the same rows, so
// the per-group counts change by at most m in L1 and in L2, sums by m times
// the largest absolute bound, and each level of a quantile's histogram tree
// by m. Noise is calibrated to those (L0 1, Linf m). As this holds for every
// key, it holds for the one drawn.
//
// A query that filters that table (sandbox.Query.Filtered) lets a
// patient's rows through one by one, by a predicate on the row alone, and
// keeps those of rank at most m: the rows the filter lets through among the
// patient's first m. Each patient keeps at most m rows, chosen from their
// own rows by their own ranks and the predicate, so the guarantee above
// holds with the same sensitivities, and DuckDB reads the filter and the
// rank bound in one scan. A patient with at most m rows keeps every row the
// filter lets through; one with more keeps fewer than the filter's share of
// m when their rows of rank above m pass it: those rows are what the bound
// cut, counted by the bias estimates below like any other. The k rule's
// patient count is that of the patients whose rank-1 row the filter lets
// through (each in one group, L0 1: an undercount, which only errs towards
// suppressing). COUNT(DISTINCT patient), Gaussian noise over several groups
// per patient and outer joins keep per-group bounding. For Gaussian noise
// the rank would be sound too (m rows move the groups by m in L2), and
// fast, but per-group bounds move them by only sqrt(MaxGroups)*MaxRows in
// L2, and measured, that is what researchers need: on the demo's 100,000
// patients at epsilon 0.5 and delta 1e-8, 20 releases each, a rank bound
// of floor(sqrt(MaxGroups)*MaxRows), chosen down from the data as usual,
// doubled the median error of counts by department (8.3% against 4.1%)
// and of mean stays (49% against 20%).
//
// Light patients. Per-group bounding aggregates per (patient, group)
// before it clamps, which costs a hash aggregation over every pair. The
// engine stores beside the rank each row's patient's number of rows in the
// table (engine.RowsColumn), a function of that patient's rows alone. A
// patient with at most MaxRows rows has at most MaxRows in any group, and
// with at most MaxGroups rows (or when the listed values make no more than
// MaxGroups groups) at most MaxGroups groups: the bounds cannot cut any of
// their rows, so their partials are their rows as they are, and the plan
// sums them per group directly (Plan.partialAggregate), the others'
// through the partials as before, and adds the two. For any neighbouring
// pair, every other patient is on the same side of that line and adds the
// same rows, and the patient who differs adds at most what the bounds
// allow on either side: the sensitivities are those of per-group bounds,
// and every sum, count and bias quantity is the same number the partials
// alone give (TestLightPatientsSkipThePartials). Only the k rule's patient
// count changes: every patient, light or heavy, is counted in the group
// of their rank-1 row only, as when bounding by rank (L0 1 instead of
// MaxGroups, so that count's noise is MaxGroups times smaller, and an
// undercount that errs towards suppressing). On the demo's 100,000
// patients (Gaussian, 20 releases each) that lost no department where
// counting every patient in every group lost 10% to 16% at epsilon 0.1,
// and 13% of diagnoses where it lost 61%.
//
// # Choosing the bound, and what it cut
//
// The steward's max_rows and max_groups are the largest bound a query may
// use, not the bound it uses. When the researcher sets none
// (contribution_bound) and the query reads a table with several rows per
// patient, Plan.Choose spends BoundShare of the query's noise epsilon on a
// Laplace histogram of patients by their row count in that table, in
// geometric bins up to the maximum and one bin beyond it: each patient is
// in exactly one bin, so the histogram has L1 sensitivity 1. The engine's
// exact counts (engine.RankCounts) go no further than Choose; the bound it
// picks (the one minimising the histogram's estimate of rows cut per cell
// plus twice the noise it brings, twelve times a count's for a quantile,
// whose rank sums up to 16 nodes a level at a third of the epsilon each,
// in the spirit of Amin et al. 2019) and
// the noisy count of patients beyond the maximum are post-processing of the
// histogram, and are reported in privacy.contribution, as is cut_max: the
// bias estimates below count rows up to the top of the bin after the
// highest whose noisy count passes one noise scale (their noise grows with
// that range), and the patients beyond it are reported, not estimated.
//
// Below the maximum, and wherever clamping to min and max may cut values
// of a column's declared domain (domain_min, domain_max), each cell also
// gets bias estimates: the rows between the bound and the maximum (__dc),
// and the value those rows add over the domain plus what clamping took
// from the kept rows (__ds). A quantile over rank-bounded rows gets the
// count of rows cut: it shows no bias (a count of rows corrects no value),
// but each end of the interval allows the rank shift those rows can cause
// (quantile.go). One patient changes them by at most what
// biasSens states (per group, L0 as the value's), which the sensitivity
// tester checks too; each is one more Laplace quantity at a BiasShare of
// epsilon split among them, and the value, the k rule, the bias estimates
// and the histogram together spend the query's epsilon. The released bias
// and the per-cell interval are post-processing: the interval is the hull
// of the value's 97.5% interval and the bias estimate's 97.5% interval, so
// it holds the exact answer with probability at least 95% (union bound)
// whenever no patient has more rows than cut_max (more groups than
// max_groups, in the per-(patient, group) shape) and the data is within its
// domain (checked at registration). What is beyond that is not estimated,
// since its sensitivity is unbounded: the rows of patients beyond the
// maximum (patients_over_max says how many there are), groups beyond
// max_groups, AVG in the per-(patient, group) shape and COUNT(DISTINCT
// patient) cut by max_groups, and clamping of columns that declare no
// domain. Means and quantiles are then still bounded by the domain. A cell
// whose interval is wider than its value is flagged wide_interval. Over a
// column with a long tail (a domain much wider than the clamp) the bias
// estimate is honest but noisy: it widens the interval rather than
// correcting the value.
//
// Grouping on codes. A GROUP BY on a bare column with a public list is run
// on the column's hidden code (its value's position in the list, built at
// load with the ranks, engine.RankTables) when the list the codes were
// built from is the policy's current one, and the code is turned back into
// the category on the result (decodeGroups); DuckDB groups on the small
// integer several times faster than on the string. Every listed category
// is the same group with the same rows; the rows whose value is NULL or not
// in the list form one NULL group instead of several, which no answer
// releases either way (releasableKeys), and whose rows count in the
// Article 11 measure alike. Registration refuses values outside a list, so
// unlisted values exist only where a list was narrowed after the load; a
// plan that picks among a patient's groups (at most max_groups, by salted
// hash) then sees fewer of that patient's groups, which changes which rows
// are picked, not the bound or the noise. The code column's name carries a
// digest of the list it was built from (policy.CodeColumn), so a plan never
// reads positions in another list: a table rebuilt meanwhile from another
// list has no such column, and the query fails like any plan over a table
// reloaded under it. Whether a query runs on codes depends on the policy
// and on whether the load's rewrite has finished, never on the rows.
// Integer columns with whole bounds are clamped and summed in their own
// type (values.clamp), which gives the same sums without a cast per row.
//
// # The k rule, on noisy counts
//
// A group is released only if its exact patient count is at least k AND a
// noisy patient count clears T + k - 1, where T is the Laplace threshold of
// partition selection for the delta charged (PartitionDelta, 1e-8 by
// default, or a share of the query's delta). This applies to every group:
// non-public keys (partition selection), public category lists (every
// category is a candidate, present or not), and the single group of a query
// without GROUP BY. Argument: if both neighbours have at least k patients
// in the group, the decision is an epsilon-DP comparison of a noisy count;
// if one has k-1 (so it always suppresses) the other has k, and releases
// only when k + Z >= T + k - 1, that is Z >= T - 1, which has probability
// at most delta by the choice of T. No group under k is ever released. The
// noisy count is the released COUNT(DISTINCT patient), or COUNT(*) over one
// row per patient, when the query has one under Laplace noise (the decision
// is then post-processing of the released value); otherwise it is a
// quantity of its own and takes its share of epsilon. Bounded by rank, both
// tests read the count of the patients whose rank-1 row is in the group:
// at most the group's distinct patients, so no group of fewer than k
// patients is released, and one patient moves it by one in one group only,
// so the argument above holds with the whole delta. (Testing the distinct
// patients exactly instead would let one patient move the exact test in
// every group their rows reach; and the noisy test on the rank-1 count
// already requires it to clear T + k - 1, so the exact distinct count would
// rarely release more.)
// The same holds with partition selection, where the candidates are the
// groups present: a group that one patient brings into being has fewer
// than k patients and is never released. A federated answer decides the
// k rule on the pooled noisy patient count alone (no hospital sees another's
// exact count): that is post-processing of DP values, so it stays DP, but a
// group of fewer than k patients can appear there with the probability that
// the noise lifts its count to k.
//
// # Everything a request can observe
//
// Each observable of a researcher's request, and why it is a DP release or
// independent of the data:
//
//   - Rows and which groups appear: the noisy aggregates are the
//     mechanism's output; a group appears by the noisy k rule above; for
//     public keys only listed values form groups (others map to NULL and
//     are dropped), and keys that are not finite numbers are dropped, both
//     decided by the key alone. Rows are sorted by the researcher's ORDER BY
//     or by group key, never by data order. "rows" is [] when nothing is
//     released.
//   - Intervals, noise scales, bias estimates and flags (privacy.columns,
//     privacy.contribution, and the per-cell intervals, bias and flags of
//     Answer): functions of epsilon, delta and the declared bounds,
//     simulations around released noisy values, or, for quantiles, a test
//     of ranks inverted over the noisy tree's nodes (quantile.go: the nodes
//     it reads are noised like every node of the tree, whose release the
//     epsilon of each level already pays for), clamped to the domain
//     (post-processing). The chosen bound is a function of the noisy
//     histogram above.
//   - A dry run: the cost and the expected noise of the plan, from the SQL,
//     the grant and the policy; it reads no data.
//   - The same answer as CSV, Arrow IPC or Arrow Flight SQL, its headers and
//     schema metadata, and a past answer read again by its recipient: the
//     released answer, encoded otherwise.
//   - suppressed_groups: without partition selection the candidates are
//     the public domain or the one group, so it is the count of DP
//     decisions not to release; with partition selection it is always 0,
//     since the number of candidates is itself private. The other fields
//     (mechanism, k, bounds, partition_selection, special_groups) depend on
//     the SQL and the policy only.
//   - Refusals before the data is read (status, code and text): the
//     sandbox and NewPlan decide from the SQL, the grant and the policy;
//     engine.Prepare binds against the schemas, not the rows. The group cap
//     is decided from public lists, booleans and declared max_distinct
//     (checked at registration, as is one_row_per_unit), never by cutting a
//     result.
//   - Errors while running: every researcher expression runs under DuckDB's
//     TRY, and aggregated values are read with TRY_CAST, so no value can
//     make a query fail (an INTEGER or BIGINT column with whole bounds is
//     clamped in its own type instead, within maxExact, where no value can
//     overflow). The one exception is a WHERE conjunct that cannot
//     fail on any row (a comparison, BETWEEN, IN list or IS NULL of a
//     column with constants of its own kind, and AND, OR, NOT of those;
//     sandbox.cannotFail, from the column types read from the loaded
//     table): it is left bare so that DuckDB can push it into the scan or
//     below a join; every other conjunct keeps its own TRY. What still stops a query (time, memory) gives one
//     code (resource_limit) and one text whatever the cause, and keeps the
//     charge: the refusal says only that the query was stopped, which the
//     researcher's own SQL largely determines.
//   - A stop by the process memory guard (engine, guard.go) is one of
//     those: same code, same text. Whether it fires depends on the whole
//     process's memory, which holds other researchers' running queries, so
//     on their SQL and, through the sizes of what they read, on data. It
//     is acceptable because it comes after the reservation (the stopped
//     query is charged, so a stop cannot be retried for free to probe),
//     it tells one bit per charged query (stopped or not), as the time
//     limit under load does, and one patient moves that memory by the
//     bytes of their own bounded rows (strings of at most 256 characters,
//     no string-growing function over another, groups capped before any
//     data is read) against a limit of gigabytes, so the bit is decided by
//     the load and the queries' shapes, not by a patient.
//   - Budget figures: sums of the researcher's own charges, and the history
//     lines of their own queries (a charge that released nothing reads
//     charged_not_released, or the refusal's code).
//   - Refusals for the caller's own load (too_many_queries, rate_limited,
//     a full Flight SQL ticket table) and for the gateway's health
//     (unavailable): independent of the data. A time limit that runs out
//     before the reservation (query_timeout, nothing spent) depends on the
//     load: the turn at an Article 11 measure, a ranking under way (whose
//     time is that of the registered table's size), binding; no step
//     before the reservation reads rows.
//   - Quota refusals: whether a release to another legal entity would
//     reach the Article 11 line depends on which patients earlier releases
//     touched; the rule is the regulation's own and is exact by law. The
//     refusal states only the line and that a risk assessment is needed,
//     never the share or a patient count, and measured releases of a
//     dataset take turns, so each is decided against the state the previous
//     one left.
//   - The cached flag: whether the same researcher asked the same question
//     at the same cost before, which they know.
//   - Latency: expressions are bounded per row (sandbox: at most 1000
//     nodes, string constants of 256 characters, no string-growing function
//     over another), so one patient's row cannot be made costly, and the
//     release draws a noisy count for every candidate group whatever the
//     exact k test says. A quantile draws the nodes of its tree that its
//     descent and its interval pick from nodes already noised, so how
//     many it draws is post-processing too. Under per-group bounds,
//     whether a patient's rows go through the partials or are summed
//     directly depends on their own row count alone, and either way each
//     row costs a bounded amount, so one patient moves the time by their
//     rows' share either way. The residual, measured by TestTimingOfOnePatient
//     and quoted in the README, is a fraction of a millisecond. DuckDB's
//     statistics (zone maps) can still skip row groups whose range excludes
//     a constant; that reveals the range of a block of rows, not a chosen
//     patient, and is named in the README as a known residual. The
//     admission's memories (the decoded texts of a dataset's description
//     and policy, the analyses keyed by the SQL and the caller's grants,
//     the authenticated token, the caller's grants and the rows of their
//     datasets) make a repeat faster; which of them hit depends on the
//     catalog's changes and on the caller's own earlier requests (and,
//     for the decoded texts alone, on whether anyone read a dataset since
//     its description or policy changed), never on a patient's rows. Whether the reservation reads its grant
//     again (the grant moved after the admission read it) depends on the
//     spends on that grant, which are metadata too.
//
// What is not argued here is excluded: sampling clauses, time travel,
// subqueries, window functions, set operations, functions outside an
// allow-list, and joins of two tables with several rows per patient are
// refused by the sandbox.
//
// Exact answers (Mechanism None) are outside the guarantee: they are only
// for general-grade data whose exact_answers a steward proposed and an
// approver verified, with the exact k rule.
package privacy
