package pgflushextension

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// stepKiller is a flusher failpoint that runs kill (stopping a server) the
// first time the armed step is reached, then disarms itself.
type stepKiller struct {
	kill func()

	mu    sync.Mutex
	armed string
	fired bool
}

func (s *stepKiller) arm(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.fired = step, false
}

func (s *stepKiller) reach(step string) {
	s.mu.Lock()
	hit := step == s.armed
	if hit {
		s.armed, s.fired = "", true
	}
	s.mu.Unlock()
	if hit {
		s.kill()
	}
}

func (s *stepKiller) hasFired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fired
}

// killAtStep arms step, runs one flush, and requires that it reached step
// (and so killed the server). The flush's error is expected, not checked.
func killAtStep(ctx context.Context, t *testing.T, f *started, killer *stepKiller, step string) {
	t.Helper()
	killer.arm(step)
	_, err := f.flush(ctx)
	require.True(t, killer.hasFired(), "step %s not reached (flush error: %v)", step, err)
	t.Logf("server killed at %s; the flush returned %v", step, err)
}

// killAtRandom runs kill after a random delay of up to maxDelay while
// flushes run back to back, and returns once kill has returned: the kill
// lands between two ticks or anywhere inside one.
func killAtRandom(ctx context.Context, t *testing.T, f *started, rng *rand.Rand, maxDelay time.Duration, kill func()) {
	t.Helper()
	killed := make(chan struct{})
	delay := time.Duration(rng.Int64N(int64(maxDelay)))
	time.AfterFunc(delay, func() { kill(); close(killed) })
	flushes := 0
	for {
		select {
		case <-killed:
			t.Logf("server killed %s after the first of %d flushes", delay, flushes)
			return
		default:
		}
		_, _ = f.flush(ctx)
		flushes++
	}
}

// flushUntilOK flushes until a flush succeeds (a pool may hand out a few
// connections that died with the server first).
func flushUntilOK(ctx context.Context, t *testing.T, f *started) {
	t.Helper()
	var err error
	for range 20 {
		if _, err = f.flush(ctx); err == nil {
			return
		}
	}
	require.NoError(t, err, "flush after the restart")
}

// waitPending waits until at least n counters are pending, so that a flush
// takes several batches.
func waitPending(ctx context.Context, t *testing.T, env *testEnv, n int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		return env.rdb.ZCard(ctx, env.schema.PendingKey()).Val() >= n
	}, 10*time.Second, 5*time.Millisecond, "writers keep counters pending")
}

// TestPostgresKilledDuringFlushes SIGKILLs a private PostgreSQL inside the
// APPLY transaction (after BEGIN, after the ledger insert, before COMMIT),
// right after a commit, during recovery, and at random moments of a flush
// loop, while two exporter-style writers keep incrementing. After each
// restart (WAL recovery) the flusher retries its staged batches: the totals
// are exact and Redis is left empty.
func TestPostgresKilledDuringFlushes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	rdb, prefix := testservers.SharedRedis(t)
	env := newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), pg.FreshDatabase(t))
	cfg := env.config()
	cfg.BatchSize = 20
	cfg.Timeout = 10 * time.Second
	f := env.start(cfg)
	killer := &stepKiller{kill: pg.Kill}
	f.failpoint = killer.reach // the loop ticks hourly: only the flushes below read it

	counters := seedCounters()
	rng := rand.New(rand.NewPCG(1, 2))
	write := applyWrite(env.rdb, env.schema)
	want := seed(ctx, t, write, counters, rng)
	stopA := startWriter(ctx, t, write, counters, 11, 10_000)
	stopB := startWriter(ctx, t, write, counters, 12, 10_000)

	for _, step := range []string{stepApplyBegun, stepAfterLedger, stepBeforeCommit, stepAfterCommit} {
		waitPending(ctx, t, env, 3*int64(cfg.BatchSize))
		killAtStep(ctx, t, f, killer, step)
		pg.Start()
		if step == stepBeforeCommit {
			// Its batch is still staged: kill again while recovering it.
			killAtStep(ctx, t, f, killer, stepRecoveryRead)
			pg.Start()
		}
		flushUntilOK(ctx, t, f)
	}
	for range 3 {
		waitPending(ctx, t, env, 3*int64(cfg.BatchSize))
		killAtRandom(ctx, t, f, rng, 30*time.Millisecond, pg.Kill)
		pg.Start()
		flushUntilOK(ctx, t, f)
	}

	mergeTotals(want, stopA())
	mergeTotals(want, stopB())
	flushUntilOK(ctx, t, f)
	env.db.Reset() // its connections died with the server
	requireExactTotals(ctx, t, env, want, env.isBatchMarker)
}

// TestRedisKilledDuringFlushes SIGKILLs a private Redis (AOF, appendfsync
// always) between two ticks, inside a tick before and after STAGE, after the
// commit, after CLEANUP and during recovery, and at random moments of a flush
// loop, while two writers keep incrementing with the exporter's apply call
// (idempotent: their own retries count once). After each restart the
// flusher finishes its staged batches: the totals are exact and Redis holds
// nothing but the writers' batch markers.
func TestRedisKilledDuringFlushes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	rdb := srv.Client(t)
	env := newTestEnvWith(t, rdb, testservers.UniqueName("test-"), srv.Addr, testservers.FreshDatabase(t))
	cfg := env.config()
	cfg.BatchSize = 20
	cfg.Timeout = 10 * time.Second
	f := env.start(cfg)
	killer := &stepKiller{kill: srv.Kill}
	f.failpoint = killer.reach // the loop ticks hourly: only the flushes below read it

	write := applyWrite(rdb, env.schema)
	counters := seedCounters()
	rng := rand.New(rand.NewPCG(3, 4))
	want := seed(ctx, t, write, counters, rng)
	stopA := startWriter(ctx, t, write, counters, 21, 10_000)
	stopB := startWriter(ctx, t, write, counters, 22, 10_000)

	// Between two ticks.
	waitPending(ctx, t, env, 3*int64(cfg.BatchSize))
	srv.Kill()
	srv.Start()
	flushUntilOK(ctx, t, f)

	for _, step := range []string{stepBeforeStage, stepAfterStage, stepAfterCommit, stepAfterCleanup} {
		waitPending(ctx, t, env, 3*int64(cfg.BatchSize))
		killAtStep(ctx, t, f, killer, step)
		srv.Start()
		if step == stepAfterStage {
			// Its batch is still staged: kill again while recovering it.
			killAtStep(ctx, t, f, killer, stepRecoveryRead)
			srv.Start()
		}
		flushUntilOK(ctx, t, f)
	}
	for range 3 {
		waitPending(ctx, t, env, 3*int64(cfg.BatchSize))
		killAtRandom(ctx, t, f, rng, 30*time.Millisecond, srv.Kill)
		srv.Start()
		flushUntilOK(ctx, t, f)
	}

	mergeTotals(want, stopA())
	mergeTotals(want, stopB())
	flushUntilOK(ctx, t, f)
	requireExactTotals(ctx, t, env, want, env.isBatchMarker)
}
