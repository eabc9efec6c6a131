package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestDistroFailoverToReplica runs the distro with the sample config and
// REDIS_WAIT_REPLICAS=1 against a private master with one replica. While the
// replica acknowledges nothing, a request is not acknowledged (its client
// times out and resends it once the replica is back). Then the collector and
// the master are SIGKILLed before any flush, the replica is promoted, and a
// collector on it (without replicas to wait for) flushes: every acknowledged event, the resent request's
// included, is in PostgreSQL exactly once.
func TestDistroFailoverToReplica(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	master := testservers.StartRedis(t)
	replica := testservers.StartRedisReplica(t, master)
	dsn := testservers.FreshDatabase(t)
	const prefix = "e2e-failover"
	env := distroEnv{
		RedisEndpoint: master.Addr, PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // only the last collector's shutdown flush runs
		Env:           []string{"REDIS_WAIT_REPLICAS=1"},
	}
	d := startDistro(t, env)
	exp := newExpected()
	sendLogs(ctx, t, d, 600, 0, exp)
	sendTraces(ctx, t, d, 300, 0, exp)

	replica.Pause()
	body, err := plogotlp.NewExportRequestFromLogs(logsBatch(400, 1, exp)).MarshalProto()
	require.NoError(t, err)
	attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = d.send(attemptCtx, "/v1/logs", body)
	cancel()
	require.Error(t, err, "not acknowledged while the replica lags")
	replica.Resume()
	d.post(ctx, "/v1/logs", body) // the client's resend

	d.kill()
	master.Kill()
	require.NoError(t, replica.Client(t).ReplicaOf(ctx, "NO", "ONE").Err())
	// The promoted replica has no replica of its own: with wait_replicas 1
	// every write would wait in vain, so this collector does not wait.
	env.RedisEndpoint, env.Env = replica.Addr, nil
	startDistro(t, env).stop()
	assertFlushedExactly(ctx, t, replica.Client(t), dsn, prefix, exp)
}
