package e2e

import (
	"context"
	"net"
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

// TestDistroFollowsSentinelFailover runs the distro with the sample config,
// told through REDIS_SENTINEL_MASTER and REDIS_SENTINEL_ENDPOINTS to find the
// master through a sentinel (its REDIS_ENDPOINT leads nowhere), with
// REDIS_WAIT_REPLICAS=1 and a flush every 300 ms. Under load, the sentinel
// fails the master over to its replica (SENTINEL FAILOVER). Every
// acknowledged request is in PostgreSQL exactly once, and the new master is
// drained.
func TestDistroFollowsSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	master := testservers.StartRedis(t)
	replica := testservers.StartRedisReplica(t, master)
	const name, prefix = "e2e-master", "e2e-sentinel"
	sentinel := testservers.StartRedisSentinel(t, master, name, 1)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: "127.0.0.1:1", PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 300 * time.Millisecond,
		Env: []string{
			"REDIS_SENTINEL_MASTER=" + name, "REDIS_SENTINEL_ENDPOINTS=[" + sentinel.Addr + "]",
			"REDIS_WAIT_REPLICAS=1",
		},
	})
	c := newLoadClient(t, 5000, 10, 45*time.Second, buildMixed(120, 60))
	c.start(ctx, 2, d)
	waitFor(t, 20*time.Second, 5*time.Millisecond, "no traffic before the failover", func() bool {
		return c.ackedCount() >= 40
	})

	require.NoError(t, sentinel.Client(t).Failover(ctx, name).Err())
	waitFor(t, 30*time.Second, 20*time.Millisecond, "the sentinel did not fail over", func() bool {
		return sentinel.MasterAddr(ctx, t) == replica.Addr
	})
	atFailover := c.ackedCount()
	// What the sentinel does within seconds: the old master replicates the
	// new one, which acknowledges no write before it has a replica.
	host, port, err := net.SplitHostPort(replica.Addr)
	require.NoError(t, err)
	require.NoError(t, master.Client(t).ReplicaOf(ctx, host, port).Err())
	waitFor(t, 45*time.Second, 5*time.Millisecond, "traffic did not resume after the failover", func() bool {
		return c.ackedCount() >= atFailover+40
	})
	reqs := c.finish()
	d.stop()

	assertExactlyOnce(t, tableRows(ctx, t, dsn), reqs)
	assertRedisDrained(ctx, t, replica.Client(t), prefix)
	t.Logf("%d requests acknowledged, %d before the failover; %d client-visible failed attempts",
		len(reqs), atFailover, c.failedCount())
}
