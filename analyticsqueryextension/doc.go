// Package analyticsqueryextension implements the analytics_query extension:
// an HTTP server that answers queries over the analytics counters (a
// Plausible Stats API v2 shaped POST /api/v2/query), exactly at any moment:
// every number adds what still waits in Redis to what PostgreSQL holds, read
// through the connections of the pg_flush extension it names, with nothing
// counted twice or missed while a flush runs.
package analyticsqueryextension

//go:generate go tool -modfile=../internal/tools/mdatagen/go.mod mdatagen metadata.yaml
