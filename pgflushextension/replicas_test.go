package pgflushextension

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// replicatedEnv is a private Redis master with one replica and a fresh
// database; the env talks to the master. It writes incs on the master and
// waits until the replica has them.
func replicatedEnv(t *testing.T) (env *testEnv, master, replica *testservers.RedisServer, incs []increment) {
	t.Helper()
	master = testservers.StartRedis(t)
	replica = testservers.StartRedisReplica(t, master)
	env = newTestEnvWith(t, master.Client(t), "replicated", master.Addr, testservers.FreshDatabase(t))
	incs = awkwardIncrements()
	require.NoError(t, env.write(t.Context(), incs...))
	master.WaitReplicasAcked(t)
	return env, master, replica, incs
}

// failOver kills master, promotes replica (if it was not cut off before),
// flushes once from it and returns what PostgreSQL then holds.
func failOver(t *testing.T, env *testEnv, master, replica *testservers.RedisServer) totals {
	t.Helper()
	master.Kill()
	cutOff(t.Context(), t, replica)
	flushOnReplica(t, env, replica)
	return env.readTotals(t.Context())
}

// times is incs counted n times.
func times(incs []increment, n int) totals {
	want := totals{}
	for range n {
		want.add(incs...)
	}
	return want
}

// cutOff detaches replica from its master (a network partition, or a
// failover that has begun): it keeps what it has and takes writes.
func cutOff(ctx context.Context, t *testing.T, replica *testservers.RedisServer) {
	t.Helper()
	require.NoError(t, replica.Client(t).ReplicaOf(ctx, "NO", "ONE").Err())
}

// startWaiting starts a flusher whose writes wait for waitReplicas replicas,
// at most 2s (generous: a loaded CI host must not fail the writes that a
// replica does acknowledge).
func startWaiting(env *testEnv, waitReplicas int) *started {
	cfg := env.config()
	cfg.Redis.WaitReplicas, cfg.Redis.WaitTimeout = waitReplicas, 2*time.Second
	return env.start(cfg)
}

// requireFlushWaits checks that f's next flush, and its final flush, fail for
// want of a replica without writing to PostgreSQL.
func requireFlushWaits(ctx context.Context, t *testing.T, env *testEnv, f *started) {
	t.Helper()
	_, err := f.flush(ctx)
	require.ErrorIs(t, err, redisconn.ErrNotReplicated)
	assert.Empty(t, env.readTotals(ctx), "nothing applied before a replica has the STAGE")
	require.ErrorIs(t, f.Shutdown(ctx), redisconn.ErrNotReplicated, "the final flush waits too")
}

// flushOnReplica flushes once with a new flusher that talks to replica (the
// promoted master), into the env's database.
func flushOnReplica(t *testing.T, env *testEnv, replica *testservers.RedisServer) {
	t.Helper()
	cfg := env.config()
	cfg.Redis.Endpoint = replica.Addr
	f := env.start(cfg)
	_, err := f.flush(t.Context())
	require.NoError(t, err)
}

// TestFailoverDuringFlushCountsOnceWithWaitReplicas: a flush whose STAGE
// did not reach the replica is applied to PostgreSQL, then the replica is
// promoted and still holds the counters that STAGE took. Without
// wait_replicas they are counted twice; with it, the flush fails before
// PostgreSQL and the counts arrive once, from the new master.
func TestFailoverDuringFlushCountsOnceWithWaitReplicas(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		waitReplicas int
		wantTimes    int // how many times PostgreSQL holds the counts
	}{
		{name: "wait_replicas 0", waitReplicas: 0, wantTimes: 2},
		{name: "wait_replicas 1", waitReplicas: 1, wantTimes: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			env, master, replica, incs := replicatedEnv(t)
			f := startWaiting(env, tt.waitReplicas)
			cutOff(ctx, t, replica)
			if tt.waitReplicas > 0 {
				requireFlushWaits(ctx, t, env, f)
			} else {
				_, err := f.flush(ctx)
				require.NoError(t, err)
				require.NoError(t, f.Shutdown(ctx))
			}

			assert.Equal(t, times(incs, tt.wantTimes), failOver(t, env, master, replica))
		})
	}
}

// TestRecoveryWaitsForReplicas: a flusher died right after its STAGE, before
// its WAIT; the replica never got that STAGE. The flusher that recovers the
// staging entry must not apply it until a replica has it: it claims the entry
// and waits first. After the failover the counts are in PostgreSQL once.
func TestRecoveryWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env, master, replica, incs := replicatedEnv(t)
	cutOff(ctx, t, replica)
	// The dead flusher staged an hour ago (past any grace period) and waited for nothing.
	res := env.stageAged(ctx, env.redisStore(), time.Hour)
	require.Len(t, res.Fields, len(incs))

	requireFlushWaits(ctx, t, env, startWaiting(env, 1))
	assert.Equal(t, times(incs, 1), failOver(t, env, master, replica))
}

// TestFlushWaitsForReplicasAndRetries: with a replica that acknowledges
// nothing for a while, flushes fail and leave the counts staged; once it is
// back, the next flush recovers the entry, and a failover after that loses
// and repeats nothing.
func TestFlushWaitsForReplicasAndRetries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env, master, replica, incs := replicatedEnv(t)
	f := startWaiting(env, 1)
	replica.Pause()
	_, err := f.flush(ctx)
	require.ErrorIs(t, err, redisconn.ErrNotReplicated)
	assert.Empty(t, env.readTotals(ctx))
	replica.Resume()
	master.WaitReplicasAcked(t)

	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered, "the staged batch is applied by the next tick")
	assert.Equal(t, times(incs, 1), env.readTotals(ctx))
	require.NoError(t, f.Shutdown(ctx))

	master.WaitReplicasAcked(t)
	assert.Equal(t, times(incs, 1), failOver(t, env, master, replica))
}
