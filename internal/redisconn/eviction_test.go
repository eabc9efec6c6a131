package redisconn

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestEvicting reads the memory settings of a real server: only a memory
// limit together with an evicting policy is reported, and logged as a
// warning.
func TestEvicting(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	admin := srv.Client(t)
	cfg := NewDefaultClientConfig()
	cfg.Endpoint = srv.Addr
	client := connect(t, &cfg)
	for _, tt := range []struct {
		maxMemory, policy string
		want              []Eviction
	}{
		{maxMemory: "0", policy: "noeviction"},
		{maxMemory: "0", policy: "allkeys-lru"}, // no limit: nothing is evicted
		{maxMemory: "64mb", policy: "noeviction"},
		{maxMemory: "64mb", policy: "allkeys-lru", want: []Eviction{{MaxMemory: "64.00M", Policy: "allkeys-lru"}}},
		{maxMemory: "64mb", policy: "volatile-ttl", want: []Eviction{{MaxMemory: "64.00M", Policy: "volatile-ttl"}}},
	} {
		require.NoError(t, admin.ConfigSet(ctx, "maxmemory", tt.maxMemory).Err())
		require.NoError(t, admin.ConfigSet(ctx, "maxmemory-policy", tt.policy).Err())
		got, err := Evicting(ctx, client)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got, "maxmemory %s, %s", tt.maxMemory, tt.policy)

		core, logs := observer.New(zapcore.DebugLevel)
		cfg.WarnIfEvicting(ctx, client, zap.New(core))
		warnings := logs.FilterLevelExact(zapcore.WarnLevel).All()
		require.Len(t, warnings, len(tt.want))
		if len(tt.want) > 0 {
			assert.Contains(t, warnings[0].Message, "set maxmemory-policy noeviction")
			assert.Equal(t, tt.policy, warnings[0].ContextMap()["maxmemory_policy"])
			assert.Equal(t, cfg.Describe(), warnings[0].ContextMap()["server"])
		}
	}
}

// TestEvictingInCluster asks every master: only the one with an evicting
// policy is reported, by address.
func TestEvictingInCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cluster := testservers.StartRedisCluster(t, 3)
	node := cluster.Nodes[1]
	require.NoError(t, node.Client(t).ConfigSet(ctx, "maxmemory", "64mb").Err())
	require.NoError(t, node.Client(t).ConfigSet(ctx, "maxmemory-policy", "allkeys-lfu").Err())
	cfg := NewDefaultClientConfig()
	cfg.Endpoint, cfg.Cluster = cluster.Nodes[0].Addr, true
	got, err := Evicting(ctx, connect(t, &cfg))
	require.NoError(t, err)
	assert.Equal(t, []Eviction{{Server: node.Addr, MaxMemory: "64.00M", Policy: "allkeys-lfu"}}, got)
}
