// Package protocol is the whole contract between the redis_analytics
// exporter, which writes counters into Redis, and the pg_flush extension,
// which moves them into PostgreSQL. The two components never import each
// other: they meet in Redis, through the key layout and the Lua scripts of
// this package, and keep the invariants below.
//
// # Keys
//
// For the default prefix "analytics":
//
//	analytics:counter:{type}:{YYYY-MM-DD}          daily count per event type (string, INCRBY, TTL)
//	analytics:counter:{type}:{YYYY-MM-DD:HH}       hourly count per event type (string, INCRBY, TTL)
//	analytics:user:{user}:{type}:{YYYY-MM-DD}      daily count per user and event type (string, INCRBY, TTL)
//	analytics:prop:{type}:{property}:{value}:{YYYY-MM-DD}[:HH]
//	                                               daily / hourly count per event type and property value
//	analytics:sum:{type}:{attribute}:{YYYY-MM-DD}[:HH]
//	                                               daily / hourly sum of an integer attribute per event type
//	analytics:seen:types:{YYYY-MM-DD}              set of the day's event types (cardinality cap, TTL)
//	analytics:seen:values:{property}:{YYYY-MM-DD}  set of the day's values of one property (cap, TTL)
//	analytics:seen:users:{YYYY-MM-DD}              set of the day's users (cap, TTL)
//	analytics:pending                              sorted set of counter keys awaiting a flush,
//	                                               scored by Redis' clock (Unix ms) when they were created
//	analytics:batch:{id}                           marker of an applied exporter push (TTL: its retry window)
//	analytics:res:{fingerprint}                    marker of a counted resource entry's identified
//	                                               records (TTL: dedup_window)
//	analytics:staging                              sorted set of flush ids, scored by Redis' clock (ms)
//	analytics:staging:{id}                         hash counter key -> count, moved out of the counters by
//	                                               one flush and kept until PostgreSQL has committed it
//	analytics:staging-claim:{id}                   marker (with TTL) that flush id {id} was used by a STAGE
//	analytics:flush-generation                     flush id of the latest STAGE that took counters (TTL: an hour)
//	analytics:quarantine                           hash of counts the flusher could not parse
//
// Event types, user ids, properties and their values are escaped (see [Escape]) so that a value holding
// the separator, a brace or a control byte can neither collide with another
// key nor change the key's shape, and comes back unchanged from [Schema.Parse].
// In a Redis Cluster the prefix holds a hash tag ([ValidatePrefixFor]), so
// every key of one script is in one slot.
//
// # Invariants
//
//  1. Counters are written only by the apply script (apply.lua, [ApplyCall]),
//     atomically: a call increments all its counters or none. A counter key
//     it creates gets its TTL and its pending-set entry in the same step;
//     a key that exists is pending already.
//  2. A counter key leaves Redis only through STAGE (the flusher), which
//     removes it (GETDEL) and its pending-set entry in one step and records
//     the values in a staging hash under a new flush id: an increment racing
//     a flush lands either in that staging hash or in a re-created key with a
//     new pending entry, never in between. A pending entry without its key
//     means the key expired: STAGE counts it, and the apply script reports a
//     key it re-creates while the old entry is still there.
//  3. Each exporter push carries a batch id; its marker makes a retry of an
//     applied push a no-op, alone or in another group of pushes (the call
//     answers which batches were applied before and writes nothing).
//  4. A resource entry's identified records (spans by TraceID and SpanID, log
//     records by a record id attribute) carry a fingerprint; its marker makes
//     a client's resend of them a no-op within the dedup window (the call
//     answers which markers exist and writes nothing). Records without an
//     identity get no marker: they are counted at least once.
//  5. A staging entry is applied to PostgreSQL in one transaction together
//     with its flush id in a ledger table, and only then removed from Redis
//     (FINISH). Applying an id the ledger holds is a no-op, so a crash at any
//     step leaves each count in exactly one place and a recovery never counts
//     it twice. The ledger keeps the id of every entry still in the staging
//     index.
//  6. Scores and ages are Redis' clock (TIME), never a collector's.
//  7. Cardinality caps are decided inside the apply call, against sets that
//     every collector shares: a member joins its day's set while the set has
//     room, and the counters of a member that finds it full go to the
//     OverflowValue key instead, in the same atomic step (never dropped), so
//     totals stay exact and the keys bounded. A call that aborts takes its
//     new members back.
//  8. Counts leave the counter keys only through STAGE, and every STAGE
//     that takes counters sets the flush generation to its own (unique)
//     flush id in the same atomic step. A reader (the analytics_query
//     extension, [ReadStore]) that reads the generation, then the pending
//     counters and the staging entries, then PostgreSQL (one snapshot,
//     which says through the ledger which of the staging entries read are
//     committed already), then the generation again, and finds it
//     unchanged, has seen every count exactly once: in a counter key, in an
//     uncommitted staging entry, or in PostgreSQL. A changed generation
//     means a STAGE ran in between: the reader starts over.
//  9. The first write of every script that may allocate is one Redis refuses
//     at maxmemory, so a full Redis refuses a push before it changes
//     anything, while a flush (which frees memory) still runs.
package protocol
