// Package keyschema is the Redis key layout shared by the redis_analytics
// exporter (which writes counters) and the pg_flush extension (which moves them
// into PostgreSQL). The two components never import each other: this package is
// the whole contract between them.
//
// Layout, for the default prefix "analytics":
//
//	analytics:counter:{type}:{YYYY-MM-DD}          daily count per event type (string, INCRBY, TTL)
//	analytics:counter:{type}:{YYYY-MM-DD:HH}       hourly count per event type (string, INCRBY, TTL)
//	analytics:user:{user}:{type}:{YYYY-MM-DD}      daily count per user and event type (string, INCRBY, TTL)
//	analytics:pending                              sorted set of counter keys awaiting a flush,
//	                                               scored by the Unix milliseconds they first became pending
//	analytics:staging                              sorted set of staging ids, scored by creation time (ms)
//	analytics:staging:{id}                         hash counter key -> count, moved out of the counters by one
//	                                               flush and kept until PostgreSQL has committed it
//	analytics:staging-claim:{id}                   marker (with TTL) that flush id {id} was used by a STAGE
//	analytics:batch:{id}                           marker of an applied exporter batch (retry idempotency)
//	analytics:res:{fingerprint}                    marker (with TTL) of a counted resource entry (resend deduplication)
//	analytics:quarantine                           hash of counts the flusher could not parse (never dropped silently)
//
// Event types and user ids are escaped (see [Escape]) so that a value holding
// the separator, a brace or a control byte can neither collide with another
// key nor change the key's shape, and comes back unchanged from [Schema.Parse].
package protocol
