// Package ingest brings a steward's files into the gateway: it reads a
// dataset's manifest (its Article 6 description and column policy),
// checks each Parquet, CSV or Arrow file against the policy and against
// the facts the noise relies on (one row per patient, declared numbers of
// distinct values, public category lists), encrypts it into the data
// directory, loads it into the engine and records the dataset in the
// catalog. It also suggests a starting manifest from files, and keeps
// uploads and server-side imports inside the directories allowed.
package ingest
