package redisanalyticsexporter

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exportertest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// replicated starts a private master with one replica and returns them with
// a config for the master whose pushes wait for waitReplicas replicas, at
// most 2s each (generous: a loaded CI host must not fail the pushes
// that a replica does acknowledge).
func replicated(t *testing.T, prefix string, waitReplicas int) (master, replica *testservers.RedisServer, cfg *Config) {
	t.Helper()
	master = testservers.StartRedis(t)
	replica = testservers.StartRedisReplica(t, master)
	cfg = testConfig(master.Addr, prefix)
	cfg.Redis.WaitReplicas, cfg.Redis.WaitTimeout = waitReplicas, 2*time.Second
	return master, replica, cfg
}

// promote fails master over to replica: master dies with SIGKILL, replica
// stops replicating and takes writes.
func promote(t *testing.T, master, replica *testservers.RedisServer) {
	t.Helper()
	master.Kill()
	require.NoError(t, replica.Client(t).ReplicaOf(t.Context(), "NO", "ONE").Err())
}

// TestFailoverKeepsWhatWaitReplicasAcknowledged: a replica that was cut off
// from its master is promoted. Without wait_replicas, the push made while it
// was cut off was acknowledged and is lost; with wait_replicas, that push
// fails (retryably: the client resends it) and every acknowledged count is on
// the new master.
func TestFailoverKeepsWhatWaitReplicasAcknowledged(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		waitReplicas int
		wantAcked    bool
	}{
		{name: "wait_replicas 0", waitReplicas: 0, wantAcked: true},
		{name: "wait_replicas 1", waitReplicas: 1, wantAcked: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			const prefix = "failover"
			master, replica, cfg := replicated(t, prefix, tt.waitReplicas)
			_, e := startLogs(t, cfg,
				exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
			want := expectedCounters(t, prefix)
			require.NoError(t, e.pushLogs(ctx, sampleLogs()))
			require.Eventually(t, func() bool { // replicated (without WAIT too, given time)
				return assert.ObjectsAreEqual(want, counterValues(t, replica.Client(t), keysOf(want)))
			}, 10*time.Second, 10*time.Millisecond)

			// Cut the replica off (a network partition), then push.
			require.NoError(t, replica.Client(t).ReplicaOf(ctx, "NO", "ONE").Err())
			second := sampleLogs()
			setRecordIDs(second, "second push")
			err := e.pushLogs(ctx, second)
			if tt.wantAcked {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, redisconn.ErrNotReplicated)
				assert.False(t, consumererror.IsPermanent(err), "the client resends it")
			}
			assert.Equal(t, scaled(want, 2), counterValues(t, master.Client(t), keysOf(want)), "applied on the master either way")

			promote(t, master, replica)
			assert.Equal(t, want, counterValues(t, replica.Client(t), keysOf(want)))
			if tt.wantAcked {
				t.Log("without wait_replicas the acknowledged second push is lost on failover")
			}
		})
	}
}

// TestResendToAnotherCollectorWaitsForReplicas: a collector applies a push
// on the master and fails before its replica acknowledged it; the client
// resends to another collector (another connection), whose script finds
// every resource already counted. That collector must still not acknowledge
// before the replica has the first collector's write. Then the retry after
// the replica is back, and a failover: counted exactly once.
//
// Redis 7 makes WAIT cover the master's whole stream up to the client's
// last command, even a read, so this holds here without the TTL renewals of
// the script's dedup paths (checked: the test passes without them); they
// make it hold on servers that move a client's offset only when it writes.
func TestResendToAnotherCollectorWaitsForReplicas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const prefix = "resend"
	master, replica, cfg := replicated(t, prefix, 1)
	_, first := startLogs(t, cfg, exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
	_, second := startLogs(t, cfg, exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
	want := counterKeys(prefix, "x-evt", "", tsRecord, 7)

	replica.Pause() // acknowledges nothing until Resume
	require.ErrorIs(t, first.pushLogs(ctx, dedupLogs("x-evt", 3, 4)), redisconn.ErrNotReplicated)

	// The resend: every resource entry is already counted, nothing left to
	// apply, yet the replica has not acknowledged the first apply.
	resend := second.logsRequest(dedupLogs("x-evt", 3, 4))
	require.ErrorIs(t, second.push(ctx, resend), redisconn.ErrNotReplicated)

	replica.Resume()
	master.WaitReplicasAcked(t)
	require.NoError(t, second.push(ctx, resend)) // exporterhelper's retry
	assert.Equal(t, int64(len(resend.entries)), countExcluded(resend), "every entry found already counted")

	promote(t, master, replica)
	assert.Equal(t, want, counterValues(t, replica.Client(t), keysOf(want)))
}

func countExcluded(r *countsRequest) int64 {
	var n int64
	for _, en := range r.entries {
		if en.excluded {
			n++
		}
	}
	return n
}

// TestSentinelFailoversKeepAcknowledgedCounts follows the master through
// Redis Sentinel with wait_replicas 1: a failover that Sentinel carries out
// (SENTINEL FAILOVER), then the new master SIGKILLed and the old one promoted
// back, with no replica until the killed server returns as its replica.
// Each push is retried with the same request, as exporterhelper does, until
// it is acknowledged; every acknowledged push is on the final master once.
func TestSentinelFailoversKeepAcknowledgedCounts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const prefix, name = "sentinel", "analytics-master"
	master, replica, cfg := replicated(t, prefix, 1)
	sentinel := testservers.StartRedisSentinel(t, master, name, 1)
	cfg.Redis.Sentinel.MasterName = name
	cfg.Redis.Sentinel.Endpoints = []string{sentinel.Addr}
	require.NoError(t, cfg.Redis.Validate())
	_, e := startLogs(t, cfg, exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
	// pushUntilAcknowledged retries one request as exporterhelper does and
	// logs each new error on the way.
	pushUntilAcknowledged := func(batch string) {
		ld := sampleLogs()
		setRecordIDs(ld, batch)
		req := e.logsRequestCtx(ctx, ld)
		start, last := time.Now(), ""
		require.Eventually(t, func() bool {
			err := e.push(ctx, req)
			if err != nil && err.Error() != last {
				last = err.Error()
				t.Logf("%s, after %s: %v", batch, time.Since(start).Round(time.Millisecond), err)
			}
			return err == nil
		}, 60*time.Second, 50*time.Millisecond, batch)
		t.Logf("%s: acknowledged after %s", batch, time.Since(start).Round(time.Millisecond))
	}
	masterIs := func(want *testservers.RedisServer) func() bool {
		return func() bool { return sentinel.MasterAddr(ctx, t) == want.Addr }
	}

	pushUntilAcknowledged("before any failover")

	require.NoError(t, sentinel.Client(t).Failover(ctx, name).Err())
	start := time.Now()
	require.Eventually(t, masterIs(replica), 30*time.Second, 20*time.Millisecond)
	t.Logf("SENTINEL FAILOVER done in %s", time.Since(start).Round(time.Millisecond))
	// Until the old master replicates the new one, the new master has no
	// replica and acknowledges no push. Sentinel reconfigures it within
	// seconds (its 10s INFO period); doing it now keeps the test short.
	host, port, err := net.SplitHostPort(replica.Addr)
	require.NoError(t, err)
	require.NoError(t, master.Client(t).ReplicaOf(ctx, host, port).Err())
	pushUntilAcknowledged("after SENTINEL FAILOVER")

	replica.Kill()
	start = time.Now()
	require.Eventually(t, masterIs(master), 30*time.Second, 20*time.Millisecond)
	t.Logf("failover after SIGKILL done in %s", time.Since(start).Round(time.Millisecond))
	replica.Start() // --replicaof the first master: the replica of the master again
	pushUntilAcknowledged("after the new master died")

	want := scaled(expectedCounters(t, prefix), 3)
	assert.Equal(t, want, counterValues(t, master.Client(t), keysOf(want)))
}
