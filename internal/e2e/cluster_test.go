package e2e

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"

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
	const prefix = "{e2e-cluster}"
	f := startClusterDistro(t, prefix, time.Hour) // only the shutdown flush runs
	rdb, d := f.rdb, f.distro
	exp := newExpected()
	for seed := range 3 {
		sendLogs(ctx, t, d, 600, seed, exp)
		sendTraces(ctx, t, d, 300, seed, exp)
	}
	require.Equal(t, int64(2700), exp.events, "3 × (500 counted logs + 300 spans + 100 span events)")
	require.Positive(t, rdb.ZCard(ctx, prefix+":pending").Val(), "acknowledged counts are in the cluster")
	d.stop()

	assertFlushedExactly(ctx, t, rdb, f.dsn, prefix, exp)
	// Every key sits on the slot owner; no counter is left there.
	ownerClient := f.owner.Client(t)
	for _, pattern := range []string{prefix + ":counter:*", prefix + ":user:*"} {
		keys, err := ownerClient.Keys(ctx, pattern).Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "counters moved out")
	}
}

// TestDistroCountsAcrossSlotMigration moves the prefix's slot from one node
// to another (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE in small chunks,
// SETSLOT NODE), the way `redis-cli --cluster reshard` does, while clients
// keep sending and pg_flush keeps flushing. Every script declares a key that
// does not exist yet (the exporter's new batch marker, STAGE's new staging
// hash and claim), and Redis refuses a multi-key command with a missing key
// while its slot migrates (TRYAGAIN, or ASK and then TRYAGAIN on the
// importing node). So no script runs half on one node, in particular no
// STAGE pops members whose counters are still on the other node: both
// components retry until the slot has moved, and every acknowledged event
// must end up in PostgreSQL exactly once.
func TestDistroCountsAcrossSlotMigration(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const prefix = "{e2e-reshard}"
	f := startClusterDistro(t, prefix, 100*time.Millisecond) // flushes run during the move too
	cluster, rdb, d := f.cluster, f.rdb, f.distro
	src, dst := f.owner, f.seed

	// The requests are built up front (building one records what it must
	// count) and resent until acknowledged: a refused request counted
	// nothing, and a resend of one that did is recognized by its markers.
	exp := newExpected()
	const requests = 40
	type otlpRequest struct {
		path string
		body []byte
	}
	reqs := make([]otlpRequest, 0, requests)
	for seed := range requests / 2 {
		logs, err := plogotlp.NewExportRequestFromLogs(logsBatch(200, seed, exp)).MarshalProto()
		require.NoError(t, err)
		traces, err := ptraceotlp.NewExportRequestFromTraces(tracesBatch(100, seed, exp)).MarshalProto()
		require.NoError(t, err)
		reqs = append(reqs, otlpRequest{"/v1/logs", logs}, otlpRequest{"/v1/traces", traces})
	}
	sendCtx, cancelSend := context.WithTimeout(ctx, 90*time.Second)
	defer cancelSend()
	sent := make(chan int, requests) // index of each acknowledged request
	var senders sync.WaitGroup
	for w := range 2 {
		senders.Go(func() {
			for i := w; i < len(reqs); i += 2 {
				for sendCtx.Err() == nil {
					if d.send(sendCtx, reqs[i].path, reqs[i].body) == nil {
						sent <- i
						break
					}
					select { // a client's retry backoff
					case <-sendCtx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}

	// Let the first requests land on the old owner, then move the slot.
	for range 4 {
		select {
		case <-sent:
		case <-sendCtx.Done():
			t.Fatal("no request was acknowledged before the slot move")
		}
	}
	acked := 4
	moveSlot(ctx, t, cluster, src, dst, prefix, func() {
		// Between two chunks, wait for a request when one comes quickly,
		// so that traffic and flushes interleave with the move.
		select {
		case <-sent:
			acked++
		case <-time.After(50 * time.Millisecond):
		}
	})
	senders.Wait()
	close(sent)
	for range sent {
		acked++
	}
	require.NoError(t, sendCtx.Err(), "every request acknowledged in time")
	require.Equal(t, requests, acked)
	d.stop()

	assertFlushedExactly(ctx, t, rdb, f.dsn, prefix, exp)
	assert.Equal(t, dst, cluster.SlotOwner(ctx, t, prefix), "the slot moved")
	for _, n := range []*testservers.RedisServer{src, dst} {
		keys, err := n.Client(t).Keys(ctx, prefix+":counter:*").Result()
		require.NoError(t, err)
		assert.Empty(t, keys, "no counter left on %s", n.Addr)
	}
}

// moveSlot migrates key's slot from src to dst in chunks of a few keys,
// calling between after each chunk.
func moveSlot(ctx context.Context, t *testing.T, cluster *testservers.RedisCluster, src, dst *testservers.RedisServer, key string, between func()) {
	t.Helper()
	srcClient, dstClient := src.Client(t), dst.Client(t)
	slot := int(cluster.Client(t).ClusterKeySlot(ctx, key).Val())
	srcID, err := srcClient.ClusterMyID(ctx).Result()
	require.NoError(t, err)
	dstID, err := dstClient.ClusterMyID(ctx).Result()
	require.NoError(t, err)
	dstHost, dstPort, err := net.SplitHostPort(dst.Addr)
	require.NoError(t, err)

	require.NoError(t, dstClient.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	require.NoError(t, srcClient.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	between()
	for chunks := 0; ; chunks++ {
		require.Less(t, chunks, 10000, "the slot never emptied")
		keys, err := srcClient.ClusterGetKeysInSlot(ctx, slot, 3).Result()
		require.NoError(t, err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", dstHost, dstPort, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		require.NoError(t, srcClient.Do(ctx, args...).Err(), "MIGRATE %v", keys)
		between()
	}
	for _, n := range cluster.Nodes {
		require.NoError(t, n.Client(t).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	}
}

// clusterFixture is a private three-node Redis Cluster, a fresh database and
// the distro with the sample config (REDIS_CLUSTER=true), given as seed a node
// that does not serve the prefix's slot, so both components must follow the
// slot map.
type clusterFixture struct {
	cluster     *testservers.RedisCluster
	rdb         *redis.ClusterClient
	dsn         string
	owner, seed *testservers.RedisServer // the slot's owner at start, the seed node
	distro      *distro
}

func startClusterDistro(t *testing.T, prefix string, flushInterval time.Duration) *clusterFixture {
	t.Helper()
	f := &clusterFixture{cluster: testservers.StartRedisCluster(t, 3), dsn: testservers.FreshDatabase(t)}
	f.rdb = f.cluster.Client(t)
	f.owner = f.cluster.SlotOwner(t.Context(), t, prefix)
	f.seed = f.cluster.OtherNode(t, f.owner)
	f.distro = startDistro(t, distroEnv{
		RedisEndpoint: f.seed.Addr, PostgresDSN: f.dsn, KeyPrefix: prefix,
		FlushInterval: flushInterval,
		Env:           []string{"REDIS_CLUSTER=true"},
	})
	return f
}
