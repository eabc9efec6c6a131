package pgflushextension

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The visitors rollups: distinct users per day, kept by the flush in the
// same transaction as the analytics_user_daily upsert (so exactly once, with
// the ledger), for the read side's daily visitors series, which would
// otherwise count the distinct users of every (user, type, date) row of the
// range.
//
//   - analytics_type_visitors_daily: per event type and day, the number of
//     analytics_user_daily rows, which are one per user. A row the upsert
//     inserts adds one.
//   - analytics_user_seen_daily: the (user, date) pairs of
//     analytics_user_daily, whatever the type. Its primary key decides,
//     against concurrent flushers too, whether a row the upsert inserts is
//     the user's first of that day.
//   - analytics_visitors_daily: per day, the rows of
//     analytics_user_seen_daily, the day's distinct users of any type. A
//     pair inserted into analytics_user_seen_daily adds one.
//
// Daily counts do not sum to a week's or a month's distinct users: the read
// side takes only daily buckets from them.
var rollupDDL = []string{
	`CREATE TABLE IF NOT EXISTS analytics_user_seen_daily (
	user_id text NOT NULL,
	date    date NOT NULL,
	PRIMARY KEY (user_id, date)
)`,
	`CREATE TABLE IF NOT EXISTS analytics_visitors_daily (
	date     date   PRIMARY KEY,
	visitors bigint NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS analytics_type_visitors_daily (
	event_type text   NOT NULL,
	date       date   NOT NULL,
	visitors   bigint NOT NULL,
	PRIMARY KEY (event_type, date)
)`,
}

// rollupTables are the tables of rollupDDL.
var rollupTables = []string{"analytics_user_seen_daily", "analytics_visitors_daily", "analytics_type_visitors_daily"}

// upsertUserDailySQL upserts the per-user rows and feeds the rollups with
// the rows it inserted: "xmax = 0" holds for a row INSERT ... ON CONFLICT
// inserted and not for one it updated (the update leaves its lock in the
// new row version's xmax). The rollups' rows are written in key order, each
// step after the one it reads from, so concurrent flushers lock rows in one
// order (table by table, then by key) and do not deadlock. It answers the
// number of per-user rows inserted or updated.
const upsertUserDailySQL = `WITH w AS (
	INSERT INTO analytics_user_daily AS t (user_id, event_type, date, count, updated_at)
	SELECT u.user_id, u.event_type, DATE '1970-01-01' + u.day, u.count, now()
	FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[]) AS u(user_id, event_type, day, count)
	ON CONFLICT (user_id, event_type, date) DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = EXCLUDED.updated_at
	RETURNING t.user_id, t.event_type, t.date, t.xmax = 0 AS inserted
), tv AS (
	INSERT INTO analytics_type_visitors_daily AS v (event_type, date, visitors)
	SELECT w.event_type, w.date, count(*) FROM w WHERE w.inserted GROUP BY w.event_type, w.date ORDER BY w.event_type, w.date
	ON CONFLICT (event_type, date) DO UPDATE SET visitors = v.visitors + EXCLUDED.visitors
), seen AS (
	INSERT INTO analytics_user_seen_daily (user_id, date)
	SELECT DISTINCT w.user_id, w.date FROM w WHERE w.inserted ORDER BY w.user_id, w.date
	ON CONFLICT DO NOTHING
	RETURNING date
), vd AS (
	INSERT INTO analytics_visitors_daily AS v (date, visitors)
	SELECT seen.date, count(*) FROM seen GROUP BY seen.date ORDER BY seen.date
	ON CONFLICT (date) DO UPDATE SET visitors = v.visitors + EXCLUDED.visitors
)
SELECT count(*) FROM w`

// upsertUserDaily writes the per-user family and its rollups inside the
// flush transaction; it returns the number of per-user rows inserted or
// updated.
func upsertUserDaily(ctx context.Context, tx pgx.Tx, r *familyRows) (int64, error) {
	var n int64
	if err := tx.QueryRow(ctx, upsertUserDailySQL, r.userIDs, r.eventTypes, r.days, r.counts).Scan(&n); err != nil {
		return 0, fmt.Errorf("upsert %s: %w", r.family, err)
	}
	return n, nil
}

// rollupBackfillSQL fills empty rollups from analytics_user_daily.
var rollupBackfillSQL = []string{
	`INSERT INTO analytics_user_seen_daily (user_id, date)
SELECT DISTINCT user_id, date FROM analytics_user_daily`,
	`INSERT INTO analytics_visitors_daily (date, visitors)
SELECT date, count(*) FROM analytics_user_seen_daily GROUP BY date`,
	`INSERT INTO analytics_type_visitors_daily (event_type, date, visitors)
SELECT event_type, date, count(*) FROM analytics_user_daily GROUP BY event_type, date`,
}

// createRollups creates the rollup tables inside createSchema's transaction
// (under its advisory lock). When one of them is missing, as on a database
// that an earlier version filled, it rebuilds all three from
// analytics_user_daily once, with that table locked against writes (SHARE
// mode) until the schema transaction commits, so that no flush lands
// between the backfill and the first upsert that keeps the rollups.
func createRollups(ctx context.Context, tx pgx.Tx) error {
	var missing bool
	if err := tx.QueryRow(ctx, `SELECT bool_or(to_regclass(t) IS NULL) FROM unnest($1::text[]) AS t`, rollupTables).Scan(&missing); err != nil {
		return fmt.Errorf("create schema: look up rollups: %w", err)
	}
	for _, stmt := range rollupDDL {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	if !missing {
		return nil
	}
	return backfillRollups(ctx, tx)
}

// backfillRollups rebuilds the rollups from analytics_user_daily, which it
// locks against writes until tx ends.
func backfillRollups(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "LOCK TABLE analytics_user_daily IN SHARE MODE"); err != nil {
		return fmt.Errorf("create schema: lock analytics_user_daily for the rollup backfill: %w", err)
	}
	for _, t := range rollupTables {
		if _, err := tx.Exec(ctx, "DELETE FROM "+t); err != nil {
			return fmt.Errorf("create schema: backfill %s: %w", t, err)
		}
	}
	for i, stmt := range rollupBackfillSQL {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create schema: backfill %s: %w", rollupTables[i], err)
		}
	}
	return nil
}
