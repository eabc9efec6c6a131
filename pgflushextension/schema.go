package pgflushextension

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// schemaLockKey is the pg_advisory_xact_lock key that serializes schema
// creation, so collectors starting together do not race on CREATE TABLE IF
// NOT EXISTS (which can fail with a unique violation on pg_type when two
// sessions create the same table at once). Arbitrary constant: "pgflush" in ASCII.
const schemaLockKey int64 = 0x7067666c757368

// schemaDDL creates the tables and indexes; every statement is idempotent.
var schemaDDL = []string{
	`CREATE TABLE IF NOT EXISTS analytics_daily (
	event_type text        NOT NULL,
	date       date        NOT NULL,
	count      bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, date)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_hourly (
	event_type text        NOT NULL,
	hour       timestamptz NOT NULL,
	count      bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, hour)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_user_daily (
	user_id    text        NOT NULL,
	event_type text        NOT NULL,
	date       date        NOT NULL,
	count      bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, event_type, date)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_flush_ledger (
	flush_id   text        PRIMARY KEY,
	applied_at timestamptz NOT NULL,
	counters   integer     NOT NULL
)`,
	`CREATE INDEX IF NOT EXISTS analytics_flush_ledger_applied_at_idx ON analytics_flush_ledger (applied_at)`,
	`CREATE TABLE IF NOT EXISTS analytics_property_daily (
	event_type text        NOT NULL,
	property   text        NOT NULL,
	value      text        NOT NULL,
	date       date        NOT NULL,
	count      bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, property, value, date)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_property_hourly (
	event_type text        NOT NULL,
	property   text        NOT NULL,
	value      text        NOT NULL,
	hour       timestamptz NOT NULL,
	count      bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, property, value, hour)
)`,
	// Breakdowns by one property over a time range, for all event types
	// (the query API's event:props:<key>): the primary keys lead with
	// event_type. Without count, so upserts can stay HOT updates.
	`CREATE INDEX IF NOT EXISTS analytics_property_daily_property_date_idx ON analytics_property_daily (property, date)`,
	`CREATE INDEX IF NOT EXISTS analytics_property_hourly_property_hour_idx ON analytics_property_hourly (property, hour)`,
	`CREATE TABLE IF NOT EXISTS analytics_sum_daily (
	event_type text        NOT NULL,
	attribute  text        NOT NULL,
	date       date        NOT NULL,
	sum        bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, attribute, date)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_sum_hourly (
	event_type text        NOT NULL,
	attribute  text        NOT NULL,
	hour       timestamptz NOT NULL,
	sum        bigint      NOT NULL,
	updated_at timestamptz NOT NULL,
	PRIMARY KEY (event_type, attribute, hour)
)`,
	// The read side (dashboards, the query API) asks by time range first.
	// The primary keys lead with event_type (and user_id), which serves one
	// type's series but not "every type over these days". None of these
	// indexes holds count, so a flush's upsert of an existing row (count and
	// updated_at change) can stay a HOT update.
	//
	// Daily series of all types over a date range: one row per type and day,
	// so the index is small and gains an entry once per type and day.
	`CREATE INDEX IF NOT EXISTS analytics_daily_date_idx ON analytics_daily (date)`,
	// Hourly series of all types over a time range (24 times the rows of
	// analytics_daily, so a sequential scan soon costs).
	`CREATE INDEX IF NOT EXISTS analytics_hourly_hour_idx ON analytics_hourly (hour)`,
	// Visitors (count(DISTINCT user_id) per date over a range, optionally
	// for some event types), active users and top users over a range: the
	// range is one contiguous slice of this index, with the users of a day
	// in order and the event type at hand, so visitors are an index-only
	// scan (no heap fetch, no sort of the range by date). It is the primary
	// key's columns in another order, so entries are no wider than the key's.
	`CREATE INDEX IF NOT EXISTS analytics_user_daily_date_user_idx ON analytics_user_daily (date, user_id, event_type)`,
}

// createSchema creates the tables under a transaction-scoped advisory lock.
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLockKey); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		for _, stmt := range schemaDDL {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("create schema: %w", err)
			}
		}
		return createRollups(ctx, tx)
	})
}
