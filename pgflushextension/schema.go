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
		return nil
	})
}
