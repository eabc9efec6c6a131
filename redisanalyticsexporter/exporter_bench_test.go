package redisanalyticsexporter

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/otelcol-analytics/otelcol-analytics/internal/keyschema"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

const (
	benchBatchSize  = 8192
	benchEventTypes = 4
)

var benchUserCounts = []int{100, 1_000, 10_000}

// realisticLogs builds one batch as an SDK would send it: a few resources
// (services), each with a scope and records carrying the event name, a user
// id and some unrelated attributes, timestamps spread over one UTC day.
func realisticLogs(n, users int) plog.Logs {
	rng := rand.New(rand.NewPCG(1, uint64(users))) //nolint:gosec // deterministic test data
	types := [benchEventTypes]string{"page_view", "button_click", "generation_completed", "user_signup"}
	day := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	ld := plog.NewLogs()
	const resources = 4
	for r := range resources {
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("service.name", "web-"+strconv.Itoa(r))
		rl.Resource().Attributes().PutStr("service.version", "1.4.2")
		rl.Resource().Attributes().PutStr("deployment.environment.name", "production")
		sl := rl.ScopeLogs().AppendEmpty()
		sl.Scope().SetName("analytics")
		lrs := sl.LogRecords()
		lrs.EnsureCapacity(n / resources)
		for range n / resources {
			lr := lrs.AppendEmpty()
			lr.SetEventName(types[rng.IntN(len(types))])
			ts := day.Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
			lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(ts.Add(time.Second)))
			attrs := lr.Attributes()
			attrs.PutStr("session.id", "s-"+strconv.Itoa(rng.IntN(100_000)))
			attrs.PutStr("url.path", "/app/page/"+strconv.Itoa(rng.IntN(50)))
			attrs.PutStr("user.id", "user-"+strconv.Itoa(rng.IntN(users)))
			lr.Body().SetStr("analytics event")
		}
	}
	return ld
}

// BenchmarkAggregate measures the exporter's CPU work for one batch without
// I/O: the conversion of the OTLP request into counts (in the receiver's
// goroutine), then the push's aggregation and script arguments.
func BenchmarkAggregate(b *testing.B) {
	cfg := createDefaultConfig().(*Config)
	schema, err := keyschema.New(cfg.KeyPrefix)
	require.NoError(b, err)
	m := newMapper(cfg)
	for _, users := range benchUserCounts {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			ld := realisticLogs(benchBatchSize, users)
			c := newConverter()
			a := newAggregator()
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				req := c.logs(ld, &m, now.UnixNano())
				a.reset()
				a.fold(req)
				_ = a.selectMarkers()
				a.finalize(&m)
				a.encode(schema, 3600, now.UnixMilli(), 370, 600)
			}
			b.ReportMetric(float64(b.N*ld.LogRecordCount())/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(a.numKeys()), "keys/batch")
		})
	}
}

// BenchmarkPushLogs measures a push end to end through exporterhelper (queue
// off) against the shared Redis: aggregation plus the one script call.
func BenchmarkPushLogs(b *testing.B) {
	for _, users := range benchUserCounts {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			_, prefix := testservers.SharedRedis(b)
			cfg := createDefaultConfig().(*Config)
			cfg.ClientConfig.Endpoint = testservers.RedisEndpoint()
			cfg.KeyPrefix = prefix
			cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
			set := exportertest.NewNopSettings(metadata.Type)
			e, err := newRedisAnalyticsExporter(cfg, set, signalLogs)
			require.NoError(b, err)
			cmds := &commandCount{}
			e.hooks = append(e.hooks, cmds)
			le, err := xexporterhelper.NewLogsRequest(b.Context(), set, e.convertLogs, e.push, e.helperOptions()...)
			require.NoError(b, err)
			require.NoError(b, le.Start(b.Context(), componenttest.NewNopHost()))
			b.Cleanup(func() { require.NoError(b, le.Shutdown(context.Background())) })

			ld := realisticLogs(benchBatchSize, users)
			events := ld.LogRecordCount()
			ctx := b.Context()
			// Each push is a new emission, not a resend of the previous one:
			// one observed timestamp per resource entry changes (dedup.go).
			var seq pcommon.Timestamp
			distinct := func() {
				seq++
				rls := ld.ResourceLogs()
				for i := range rls.Len() {
					rls.At(i).ScopeLogs().At(0).LogRecords().At(0).SetObservedTimestamp(seq)
				}
			}
			distinct()
			require.NoError(b, le.ConsumeLogs(ctx, ld)) // load the script, warm the pool
			cmds.n.Store(0)
			b.ReportAllocs()
			for b.Loop() {
				distinct()
				if err := le.ConsumeLogs(ctx, ld); err != nil {
					b.Fatal(err)
				}
			}
			total := float64(b.N * events)
			b.ReportMetric(total/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(cmds.n.Load())/total, "commands/event")
			b.ReportMetric(float64(cmds.n.Load())/float64(b.N), "round_trips/batch")
		})
	}
}

// commandCount is a go-redis hook counting the commands sent.
type commandCount struct{ n atomic.Int64 }

func (*commandCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1) // one round trip
		return next(ctx, cmds)
	}
}
