package redisanalyticsexporter

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadatatest"
)

// browserPageView is what a browser SDK sends for an event outside a span:
// a whole-millisecond timestamp, no trace or span ids, no record id. browser
// and path go to the resource and the record, so entries from different
// browsers differ only there.
func browserPageView(lrs plog.LogRecordSlice, path string) {
	lr := lrs.AppendEmpty()
	lr.SetEventName("page_view")
	lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord.Truncate(time.Millisecond)))
	lr.Attributes().PutStr("url.path", path)
}

// TestIdenticalEmissionsAllCount: N identical records without an identity,
// sent as N requests, as N resource entries of one request, or as N records
// of one entry, count N. Content cannot tell them from a resend, so none is
// dropped.
func TestIdenticalEmissionsAllCount(t *testing.T) {
	t.Parallel()
	const n = 1000
	shapes := map[string]func() []plog.Logs{
		"requests": func() []plog.Logs {
			out := make([]plog.Logs, n)
			for i := range out {
				out[i] = plog.NewLogs()
				rl := out[i].ResourceLogs().AppendEmpty()
				rl.Resource().Attributes().PutStr("host.name", "browser")
				browserPageView(rl.ScopeLogs().AppendEmpty().LogRecords(), "/")
			}
			return out
		},
		"resource entries": func() []plog.Logs {
			ld := plog.NewLogs()
			for range n {
				rl := ld.ResourceLogs().AppendEmpty()
				rl.Resource().Attributes().PutStr("host.name", "browser")
				browserPageView(rl.ScopeLogs().AppendEmpty().LogRecords(), "/")
			}
			return []plog.Logs{ld}
		},
		"records": func() []plog.Logs {
			ld := plog.NewLogs()
			lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
			for range n {
				browserPageView(lrs, "/")
			}
			return []plog.Logs{ld}
		},
	}
	for name, build := range shapes {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			client, prefix := testservers.SharedRedis(t)
			tel := componenttest.NewTelemetry()
			t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
			le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(tel),
				componenttest.NewNopHost(), nil)
			for _, ld := range build() {
				require.NoError(t, le.ConsumeLogs(t.Context(), ld))
			}
			want := counterKeys(prefix, "page_view", "", tsRecord, n)
			assert.Equal(t, want, counterValues(t, client, keysOf(want)))
			opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
			metadatatest.AssertEqualExporterRedisAnalyticsEventsWithoutIdentity(t, tel, []metricdata.DataPoint[int64]{
				{Value: n, Attributes: attribute.NewSet(attribute.String("signal", "logs"))},
			}, opts...)
			_, err := tel.GetMetric("otelcol_exporter_redis_analytics_events_dropped")
			require.Error(t, err, "nothing dropped")
		})
	}
}

// TestThreeBrowsersSameMillisecond: three anonymous page views from
// different browsers and pages in the same millisecond count three.
func TestThreeBrowsersSameMillisecond(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(componenttest.NewTelemetry()),
		componenttest.NewNopHost(), nil)
	for i, path := range []string{"/", "/pricing", "/"} {
		ld := plog.NewLogs()
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("host.name", "browser-"+strconv.Itoa(i))
		browserPageView(rl.ScopeLogs().AppendEmpty().LogRecords(), path)
		require.NoError(t, le.ConsumeLogs(t.Context(), ld))
	}
	want := counterKeys(prefix, "page_view", "", tsRecord, 3)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestIdenticalRecordsWithIdentitiesAllCount: identical content with
// distinct log.record.uid values are distinct emissions.
func TestIdenticalRecordsWithIdentitiesAllCount(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(componenttest.NewTelemetry()),
		componenttest.NewNopHost(), nil)
	const n = 1000
	for i := range n {
		ld := plog.NewLogs()
		lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		browserPageView(lrs, "/")
		lrs.At(0).Attributes().PutStr("log.record.uid", "uid-"+strconv.Itoa(i))
		require.NoError(t, le.ConsumeLogs(t.Context(), ld))
	}
	want := counterKeys(prefix, "page_view", "", tsRecord, n)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestExpiredCounterIsReported: a counter that expired before pg_flush moved
// it (its pending entry is still there) and is re-created by a later push
// is counted in counters_expired and logged as an error.
func TestExpiredCounterIsReported(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	core, logs := observer.New(zap.ErrorLevel)
	set := metadatatest.NewSettings(tel)
	set.Logger = zap.New(core)
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), set, componenttest.NewNopHost(), nil)

	require.NoError(t, le.ConsumeLogs(t.Context(), newLogs([]logRecord{{"view", "u1", tsRecord}})))
	want := counterKeys(prefix, "view", "u1", tsRecord, 1)
	require.Len(t, want, 3)
	// Two of the three counters expire: their keys go, their pending
	// entries stay (only the flusher's STAGE removes both).
	expired := keysOf(want)[:2]
	require.NoError(t, client.Del(t.Context(), expired...).Err())

	require.NoError(t, le.ConsumeLogs(t.Context(), newLogs([]logRecord{{"view", "u1", tsRecord}})))
	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsCountersExpired(t, tel, []metricdata.DataPoint[int64]{{Value: 2}}, opts...)
	require.Equal(t, 1, logs.Len())
	assert.Contains(t, logs.All()[0].Message, "expired")
	assert.Equal(t, int64(2), logs.All()[0].ContextMap()["counters"])

	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	assert.Equal(t, int64(3), client.ZCard(t.Context(), schema.PendingKey()).Val(), "one pending entry per counter")
}

// fakeFlusher stands for a pg_flush extension in the collector.
type fakeFlusher struct {
	component.StartFunc
	component.ShutdownFunc
	settings protocol.FlusherSettings
}

func (f fakeFlusher) FlusherSettings() protocol.FlusherSettings { return f.settings }

type extensionsHost map[component.ID]component.Component

func (h extensionsHost) GetExtensions() map[component.ID]component.Component { return h }

func TestStartWarnsAboutFlusherSettings(t *testing.T) {
	t.Parallel()
	flusherID := component.MustNewID("pg_flush")
	tests := []struct {
		name     string
		flusher  protocol.FlusherSettings
		ttl      time.Duration
		wantWarn string
	}{
		{"settings agree", protocol.FlusherSettings{KeyPrefix: "p", Interval: time.Minute}, time.Hour, ""},
		{"ttl too short", protocol.FlusherSettings{KeyPrefix: "p", Interval: time.Minute}, 5 * time.Minute, "ttl is not comfortably longer"},
		{"other key prefix", protocol.FlusherSettings{KeyPrefix: "other", Interval: time.Minute}, time.Hour, "No pg_flush extension"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, prefix := testservers.SharedRedis(t)
			cfg := testConfig(testservers.RedisEndpoint(), prefix)
			cfg.TTL = tt.ttl
			flusher := tt.flusher
			if flusher.KeyPrefix == "p" {
				flusher.KeyPrefix = prefix
			}
			core, logs := observer.New(zap.WarnLevel)
			set := metadatatest.NewSettings(componenttest.NewTelemetry())
			set.Logger = zap.New(core)
			startLogs(t, cfg, set, extensionsHost{flusherID: fakeFlusher{settings: flusher}}, nil)
			if tt.wantWarn == "" {
				assert.Zero(t, logs.Len(), logs.All())
				return
			}
			require.Equal(t, 1, logs.Len())
			assert.Contains(t, logs.All()[0].Message, tt.wantWarn)
		})
	}
}

func TestStartWarnsWhenAcknowledgingEarly(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		set      func(q *exporterhelper.QueueBatchConfig)
		wantWarn bool
	}{
		{"default", func(*exporterhelper.QueueBatchConfig) {}, false},
		{"wait_for_result off", func(q *exporterhelper.QueueBatchConfig) { q.WaitForResult = false }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, prefix := testservers.SharedRedis(t)
			cfg := testConfig(testservers.RedisEndpoint(), prefix)
			q := defaultQueueConfig()
			tt.set(&q)
			cfg.QueueConfig = configoptional.Some(q)
			core, logs := observer.New(zap.WarnLevel)
			set := metadatatest.NewSettings(componenttest.NewTelemetry())
			set.Logger = zap.New(core)
			startLogs(t, cfg, set, componenttest.NewNopHost(), nil)
			warned := logs.FilterMessageSnippet("wait_for_result is false").Len() == 1
			assert.Equal(t, tt.wantWarn, warned, logs.All())
		})
	}
}
