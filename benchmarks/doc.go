// Package benchmarks measures the gateway against raw DuckDB on the same data
// in the same run. Each benchmark loads the synthetic demo hospital at a
// given size into one DuckDB, then times, for the same researcher SQL, the
// gateway end to end (HTTP, authentication, analysis, budget reservation in
// SQLite with synchronous=FULL, bounded aggregation, noise, answer storage,
// audit and quota) and raw DuckDB running the original SQL. It reports both
// and their ratio.
//
//	go test ./benchmarks -bench . -benchtime 20x -timeout 60m
//
// Sizes: 1M encounters (250k patients) by default; set GATEWAY_BENCH_10M=1
// to add 10M encounters (2.5M patients).
//
// BenchmarkFederated and BenchmarkFederatedKeyGen measure federated queries
// over 3 and 8 hospitals on loopback: homomorphic against plaintext
// aggregation in the same run, time and bytes per query, and the cost of a
// collective key round.
//
// A timed answer that released no group fails its benchmark: a plan that
// suppressed every group would time less work than an answer. The
// README's "Performance" section holds the current figures, and
// HISTORY.md the measured record of the changes that led to them.
package benchmarks
