package pgflushextension

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// rollupContents reads each rollup table and what it should hold, computed
// from analytics_user_daily, as "table|key" -> value.
func rollupContents(ctx context.Context, t testing.TB, db *pgxpool.Pool) (got, want map[string]int64) {
	t.Helper()
	read := func(dst map[string]int64, sql string) {
		rows, err := db.Query(ctx, sql)
		require.NoError(t, err)
		var (
			k string
			n int64
		)
		_, err = pgx.ForEachRow(rows, []any{&k, &n}, func() error {
			dst[k] = n
			return nil
		})
		require.NoError(t, err)
	}
	got, want = map[string]int64{}, map[string]int64{}
	read(got, `SELECT 'seen|' || user_id || '|' || date, 1 FROM analytics_user_seen_daily`)
	read(got, `SELECT 'visitors|' || date, visitors FROM analytics_visitors_daily`)
	read(got, `SELECT 'type_visitors|' || event_type || '|' || date, visitors FROM analytics_type_visitors_daily`)
	read(want, `SELECT DISTINCT 'seen|' || user_id || '|' || date, 1 FROM analytics_user_daily`)
	read(want, `SELECT 'visitors|' || date, count(DISTINCT user_id) FROM analytics_user_daily GROUP BY date`)
	read(want, `SELECT 'type_visitors|' || event_type || '|' || date, count(*) FROM analytics_user_daily GROUP BY event_type, date`)
	return got, want
}

// requireRollupsExact checks that the visitors rollups hold exactly what
// analytics_user_daily says.
func requireRollupsExact(ctx context.Context, t testing.TB, db *pgxpool.Pool) {
	t.Helper()
	got, want := rollupContents(ctx, t, db)
	require.Equal(t, want, got, "visitors rollups")
}

// TestRollupFollowsInsertsNotUpdates: flushes with overlapping users add a
// visitor only for a (user, day) new to PostgreSQL, and a type visitor only
// for a (user, type, day) new to it; updates of existing rows add nothing.
func TestRollupFollowsInsertsNotUpdates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	d1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	d2 := d1.AddDate(0, 0, 1)

	flush := func(incs ...increment) {
		t.Helper()
		require.NoError(t, env.write(ctx, incs...))
		_, err := f.flush(ctx)
		require.NoError(t, err)
	}
	flush(
		increment{userDaily("alice", "click", d1), 1},
		increment{userDaily("alice", "view", d1), 2},
		increment{userDaily("bob", "view", d1), 1},
	)
	flush(
		increment{userDaily("alice", "click", d1), 5}, // update
		increment{userDaily("alice", "buy", d1), 1},   // new type, known user
		increment{userDaily("carol", "view", d1), 1},  // new user
		increment{userDaily("alice", "click", d2), 1}, // known user, new day
		increment{userDaily("bob", "view", d1), 3},    // update
		increment{userDaily("dave|x", "view", d2), 1}, // awkward id
	)
	got, _ := rollupContents(ctx, t, env.db)
	assert.Equal(t, map[string]int64{
		"seen|alice|2026-03-01": 1, "seen|bob|2026-03-01": 1, "seen|carol|2026-03-01": 1,
		"seen|alice|2026-03-02": 1, "seen|dave|x|2026-03-02": 1,
		"visitors|2026-03-01": 3, "visitors|2026-03-02": 2,
		"type_visitors|click|2026-03-01": 1, "type_visitors|view|2026-03-01": 3, "type_visitors|buy|2026-03-01": 1,
		"type_visitors|click|2026-03-02": 1, "type_visitors|view|2026-03-02": 1,
	}, got)
	requireRollupsExact(ctx, t, env.db)
}

// TestRollupConcurrentUpserts: transactions upserting overlapping users,
// types and days at once (as concurrent flushers do, rows sorted by key)
// neither deadlock nor miscount the rollups.
func TestRollupConcurrentUpserts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	require.NoError(t, createSchema(ctx, env.db))

	const (
		workers, txPerWorker = 4, 40
		users, days          = 30, 3
	)
	types := []string{"click", "search", "view"}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7)) //nolint:gosec // test data
			for range txPerWorker {
				keys := map[userDayKey]int64{}
				for range 1 + rng.IntN(40) {
					keys[userDayKey{
						userID:    fmt.Sprintf("u%02d", rng.IntN(users)),
						eventType: types[rng.IntN(len(types))],
						day:       int32(20_500 + rng.IntN(days)), //nolint:gosec // small
					}]++
				}
				r := sortedUserRows(keys)
				err := pgx.BeginFunc(ctx, env.db, func(tx pgx.Tx) error {
					_, err := upsertUserDaily(ctx, tx, r)
					return err
				})
				if err != nil {
					t.Errorf("upsert: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	requireRollupsExact(ctx, t, env.db)
}

// sortedUserRows returns the user_daily rows of keys sorted by primary key,
// as parsedBatch.rows does.
func sortedUserRows(keys map[userDayKey]int64) *familyRows {
	ks := make([]userDayKey, 0, len(keys))
	for k := range keys {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b userDayKey) int {
		return cmp.Or(cmp.Compare(a.userID, b.userID), cmp.Compare(a.eventType, b.eventType), cmp.Compare(a.day, b.day))
	})
	r := &familyRows{family: protocol.UserDaily}
	for _, k := range ks {
		r.userIDs = append(r.userIDs, k.userID)
		r.eventTypes = append(r.eventTypes, k.eventType)
		r.days = append(r.days, k.day)
		r.counts = append(r.counts, keys[k])
	}
	return r
}

// TestRollupBackfill: on a database whose analytics_user_daily an earlier
// version filled (no rollup tables), createSchema fills the rollups once;
// later runs leave them alone, and flushes keep them.
func TestRollupBackfill(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	require.NoError(t, createSchema(ctx, env.db))
	_, err := env.db.Exec(ctx, `DROP TABLE analytics_user_seen_daily, analytics_visitors_daily, analytics_type_visitors_daily`)
	require.NoError(t, err)
	_, err = env.db.Exec(ctx, `INSERT INTO analytics_user_daily (user_id, event_type, date, count, updated_at)
SELECT 'u' || (s % 7), (ARRAY['a', 'b', 'c'])[1 + s % 3], DATE '2026-01-01' + s % 4, 1, now() FROM generate_series(0, 83) AS s`)
	require.NoError(t, err)

	require.NoError(t, createSchema(ctx, env.db))
	requireRollupsExact(ctx, t, env.db)
	var visitors int64
	require.NoError(t, env.db.QueryRow(ctx, `SELECT sum(visitors) FROM analytics_visitors_daily`).Scan(&visitors))
	assert.Equal(t, int64(28), visitors, "7 users on each of 4 days")

	require.NoError(t, createSchema(ctx, env.db), "a second run")
	requireRollupsExact(ctx, t, env.db)

	f := env.start(env.config())
	require.NoError(t, env.write(ctx,
		increment{userDaily("u0", "a", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), 1},
		increment{userDaily("new", "a", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), 1},
	))
	_, err = f.flush(ctx)
	require.NoError(t, err)
	requireRollupsExact(ctx, t, env.db)
}
