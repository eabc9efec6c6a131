package pgflushextension

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.uber.org/zap/zapcore"
)

// TestTickOutOfTimeInBacklogSucceeds: a tick that runs out of time while
// catching up on a backlog stops staging at its stage deadline, applies what
// it staged, warns and succeeds; later ticks catch up the same way, the
// status never leaves OK, and every count arrives once.
func TestTickOutOfTimeInBacklogSucceeds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.BatchSize = 5
	cfg.Timeout = 2 * time.Second
	f := env.start(cfg)

	// 10000 batches of 5: several times what one tick applies in 1.5 s
	// (about 3300 on a 2-core host under the race detector).
	const n = 50_000
	incs := make([]increment, 0, n)
	for i := range n {
		incs = append(incs, increment{userDaily(fmt.Sprintf("u%05d", i), "click", day1), int64(i%7 + 1)})
	}
	for i := 0; i < n; i += 1000 {
		require.NoError(t, env.write(ctx, incs[i:min(i+1000, n)]...))
	}
	want := totals{}
	want.add(incs...)

	start := time.Now()
	st, err := f.flush(ctx)
	elapsed := time.Since(start)
	require.NoError(t, err, "running out of time in a backlog is no failure")
	assert.Less(t, elapsed, cfg.Timeout, "the tick ended before its timeout")
	require.True(t, st.outOfTime, "the tick stopped staging at its stage deadline")
	require.Positive(t, st.counters)
	require.Less(t, st.counters, n, "the backlog outlasts one tick")
	assert.Equal(t, st.batches*cfg.BatchSize, st.counters, "every batch it staged was applied")
	assert.Zero(t, env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "nothing left staged")
	assert.Equal(t, int64(n-st.counters), env.rdb.ZCard(ctx, env.schema.PendingKey()).Val(), "the rest still pending")
	warned := f.logs.FilterMessageSnippet("flush timeout reached with counters still pending").All()
	require.Len(t, warned, 1)
	assert.Equal(t, zapcore.WarnLevel, warned[0].Level)
	assert.Equal(t, int64(st.batches), warned[0].ContextMap()["batches"])
	assert.Equal(t, int64(1), metricSum(t, f.tel, "otelcol_pg_flush_flushes", "outcome", "success"))
	t.Logf("first tick: %d batches, %d counters in %s", st.batches, st.counters, elapsed)

	// Later ticks, driven as the loop does, catch up.
	ticks := 0
	for env.rdb.ZCard(ctx, env.schema.PendingKey()).Val() > 0 || env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val() > 0 {
		require.Less(t, ticks, 200, "the backlog must drain")
		f.tick(ctx)
		ticks++
	}
	t.Logf("%d more ticks drained the backlog", ticks)
	assert.Empty(t, f.host.statuses(), "no tick reported an error status")
	assert.Empty(t, f.logs.FilterLevelExact(zapcore.ErrorLevel).All())
	assert.Zero(t, metricSum(t, f.tel, "otelcol_pg_flush_flushes", "outcome", "failure"))
	assert.Equal(t, want, env.readTotals(ctx), "nothing lost or counted twice")
	assert.Equal(t, int64(n), metricSum(t, f.tel, "otelcol_pg_flush_counters_flushed"))
	env.requireRedisEmpty(ctx)
}

// TestTickStuckPastTimeoutFails: a tick whose APPLY is still blocked at the
// timeout (a row lock held by another transaction) is a real failure: it is
// rolled back, logged at Error and reported as a recoverable error; the next
// tick applies the batch once.
func TestTickStuckPastTimeoutFails(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.Timeout = time.Second
	f := env.start(cfg)
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)

	// Another transaction holds the lock on a row the batch upserts.
	lock, err := env.db.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, `INSERT INTO analytics_daily VALUES ('page_view', $1, 0, now())`, day1)
	require.NoError(t, err)
	f.tick(ctx)
	require.NoError(t, lock.Rollback(ctx))

	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, f.host.statuses())
	failed := f.logs.FilterMessageSnippet("flush failed").All()
	require.Len(t, failed, 1)
	assert.Equal(t, zapcore.ErrorLevel, failed[0].Level)
	assert.Empty(t, f.logs.FilterMessageSnippet("flush timeout reached").All(), "a failure is not a backlog")
	assert.Empty(t, env.readTotals(ctx), "rolled back")

	f.tick(ctx)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, f.host.statuses())
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
}

// backlog writes n per-user counters (in batches of 1000) and returns their
// totals.
func (e *testEnv) backlog(ctx context.Context, n int) totals {
	e.t.Helper()
	incs := make([]increment, 0, n)
	for i := range n {
		incs = append(incs, increment{userDaily(fmt.Sprintf("u%05d", i), "click", day1), int64(i%7 + 1)})
	}
	for i := 0; i < n; i += 1000 {
		require.NoError(e.t, e.write(ctx, incs[i:min(i+1000, n)]...))
	}
	want := totals{}
	want.add(incs...)
	return want
}

// TestFinalFlushOutOfTimeLogsWhatIsLeft: a final flush whose Shutdown
// context ends before it has moved everything (a backlog of pending
// counters, staging entries of a dead flusher) ends in time and returns nil:
// nothing is lost. It logs at Error, once, how many counters are still
// pending and how many staging entries are left (no Warn, no Info "stopped
// after a final flush"). The next flusher moves them, exactly.
func TestFinalFlushOutOfTimeLogsWhatIsLeft(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// deadEntries: staging entries a dead flusher left (past the grace
		// period) before the backlog was written.
		deadEntries int
		// slowRecovery: the first recovery stalls until after the stage
		// deadline (a host that stalls), so the other entries are left.
		slowRecovery bool
		backlog      int
		wantStaging  int64
	}{
		// 10000 batches of 5: several times what a tick moves in 1.5 s
		// (about 3300 counters on a 2-core host under the race detector).
		{name: "pending backlog", backlog: 50_000},
		{name: "staging entries left", deadEntries: 3, slowRecovery: true, backlog: 100, wantStaging: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			env := newTestEnv(t)
			want := totals{}
			for i := range tt.deadEntries {
				incs := []increment{{daily(fmt.Sprintf("dead%d", i), day1), int64(i + 1)}}
				require.NoError(t, env.write(ctx, incs...))
				want.add(incs...)
				env.stageAged(ctx, env.redisStore(), time.Hour)
			}
			mergeTotals(want, env.backlog(ctx, tt.backlog))

			cfg := env.config() // timeout 30 s: the Shutdown context ends first
			cfg.BatchSize = 5
			f := env.start(cfg)
			shutdownCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if tt.slowRecovery {
				deadline, _ := shutdownCtx.Deadline()
				var once sync.Once
				f.failpoint = func(step string) {
					if step == stepRecoveryRead {
						// A stall, not a wait for a condition: the tick's
						// stage deadline (3/4 of its 2 s) passes meanwhile.
						once.Do(func() { time.Sleep(time.Until(deadline.Add(-400 * time.Millisecond))) })
					}
				}
			}
			start := time.Now()
			require.NoError(t, f.Shutdown(shutdownCtx), "nothing is lost: no error")
			assert.Less(t, time.Since(start), 2*time.Second, "the final flush ended before the Shutdown deadline")

			pending := env.rdb.ZCard(ctx, env.schema.PendingKey()).Val()
			staging := env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val()
			assert.Positive(t, pending, "the backlog outlasts the final flush")
			assert.Equal(t, tt.wantStaging, staging)
			logged := f.logs.FilterMessageSnippet("pg_flush stopped before its final flush moved everything").All()
			require.Len(t, logged, 1)
			assert.Equal(t, zapcore.ErrorLevel, logged[0].Level)
			fields := logged[0].ContextMap()
			assert.Equal(t, pending, fields[keyPendingLeft])
			assert.Equal(t, staging, fields[keyStagingLeft])
			assert.Contains(t, logged[0].Message, "stay in Redis, and the next flusher moves them")
			assert.Empty(t, f.logs.FilterMessage("pg_flush stopped after a final flush").All())
			assert.Empty(t, f.logs.FilterLevelExact(zapcore.WarnLevel).All(), "no Warn about the next tick: there is none")
			assert.Len(t, f.logs.FilterLevelExact(zapcore.ErrorLevel).All(), 1)

			// The next flusher moves the rest, exactly once.
			cfg = env.config()
			next := env.start(cfg)
			st, err := next.flush(ctx)
			require.NoError(t, err)
			assert.Equal(t, int(staging), st.recovered)
			assert.Equal(t, want, env.readTotals(ctx), "nothing lost or counted twice")
			env.requireRedisEmpty(ctx)
		})
	}
}
