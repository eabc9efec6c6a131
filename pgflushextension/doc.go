// Package pgflushextension implements the pg_flush extension: it periodically
// moves the analytics counters that the redis_analytics exporter keeps in Redis
// into PostgreSQL, exactly once.
//
// Each flush stages a batch of pending counters atomically (GETDEL of each
// counter and ZREM from the pending set in one Lua script) into a Redis hash
// without TTL, upserts the batch in one PostgreSQL transaction guarded by a
// ledger row keyed by the batch id, and then deletes the hash. A crash or an
// outage at any step leaves either the counters or the staging hash in Redis,
// and the ledger turns a repeated apply into a no-op, so a count is never lost
// nor counted twice. See README.md for the protocol and its guarantees.
//
// The key layout is the contract with the exporter and lives in
// internal/protocol.
package pgflushextension

//go:generate go tool -modfile=../internal/tools/mdatagen/go.mod mdatagen metadata.yaml
