package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestDistroCountsThroughRedisCluster runs the sample config against a
// private three-node Redis Cluster (REDIS_CLUSTER=true, a hash-tagged
// prefix). The collector is given a seed node that does not serve the
// prefix's slot, so both components must follow the slot map; the shutdown
// flush must write exact rows and leave no counter, pending member or staging
// entry behind.
func TestDistroCountsThroughRedisCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster := testservers.StartRedisCluster(t, 3)
	rdb := cluster.Client(t)
	dsn := testservers.FreshDatabase(t)
	const prefix = "{e2e-cluster}"
	owner := cluster.SlotOwner(ctx, t, prefix)
	var seedNode string
	for _, addr := range cluster.Addrs() {
		if addr != owner.Addr {
			seedNode = addr
			break
		}
	}
	d := startDistro(t, distroEnv{
		RedisEndpoint: seedNode, PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // only the shutdown flush runs
		Env:           []string{"REDIS_CLUSTER=true"},
	})
	exp := newExpected()
	for seed := range 3 {
		sendLogs(ctx, t, d, 600, seed, exp)
		sendTraces(ctx, t, d, 300, seed, exp)
	}
	require.Equal(t, int64(2400), exp.events, "3 × (500 counted logs + 300 spans)")
	require.Positive(t, rdb.ZCard(ctx, prefix+":pending").Val(), "acknowledged counts are in the cluster")
	d.stop()

	assertFlushedExactly(ctx, t, rdb, dsn, prefix, exp)
	// Every key sits on the slot owner; no counter is left there.
	ownerClient := owner.Client(t)
	for _, pattern := range []string{prefix + ":counter:*", prefix + ":user:*"} {
		keys, err := ownerClient.Keys(ctx, pattern).Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "counters moved out")
	}
}
