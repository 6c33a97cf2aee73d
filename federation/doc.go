// Package federation lets several hospitals answer one query together so
// that none of them, nor the coordinator that asks them, sees another's
// data or totals.
//
// Each hospital runs a node: its own gateway (data, grants, budgets,
// Article 11 quota, audit log) plus a federation endpoint that only the
// coordinator may call, over mutual TLS against a federation authority.
// The coordinator authenticates researchers, analyses their SQL once with
// the same analyser as a single gateway, asks every node for its share,
// and combines the shares:
//
//   - plaintext: each node sends its per-group aggregates with its own full
//     Gaussian noise, a complete differentially private release by itself;
//     the coordinator adds them up;
//   - homomorphic (the default): the nodes hold shares of a collective CKKS
//     key (federation/he); each encrypts its aggregates, carrying 1/n of the
//     noise variance, under the collective key and signs the ciphertexts;
//     the coordinator adds ciphertexts it cannot open; every node checks
//     that what it is asked to re-encrypt is the sum of every member's
//     signed share, its own included, and answers a key-switch share
//     towards a key pair that lives only in the coordinator's query
//     session; only the pooled, fully noised total is ever decrypted.
//
// See privacy.FederatedPlan for the noise and the group domain, and
// Coordinator.Query for what happens when a node refuses or fails.
package federation
