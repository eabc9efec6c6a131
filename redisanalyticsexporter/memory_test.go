package redisanalyticsexporter

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// TestPushWhenRedisIsFull: a Redis at maxmemory with noeviction refuses the
// push before it writes anything, with a retryable error; once memory is
// available again, the retry counts it once.
func TestPushWhenRedisIsFull(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t) // noeviction, redis-server's default
	admin := srv.Client(t)
	const prefix = "full"
	_, e := startLogs(t, testConfig(srv.Addr, prefix), exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
	want := expectedCounters(t, prefix)
	require.NoError(t, e.pushLogs(ctx, sampleLogs()))

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err()) // every write now exceeds it
	second := sampleLogs()
	setRecordIDs(second, "second push")
	keysBefore := admin.DBSize(ctx).Val()
	err := e.pushLogs(ctx, second)
	require.ErrorContains(t, err, "OOM command not allowed")
	assert.False(t, consumererror.IsPermanent(err), "retried, not dropped")
	assert.Equal(t, want, counterValues(t, admin, keysOf(want)), "nothing of the refused push was applied")
	assert.Equal(t, keysBefore, admin.DBSize(ctx).Val(), "no marker was set")

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "0").Err())
	require.NoError(t, e.pushLogs(ctx, second))
	assert.Equal(t, scaled(want, 2), counterValues(t, admin, keysOf(want)))
}

// TestStartWarnsWhenRedisMayEvict: a Redis that may evict keys at maxmemory
// is accepted, with a warning that says what it risks and what to set.
func TestStartWarnsWhenRedisMayEvict(t *testing.T) {
	t.Parallel()
	srv := testservers.StartRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")
	core, logs := observer.New(zapcore.InfoLevel)
	set := exportertest.NewNopSettings(metadata.Type)
	set.Logger = zap.New(core)
	startLogs(t, testConfig(srv.Addr, "evict"), set, componenttest.NewNopHost(), nil)
	warnings := logs.FilterMessageSnippet("set maxmemory-policy noeviction").All()
	require.Len(t, warnings, 1)
	assert.Equal(t, "volatile-lru", warnings[0].ContextMap()["maxmemory_policy"])
}
