package pgflushextension

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap/zapcore"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadatatest"
)

var (
	day1 = time.Date(2025, 6, 1, 9, 30, 0, 0, time.UTC)
	day2 = time.Date(2025, 6, 2, 23, 59, 0, 0, time.UTC)
)

// awkwardIncrements covers the three families with values that need escaping.
func awkwardIncrements() []increment {
	return []increment{
		{daily("page_view", day1), 5},
		{daily("page_view", day2), 11},
		{daily("type:with%colon", day1), 3},
		{daily("{slot}", day1), 2},
		{hourly("page_view", day1), 4},
		{hourly("page_view", day2), 6},
		{hourly("type:with%colon", day2), 1},
		{userDaily("user-1", "page_view", day1), 7},
		{userDaily("ユーザー🙂", "page_view", day1), 8},
		{userDaily("team:42{x}", "sign up", day2), 9},
		{userDaily("ユーザー🙂", "{slot}", day2), 10},
	}
}

func TestFlushAllFamilies(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	incs := awkwardIncrements()
	want := totals{}
	// Two exporter batches touching the same keys: INCRBY sums them in Redis.
	require.NoError(t, env.write(ctx, incs...))
	require.NoError(t, env.write(ctx, incs[0], incs[4], incs[8]))
	want.add(incs...)
	want.add(incs[0], incs[4], incs[8])

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(incs), st.counters)
	assert.Equal(t, 1, st.batches)
	assert.Equal(t, int64(len(incs)), st.pending, "pending sampled at tick start")
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
	assert.Equal(t, 1, env.ledgerRows(ctx))

	assert.Equal(t, int64(len(incs)), metricSum(t, f.tel, "otelcol_pg_flush_counters_flushed"))
	assert.Equal(t, int64(4), metricSum(t, f.tel, "otelcol_pg_flush_rows_upserted", "family", "daily"))
	assert.Equal(t, int64(3), metricSum(t, f.tel, "otelcol_pg_flush_rows_upserted", "family", "hourly"))
	assert.Equal(t, int64(4), metricSum(t, f.tel, "otelcol_pg_flush_rows_upserted", "family", "user_daily"))
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_flushes", "outcome", "success"))

	// Later increments of the same rows add up; an empty flush is a no-op.
	require.NoError(t, env.write(ctx, incs[1], incs[9]))
	want.add(incs[1], incs[9])
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, st.counters)
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.counters)
	assert.Zero(t, st.batches)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
}

func TestFlushManyBatches(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.BatchSize = 7
	f := env.start(cfg)

	want := totals{}
	var incs []increment
	for i := range 50 {
		incs = append(incs, increment{userDaily(fmt.Sprintf("u%02d", i), "click", day1), int64(i + 1)})
	}
	require.NoError(t, env.write(ctx, incs...))
	want.add(incs...)

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 8, st.batches, "ceil(50/7) batches")
	assert.Equal(t, 50, st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	assert.Equal(t, 8, env.ledgerRows(ctx))
	env.requireRedisEmpty(ctx)
}

// writer runs exporter-style batches on a small key space until stop is
// closed or it has written maxBatches, and returns what it sent: of the
// daily, hourly and per-user families, or with allFamilies of every family
// through the exporter's apply call.
func writer(ctx context.Context, t *testing.T, env *testEnv, seed uint64, maxBatches int, stop <-chan struct{}, allFamilies bool) totals {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	types := []string{"view", "click", "buy:now", "{x}"}
	users := []string{"alice", "bob", "ユーザー"}
	write, kinds := env.write, 3
	if allFamilies {
		write, kinds = applyWrite(env.rdb, env.schema), 7
	}
	sent := totals{}
	for range maxBatches {
		select {
		case <-stop:
			return sent
		default:
		}
		n := 1 + rng.IntN(6)
		incs := make([]increment, 0, n)
		for range n {
			typ := types[rng.IntN(len(types))]
			at := day1.Add(time.Duration(rng.IntN(3)) * time.Hour)
			var c protocol.Counter
			switch rng.IntN(kinds) {
			case 0:
				c = daily(typ, at)
			case 1:
				c = hourly(typ, at)
			case 2:
				c = userDaily(users[rng.IntN(len(users))], typ, at)
			case 3:
				c = propDaily(typ, "plan", users[rng.IntN(len(users))], at)
			case 4:
				c = propHourly(typ, "plan:x", users[rng.IntN(len(users))], at)
			case 5:
				c = sumDaily(typ, "tokens", at)
			default:
				c = sumHourly(typ, "cost{€}", at)
			}
			incs = append(incs, increment{c, randomAmount(rng, c, 100)})
		}
		if err := write(ctx, incs...); err != nil {
			t.Errorf("write: %v", err)
			return sent
		}
		sent.add(incs...)
	}
	return sent
}

func TestFlushConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.BatchSize = 5
	f := env.start(cfg)

	// Writers run for a second (or a bounded number of batches) while the
	// flusher flushes every few ms.
	const writers, maxBatchesPerWriter = 4, 20_000
	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	var wg sync.WaitGroup
	sent := make([]totals, writers)
	for i := range writers {
		wg.Go(func() { sent[i] = writer(ctx, t, env, uint64(i+1), maxBatchesPerWriter, stop, false) }) //nolint:gosec // small loop index
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	flushes, flushedWhileWriting := 0, 0
loop:
	for flushes < 5000 {
		select {
		case <-writersDone:
			break loop
		case <-ticker.C:
			st, err := f.flush(ctx)
			require.NoError(t, err)
			flushes++
			flushedWhileWriting += st.counters
		}
	}
	<-writersDone
	_, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Greater(t, flushes, 5, "flushes overlapped the writers")
	assert.Positive(t, flushedWhileWriting)

	want := totals{}
	for _, s := range sent {
		mergeTotals(want, s)
	}
	require.NotEmpty(t, want)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
	t.Logf("%d flushes while writing moved %d counters", flushes, flushedWhileWriting)
}

func TestFlushPostgresUnavailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	rdb, prefix := testservers.SharedRedis(t)
	env := newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), pg.FreshDatabase(t))
	cfg := env.config()
	cfg.Timeout = 5 * time.Second
	cfg.BatchSize = 4 // 11 counters: 3 batches, the next one staged while two are applied
	f := env.start(cfg)

	want := totals{}
	first := awkwardIncrements()
	require.NoError(t, env.write(ctx, first...))
	want.add(first...)

	pg.Stop()
	st, err := f.flush(ctx)
	require.Error(t, err)
	assert.Zero(t, st.counters)
	// The batches the appliers took (and the one staged ahead, if any) are
	// kept in staging entries; the rest is still pending. Nothing is lost.
	staged, err := env.rdb.ZRange(ctx, env.schema.StagingIndexKey(), 0, -1).Result()
	require.NoError(t, err)
	require.NotEmpty(t, staged)
	require.LessOrEqual(t, len(staged), cfg.ApplyWorkers+1)
	var stagedFields int
	for _, id := range staged {
		fields, herr := env.rdb.HGetAll(ctx, env.schema.StagingKey(id)).Result()
		require.NoError(t, herr)
		assert.NotEmpty(t, fields)
		assert.LessOrEqual(t, len(fields), cfg.BatchSize)
		stagedFields += len(fields)
	}
	assert.Equal(t, int64(len(first)-stagedFields), env.rdb.ZCard(ctx, env.schema.PendingKey()).Val())
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_flushes", "outcome", "failure"))

	// The exporter keeps writing during the outage.
	second := []increment{{daily("page_view", day1), 100}, {userDaily("late", "page_view", day1), 1}}
	require.NoError(t, env.write(ctx, second...))
	want.add(second...)

	pg.Start()
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(staged), st.recovered, "this instance's unfinished entries are retried first, without the grace period")
	assert.Equal(t, len(first)+len(second), st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
	assert.Equal(t, int64(len(staged)), metricSum(t, f.tel, "otelcol_pg_flush_staging_recovered"))
}

func TestTickReportsStatus(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	rdb, prefix := testservers.SharedRedis(t)
	env := newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), pg.FreshDatabase(t))
	cfg := env.config()
	cfg.Timeout = 5 * time.Second
	f := env.start(cfg)

	require.NoError(t, env.write(ctx, awkwardIncrements()...))
	pg.Stop()
	f.tick(ctx)
	pg.Start()
	f.tick(ctx)
	f.tick(ctx)
	statuses := f.host.statuses()
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, statuses,
		"a failure is recoverable, the next success reports OK once")
	failed := f.logs.FilterMessageSnippet("flush batch not committed").All()
	require.NotEmpty(t, failed)
	fields := failed[0].ContextMap()
	assert.Contains(t, fields, keyFlushID)
	assert.Equal(t, int64(len(awkwardIncrements())), fields[keyCounters])
	assert.Contains(t, fields, "error")
	want := totals{}
	want.add(awkwardIncrements()...)
	assert.Equal(t, want, env.readTotals(ctx))
}

func TestCrashBetweenCommitAndCleanup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)

	// STAGE and APPLY by hand, then "crash" before CLEANUP.
	stageAndCommit := func(f *started) {
		id := newFlushID(time.Now())
		f.flushMu.Lock()
		defer f.flushMu.Unlock()
		f.addOwn(id)
		res, err := f.store.Stage(ctx, id, f.cfg.BatchSize)
		require.NoError(t, err)
		_, err = applyBatch(ctx, f.pool, f.upsert, id, parseBatch(f.schema, res.Fields), nil)
		require.NoError(t, err)
	}
	stageAndCommit(f)
	require.Equal(t, want, env.readTotals(ctx), "committed")
	require.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "not cleaned up")

	// Recovery by the same instance (its own unfinished id): the ledger makes
	// the re-apply a no-op, then the entry is cleaned up.
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Zero(t, st.counters, "nothing applied twice")
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)

	// Same crash, recovered by another instance once the grace period is over.
	require.NoError(t, env.write(ctx, incs...))
	want.add(incs...)
	stageAndCommit(f)
	f.ownMu.Lock()
	clear(f.own) // the crashed process's memory is gone
	f.ownMu.Unlock()
	other := env.start(env.config())
	other.grace = 0
	st, err = other.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Zero(t, st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	assert.Equal(t, 2, env.ledgerRows(ctx))
	env.requireRedisEmpty(ctx)
}

func TestCrashBetweenStageAndApply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)

	// A flusher that dies right after STAGE.
	res := env.stageAged(ctx, env.redisStore(), 0)
	require.Len(t, res.Fields, len(incs))

	// During the grace period (an hour: no host is that slow) another
	// flusher leaves the entry alone.
	f := env.start(env.config())
	f.grace = time.Hour
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.recovered, "another flusher's entry is left alone during the grace period")
	assert.Zero(t, st.counters)
	assert.Empty(t, env.readTotals(ctx))
	assert.Zero(t, env.ledgerRows(ctx))
	assert.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "the entry is still staged")

	// Once the grace period is over, it is applied, exactly once.
	f.grace = 0
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Equal(t, want, env.readTotals(ctx))
	assert.Equal(t, 1, env.ledgerRows(ctx))
	env.requireRedisEmpty(ctx)
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.recovered)
	assert.Equal(t, want, env.readTotals(ctx), "applied once")
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_staging_recovered"))
	recovered := f.logs.FilterMessage("recovered staging entry").All()
	require.Len(t, recovered, 1)
	assert.Equal(t, false, recovered[0].ContextMap()["own"])
}

// TestThreeFlushersConcurrently: three flushers (two apply workers each)
// drain and recover each other's entries while writers add to every family:
// the totals are exact and no transaction deadlocks (rows are locked family
// by family, sorted by primary key).
func TestThreeFlushersConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	var flushers []*started
	for range 3 {
		cfg := env.config()
		cfg.BatchSize = 4
		f := env.start(cfg)
		// A tiny grace makes the flushers also recover each other's entries
		// while they are being applied: the ledger must serialize them.
		f.grace = time.Millisecond
		flushers = append(flushers, f)
	}

	const writers, maxBatchesPerWriter = 3, 20_000
	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	var wg sync.WaitGroup
	sent := make([]totals, writers)
	for i := range writers {
		wg.Go(func() { sent[i] = writer(ctx, t, env, uint64(100+i), maxBatchesPerWriter, stop, true) }) //nolint:gosec // small loop index
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	var fwg sync.WaitGroup
	for _, f := range flushers {
		fwg.Go(func() {
			for range 5000 {
				select {
				case <-writersDone:
					return
				default:
				}
				if _, err := f.flush(ctx); err != nil {
					t.Errorf("flush: %v", err)
					return
				}
			}
		})
	}
	fwg.Wait()
	<-writersDone
	for _, f := range flushers {
		_, err := f.flush(ctx)
		require.NoError(t, err)
	}

	want := totals{}
	for _, s := range sent {
		mergeTotals(want, s)
	}
	assert.Equal(t, want, env.readTotals(ctx))
	requireRollupsExact(ctx, t, env.db)
	requireOnlyMarkersLeft(t, env)
	var recovered, flushes int64
	for _, f := range flushers {
		recovered += metricSum(t, f.tel, "otelcol_pg_flush_staging_recovered")
		flushes += metricSum(t, f.tel, "otelcol_pg_flush_flushes")
	}
	t.Logf("%d flushes, %d staging entries recovered across flushers", flushes, recovered)
}

func TestExpiryRisk(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.CounterTTL = 10 * time.Hour
	f := env.start(cfg)

	// A counter pending for 6 h (more than half of the 10 h ttl) and a fresh one.
	old := increment{daily("old", day1), 3}
	require.NoError(t, writeBatch(ctx, env.rdb, env.schema, time.Now().Add(-6*time.Hour), old))
	fresh := increment{daily("fresh", day1), 4}
	require.NoError(t, env.write(ctx, fresh))
	// A pending member whose counter has expired.
	expiredKey := env.schema.Key(daily("gone", day1))
	require.NoError(t, env.rdb.ZAdd(ctx, env.schema.PendingKey(), redisZ(time.Now(), expiredKey)).Err())

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 6*time.Hour, st.oldestPendingAge, float64(time.Minute))
	assert.Equal(t, int64(1), st.atRisk)
	assert.Equal(t, int64(3), st.pending)
	assert.Equal(t, 1, st.expired)
	assert.Equal(t, 2, st.counters)

	warned := f.logs.FilterMessageSnippet("older than half of counter_ttl").All()
	require.Len(t, warned, 1)
	assert.Equal(t, int64(1), warned[0].ContextMap()["at_risk"])
	assert.Len(t, f.logs.FilterMessageSnippet("had expired in Redis").All(), 1)

	age, err := f.tel.GetMetric("otelcol_pg_flush_oldest_pending_age")
	require.NoError(t, err)
	gauge := age.Data.(metricdataGaugeFloat)
	require.Len(t, gauge.DataPoints, 1)
	assert.InDelta(t, (6 * time.Hour).Seconds(), gauge.DataPoints[0].Value, 60)
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_counters_expired"))
	atRisk, err := f.tel.GetMetric("otelcol_pg_flush_pending_at_risk")
	require.NoError(t, err)
	assert.Equal(t, int64(1), atRisk.Data.(metricdataGaugeInt).DataPoints[0].Value)

	want := totals{}
	want.add(old, fresh)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
}

// TestExporterScriptSetsTTLAndPendingOnCreate: the tests write counters with
// the exporter's semantics: a counter's TTL and its pending score run from
// its creation and a later increment renews neither, which is why a
// counter's pending age is what TestExpiryRisk compares with counter_ttl.
// After a flush the next increment creates the key again.
func TestExporterScriptSetsTTLAndPendingOnCreate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	c := daily("ttl", day1)
	key := env.schema.Key(c)
	created := time.Now().Add(-20 * time.Hour)
	require.NoError(t, writeBatch(ctx, env.rdb, env.schema, created, increment{c, 2}))
	assert.InDelta(t, testCounterTTL, env.rdb.TTL(ctx, key).Val(), float64(time.Minute), "TTL set at creation")
	assert.InDelta(t, float64(created.UnixMilli()), env.rdb.ZScore(ctx, env.schema.PendingKey(), key).Val(), 0)

	// As if the counter had lived 20 of its 24 hours: an increment now
	// renews neither its TTL nor its pending score.
	require.NoError(t, env.rdb.Expire(ctx, key, 4*time.Hour).Err())
	require.NoError(t, env.write(ctx, increment{c, 3}))
	assert.Equal(t, "5", env.rdb.Get(ctx, key).Val())
	ttl := env.rdb.TTL(ctx, key).Val()
	assert.Positive(t, ttl)
	assert.LessOrEqual(t, ttl, 4*time.Hour, "an increment does not renew the TTL")
	assert.InDelta(t, float64(created.UnixMilli()), env.rdb.ZScore(ctx, env.schema.PendingKey(), key).Val(), 0, "nor the pending score")

	f := env.start(env.config())
	_, err := f.flush(ctx)
	require.NoError(t, err)
	before := time.Now()
	require.NoError(t, env.write(ctx, increment{c, 1}))
	assert.InDelta(t, testCounterTTL, env.rdb.TTL(ctx, key).Val(), float64(time.Minute), "re-created: a new TTL")
	assert.GreaterOrEqual(t, env.rdb.ZScore(ctx, env.schema.PendingKey(), key).Val(), float64(before.UnixMilli()), "and a new pending entry")
}

func TestQuarantine(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())

	good := awkwardIncrements()
	require.NoError(t, env.write(ctx, good...))
	p := env.prefix
	// Malformed counter keys with integer counts, written the exporter's way.
	badShape := p + ":counter:onlytype"
	badDate := p + ":counter:view:2025-13-01"
	badEscape := p + ":user:bad%zz:view:2025-06-01"
	invalidUTF8 := p + ":user:\xff\xfe:view:2025-06-01"
	nulType := p + ":counter:%00x:2025-06-01"
	for _, k := range []string{badShape, badDate, badEscape, invalidUTF8, nulType} {
		require.NoError(t, env.rdb.IncrBy(ctx, k, 5).Err())
		require.NoError(t, env.rdb.ZAddNX(ctx, env.schema.PendingKey(), redisZ(time.Now(), k)).Err())
	}
	// A non-integer value, a key of another type and a member outside the counter prefixes.
	notInt := env.schema.Key(daily("notint", day1))
	require.NoError(t, env.rdb.Set(ctx, notInt, "abc", 0).Err())
	wrongType := env.schema.Key(daily("hash", day1))
	require.NoError(t, env.rdb.HSet(ctx, wrongType, "a", 1).Err())
	foreign := p + ":batch:someone-elses-marker"
	require.NoError(t, env.rdb.Set(ctx, foreign, "1", 0).Err())
	for _, k := range []string{notInt, wrongType, foreign} {
		require.NoError(t, env.rdb.ZAddNX(ctx, env.schema.PendingKey(), redisZ(time.Now(), k)).Err())
	}

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(good), st.counters)
	assert.Equal(t, 8, st.quarantined)

	want := totals{}
	want.add(good...)
	assert.Equal(t, want, env.readTotals(ctx), "the good counters are flushed")

	q, err := env.rdb.HGetAll(ctx, env.schema.QuarantineKey()).Result()
	require.NoError(t, err)
	for _, k := range []string{badShape, badDate, badEscape, invalidUTF8, nulType} {
		assert.Equal(t, "5", q[k], "count of %q kept under its raw key", k)
	}
	assert.Len(t, q, 8)
	var markers []string
	for field, v := range q {
		switch v {
		case "abc", protocol.MarkerWrongType, protocol.MarkerForeign:
			markers = append(markers, v)
			assert.Contains(t, field, "#", "non-integer values are kept per flush id")
		}
	}
	assert.ElementsMatch(t, []string{"abc", protocol.MarkerWrongType, protocol.MarkerForeign}, markers)
	// Keys the flusher must not delete are untouched.
	assert.Equal(t, "1", env.rdb.Get(ctx, foreign).Val())
	assert.Equal(t, "1", env.rdb.HGet(ctx, wrongType, "a").Val())
	assert.Zero(t, env.rdb.ZCard(ctx, env.schema.PendingKey()).Val())
	assert.Zero(t, env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val())

	logged := f.logs.FilterMessageSnippet("quarantine").All()
	require.Len(t, logged, 1)
	assert.Equal(t, "error", logged[0].Level.String())
	assert.Equal(t, int64(8), logged[0].ContextMap()[keyQuarantined])
	assert.Equal(t, int64(8), metricSum(t, f.tel, "otelcol_pg_flush_counters_quarantined"))
}

func TestShutdownRunsFinalFlush(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	set, tel := nopSettings(t)
	f, err := newFlusher(env.config(), set)
	require.NoError(t, err)
	require.NoError(t, f.Start(ctx, &statusHost{}))

	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	require.NoError(t, f.Shutdown(ctx))
	want := totals{}
	want.add(incs...)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
	metadatatest.AssertEqualPgFlushCountersFlushed(t, tel,
		[]metricdata.DataPoint[int64]{{Value: int64(len(incs))}}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualPgFlushFlushes(t, tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: attribute.NewSet(attribute.String("outcome", "success"))}},
		metricdatatest.IgnoreTimestamp())
	require.NoError(t, f.Shutdown(ctx), "a second Shutdown is a no-op")
	require.ErrorIs(t, f.Start(ctx, &statusHost{}), errStartTwice)
}

func TestShutdownWithoutStart(t *testing.T) {
	t.Parallel()
	set, _ := nopSettings(t)
	cfg := createDefaultConfig().(*Config)
	cfg.DSN = "postgres://127.0.0.1:1/none"
	f, err := newFlusher(cfg, set)
	require.NoError(t, err)
	require.NoError(t, f.Shutdown(t.Context()))
	require.NoError(t, f.Shutdown(t.Context()))
}

// TestOldStagingEntryIsApplied: a staging entry far older than
// ledger_retention whose batch was never committed (PostgreSQL was down all
// that time, say) is recovered like any other: applied once, no operator.
func TestOldStagingEntryIsApplied(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)
	// Staged 200 h ago by a flusher that died: past the 168 h retention.
	env.stageAged(ctx, f.store, 200*time.Hour)

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Equal(t, len(incs), st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	assert.Equal(t, 1, env.ledgerRows(ctx))
	env.requireRedisEmpty(ctx)
	assert.Empty(t, f.logs.FilterLevelExact(zapcore.ErrorLevel).All())
}

func TestLedgerPruned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	_, err := env.db.Exec(ctx, `INSERT INTO analytics_flush_ledger VALUES
		('old', now() - interval '169 hours', 1), ('recent', now() - interval '167 hours', 1),
		('old-staged', now() - interval '169 hours', 1)`)
	require.NoError(t, err)
	// 'old-staged' is still in the staging index (within the grace period:
	// not recovered by this tick).
	require.NoError(t, env.rdb.ZAdd(ctx, env.schema.StagingIndexKey(), redisZ(env.redisTime(ctx), "old-staged")).Err())
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), st.pruned)
	var ids []string
	rows, err := env.db.Query(ctx, `SELECT flush_id FROM analytics_flush_ledger ORDER BY flush_id`)
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	assert.Equal(t, []string{"old-staged", "recent"}, ids, "a staged flush id keeps its row, however old")
}

func TestStageScriptRetryIsNoop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	store := env.redisStore()
	require.NoError(t, env.write(ctx, awkwardIncrements()[:3]...))
	// Two pending members whose counters expired.
	for _, c := range []protocol.Counter{daily("gone", day1), hourly("gone", day1)} {
		require.NoError(t, env.rdb.ZAdd(ctx, env.schema.PendingKey(), redisZ(time.Now(), env.schema.Key(c))).Err())
	}
	id := newFlushID(time.Now())
	res, err := store.Stage(ctx, id, 100)
	require.NoError(t, err)
	require.Len(t, res.Fields, 3)
	require.Equal(t, 2, res.Expired)

	// The exporter re-creates one of the staged counters, then the same
	// script is re-sent (as go-redis does after a lost reply). The re-run
	// reports the first run's expired counters, whose reply was lost.
	again := awkwardIncrements()[0]
	require.NoError(t, env.write(ctx, again))
	res, err = store.Stage(ctx, id, 100)
	require.NoError(t, err)
	assert.True(t, res.AlreadyStaged)
	assert.Equal(t, 2, res.Expired, "the first run's expired count is kept in the claim")
	staged, err := store.ReadStaging(ctx, id)
	require.NoError(t, err)
	assert.Len(t, staged, 3)
	for _, fld := range staged {
		if fld.Key == env.schema.Key(again.counter) {
			assert.Equal(t, "5", fld.Value, "the staged count is not overwritten")
		}
	}
	assert.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.PendingKey()).Val(), "the new increment waits for the next batch")

	// Another flusher recovers and finishes the entry before the re-sent
	// script arrives: the re-run must still stage nothing under this id,
	// because the ledger holds it and its batch would be skipped as applied.
	// With wait_replicas the recovering flusher claims the id first: that
	// renews the claim and keeps its count.
	require.NoError(t, store.Claim(ctx, id))
	require.NoError(t, store.Finish(ctx, id, nil))
	res, err = store.Stage(ctx, id, 100)
	require.NoError(t, err)
	assert.True(t, res.AlreadyStaged)
	assert.Equal(t, 2, res.Expired)
	staged, err = store.ReadStaging(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, staged)
	assert.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.PendingKey()).Val(), "the pending increment is left for a fresh flush id")

	// A claim written by an older version (a plain string) reads as 0 expired.
	old := newFlushID(time.Now())
	require.NoError(t, env.rdb.Set(ctx, env.schema.StagingClaimKey(old), "1", time.Hour).Err())
	res, err = store.Stage(ctx, old, 100)
	require.NoError(t, err)
	assert.True(t, res.AlreadyStaged)
	assert.Zero(t, res.Expired)
}

// resendStage is a go-redis hook that runs every STAGE script twice and
// keeps only the second reply: the first reply is lost and the command
// re-sent, as go-redis does after a network error.
type resendStage struct{ resent atomic.Int64 }

func (h *resendStage) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *resendStage) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isStageScript(cmd) {
			if err := next(ctx, cmd); err == nil {
				h.resent.Add(1) // a reply that never reached the flusher
			}
		}
		return next(ctx, cmd)
	}
}

// isStageScript reports whether cmd runs STAGE (EVALSHA, or EVAL after a NOSCRIPT).
func isStageScript(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	body, _ := args[1].(string)
	switch args[0] {
	case "evalsha":
		return body == protocol.StageScriptHash()
	case "eval":
		return strings.Contains(body, "redis.call('ZPOPMIN'")
	}
	return false
}

func (h *resendStage) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLostStageReplyKeepsExpiredCount: when the reply of a STAGE that found
// expired counters is lost and go-redis re-sends the script, the re-run
// reports the first run's expired count, so it still reaches the metric
// and the Error log; the batch is applied once.
func TestLostStageReplyKeepsExpiredCount(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	hook := &resendStage{}
	f.client.AddHook(hook)

	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	require.NoError(t, env.rdb.ZAdd(ctx, env.schema.PendingKey(), redisZ(time.Now(), env.schema.Key(daily("gone", day1)))).Err())
	want := totals{}
	want.add(incs...)

	st, err := f.flush(ctx)
	require.NoError(t, err)
	require.Positive(t, hook.resent.Load(), "a STAGE reply was lost")
	assert.Equal(t, 1, st.expired)
	assert.Equal(t, len(incs), st.counters)
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_counters_expired"))
	expired := f.logs.FilterMessageSnippet("had expired in Redis").All()
	require.Len(t, expired, 1)
	assert.Equal(t, int64(1), expired[0].ContextMap()["expired"])
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
}

// TestStageOfNothingClaimsNothing: an idle tick leaves no claim marker, and
// the id stays usable (safe: nothing was staged under it, so nothing can have
// been applied under it).
func TestStageOfNothingClaimsNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	store := env.redisStore()
	id := newFlushID(time.Now())
	res, err := store.Stage(ctx, id, 100)
	require.NoError(t, err)
	require.Zero(t, res.Taken)
	require.False(t, res.AlreadyStaged)
	assert.Zero(t, env.rdb.Exists(ctx, env.schema.StagingClaimKey(id)).Val(), "no claim for an empty STAGE")

	require.NoError(t, env.write(ctx, awkwardIncrements()[:2]...))
	res, err = store.Stage(ctx, id, 100)
	require.NoError(t, err)
	require.False(t, res.AlreadyStaged)
	assert.Len(t, res.Fields, 2)
	assert.Equal(t, int64(1), env.rdb.Exists(ctx, env.schema.StagingClaimKey(id)).Val(), "a STAGE that took counters claims its id")
}

func TestFinishScriptIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	store := env.redisStore()
	require.NoError(t, env.write(ctx, awkwardIncrements()[:2]...))
	id := newFlushID(time.Now())
	_, err := store.Stage(ctx, id, 100)
	require.NoError(t, err)
	q := []protocol.QuarantineOp{{Incr: true, Field: "bad-key", Value: "7"}, {Field: "bad-value", Value: "x"}}
	require.NoError(t, store.Finish(ctx, id, q))
	require.NoError(t, store.Finish(ctx, id, q), "a re-run finds no staging hash and writes nothing")
	got, err := env.rdb.HGetAll(ctx, env.schema.QuarantineKey()).Result()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"bad-key": "7", "bad-value#" + id: "x"}, got)
	assert.Zero(t, env.rdb.Exists(ctx, env.schema.StagingKey(id)).Val())
	assert.Zero(t, env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val())
}
