// Package catalog keeps, in the metadata database, what the hospital holds
// and who may use it: datasets with their grade (Art. 5), Article 6
// description, column policy and grade history; organisations, people,
// their roles, enrolments and tokens; access requests and the grants they
// become, with their budgets, answer cache and query history; and the
// proposals that lower a dataset's protection, which a second person
// verifies. The words of the policy are package policy's; reading files
// into the engine is package ingest's.
package catalog
