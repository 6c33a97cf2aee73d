// Package flight serves the gateway over Arrow Flight SQL, so that the
// tools researchers already use (ADBC from Python, R and DuckDB, the Flight
// SQL JDBC driver in DBeaver and BI tools) can ask their questions without
// a client of our own. It is an adapter beside api and federation: it
// authenticates a call, hands questions to release.Service.Answer exactly
// as the REST API does, and encodes the protected answer as Arrow.
//
// Authentication is the REST API's: every call carries the gRPC metadata
// "authorization: Bearer TOKEN", checked with catalog.Store.AuthenticateToken,
// so tokens, people, roles, deactivation and revocation are the same.
// Queries need the researcher role.
//
// # One release per question
//
// A Flight SQL client asks in two calls: GetFlightInfo (with a
// CommandStatementQuery, or a prepared statement's handle) and then DoGet
// with a ticket from the answer. The release runs once, in GetFlightInfo:
// the answer's schema (and its privacy report) is then known to the client
// before it fetches, as Flight SQL clients expect, and budget is spent
// exactly once. The protected answer waits on the server under a random
// handle, which is all the ticket holds; the handles are kept in a bounded
// in-memory map with an expiry (Config.TicketTTL), and a ticket is
// redeemed once and only by the person who asked. A ticket that expired or
// was lost costs nothing to replace: asking the same question again is
// answered from the answer store at no cost, as over REST.
//
// A question that no client fetches has still been released and paid for;
// that is the same as a REST answer that is never read.
//
// # Names
//
// Each dataset of the caller's live grants is a Flight SQL catalog, with
// one schema, "main", holding its tables: the names that tools generate
// (demo_hospital.main.patients) and the shorter ones researchers write
// (demo_hospital.patients, patients) are all accepted by the sandbox.
// Catalog calls (GetCatalogs, GetDbSchemas, GetTables, GetTableTypes,
// GetSqlInfo) are answered from the grants and the datasets' column
// policies alone, never from data: identifier columns, which no query may
// name, are not listed, and neither are columns outside a grant's column
// scope.
//
// # Epsilon
//
// Flight SQL has no place for a privacy budget in its commands, so a query
// spends its grant's default epsilon unless the call carries the metadata
// "gateway-epsilon" (a number); "gateway-grant-id" names one grant, as
// "grant_id" does over REST. ADBC sends such headers with the option
// adbc.flight.sql.rpc.call_header.gateway-epsilon.
//
// # Errors
//
// Refusals are gRPC statuses whose message starts with the stable code of
// CONTRACT.md, as "query_rejected: column name is an identifier ...". The
// kind-to-gRPC-code table is codeOf.
package flight
