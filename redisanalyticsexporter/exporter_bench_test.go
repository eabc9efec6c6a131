package redisanalyticsexporter

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"golang.org/x/sync/errgroup"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

const (
	benchBatchSize  = 8192
	benchEventTypes = 4
)

var benchUserCounts = []int{100, 1_000, 10_000}

// benchDay is the UTC day the benchmarks' records are stamped in:
// yesterday, inside the default max_event_age and never in the future (a
// fixed date would fall out of the time horizon and every record would be
// dropped as too old).
func benchDay() time.Time {
	return time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
}

// realisticLogs builds one batch of benchBatchSize records as an SDK would
// send it: a few resources (services), each with a scope and records carrying
// the event name, a user id and some unrelated attributes, timestamps spread
// over one UTC day (benchDay).
func realisticLogs(users int) plog.Logs {
	const n = benchBatchSize
	rng := rand.New(rand.NewPCG(1, uint64(users))) //nolint:gosec // deterministic test data
	types := [benchEventTypes]string{"page_view", "button_click", "generation_completed", "user_signup"}
	day := benchDay()
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
			// A random UUID-sized id, as an SDK that sets log.record.uid.
			attrs.PutStr("log.record.uid", strconv.FormatUint(rng.Uint64(), 16)+"-"+strconv.FormatUint(rng.Uint64(), 16))
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
	m := newMapper(cfg)
	for _, users := range benchUserCounts {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			ld := realisticLogs(users)
			c := newConverter()
			a := newAggregator(testSchema)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				req := c.logs(ld, &m, now.UnixNano())
				a.reset()
				a.fold(req, 0)
				_ = a.selectMarkers()
				a.finalize(&m)
				a.encode([]string{"b1"}, protocol.ApplyTTLs{Counter: 3600 * time.Second, BatchMarker: 370 * time.Second, ResourceMarker: 600 * time.Second},
					cfg.CardinalityLimits, nil)
			}
			b.ReportMetric(float64(b.N*ld.LogRecordCount())/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(a.numKeys()), "keys/batch")
		})
	}
}

// detailVariant is one setting of event details for the push-path
// benchmarks: what the config counts and what the records carry.
type detailVariant struct {
	name      string
	configure func(*Config)
	// decorate adds attributes to every record of ld.
	decorate func(ld plog.Logs)
}

// detailVariants are realisticLogs without details, then with two
// properties (model: 5 values, plan: 3 values) and one integer sum (tokens)
// on every record but not configured (the cost of the larger attribute
// maps alone), then configured: the cost of the details is the difference
// between the first and the last.
var detailVariants = []detailVariant{
	{name: "none", configure: func(*Config) {}, decorate: func(plog.Logs) {}},
	{name: "attributes-only", configure: func(*Config) {}, decorate: addBenchDetails},
	{name: "2props+1sum", configure: configureBenchDetails, decorate: addBenchDetails},
}

func configureBenchDetails(cfg *Config) {
	cfg.Properties = []PropertyConfig{{Attribute: "model"}, {Attribute: "plan", Default: "free"}}
	cfg.Sums = []SumConfig{{Attribute: "tokens"}}
}

// addBenchDetails puts model, plan and tokens on every record of ld, as a
// generative AI product's generation events carry them.
func addBenchDetails(ld plog.Logs) {
	rng := rand.New(rand.NewPCG(2, 3))
	models := [...]string{"gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-pro", "llama-3.1-70b"}
	plans := [...]string{"free", "pro", "team"}
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		sls := rls.At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				attrs := lrs.At(k).Attributes()
				attrs.PutStr("model", models[rng.IntN(len(models))])
				attrs.PutStr("plan", plans[rng.IntN(len(plans))])
				attrs.PutInt("tokens", 1+rng.Int64N(4000))
			}
		}
	}
}

// reportPerEvent adds events/s and ns/event for b.N batches of batchSize
// records.
func reportPerEvent(b *testing.B, batchSize int) {
	events := float64(b.N * batchSize)
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
}

// BenchmarkAggregateDetails is BenchmarkAggregate/users=100 for each of
// detailVariants (compare with benchstat -col /details).
func BenchmarkAggregateDetails(b *testing.B) {
	for _, v := range detailVariants {
		b.Run("details="+v.name, func(b *testing.B) {
			cfg := createDefaultConfig().(*Config)
			v.configure(cfg)
			m := newMapper(cfg)
			ld := realisticLogs(100)
			v.decorate(ld)
			c := newConverter()
			a := newAggregator(testSchema)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				req := c.logs(ld, &m, now.UnixNano())
				a.reset()
				a.fold(req, 0)
				_ = a.selectMarkers()
				a.finalize(&m)
				a.encode([]string{"b1"}, protocol.ApplyTTLs{Counter: 3600 * time.Second, BatchMarker: 370 * time.Second, ResourceMarker: 600 * time.Second},
					cfg.CardinalityLimits, nil)
			}
			reportPerEvent(b, ld.LogRecordCount())
			b.ReportMetric(float64(a.numKeys()), "keys/batch")
		})
	}
}

// BenchmarkPushLogsDetails is BenchmarkPushLogs/users=100 for each of
// detailVariants: the details' cost on the whole push, the script's extra
// counters and cardinality guards included (compare with benchstat -col
// /details).
func BenchmarkPushLogsDetails(b *testing.B) {
	for _, v := range detailVariants {
		b.Run("details="+v.name, func(b *testing.B) {
			cfg := createDefaultConfig().(*Config)
			cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
			v.configure(cfg)
			ld := realisticLogs(100)
			v.decorate(ld)
			pb := newPushBench(b, cfg)
			pb.pushOneAtATime(b, ld)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*ld.LogRecordCount()), "ns/event")
		})
	}
}

// BenchmarkPushLogs measures a push end to end through exporterhelper (queue
// off) against the shared Redis: aggregation plus the one script call, one
// batch at a time.
func BenchmarkPushLogs(b *testing.B) {
	for _, users := range benchUserCounts {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			cfg := createDefaultConfig().(*Config)
			cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
			newPushBench(b, cfg).pushOneAtATime(b, realisticLogs(users))
		})
	}
}

// BenchmarkPushLogsWaitReplicas is BenchmarkPushLogs/users=100 against a
// private master with one replica (both with AOF everysec, Redis' default
// for AOF), without and with wait_replicas: what waiting for the replica's
// acknowledgement adds to each push (the WAIT rides in the script's round
// trip; the replica has to receive and acknowledge the script's effects).
// Under `make bench` both servers inherit the benchmark's pin to one CPU.
func BenchmarkPushLogsWaitReplicas(b *testing.B) {
	aof := []string{"--appendfsync", "everysec"}
	master := testservers.StartRedis(b, aof...)
	testservers.StartRedisReplica(b, master, aof...)
	for _, wait := range []int{0, 1} {
		b.Run("wait_replicas="+strconv.Itoa(wait), func(b *testing.B) {
			cfg := createDefaultConfig().(*Config)
			cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
			cfg.Redis.WaitReplicas = wait
			pb := newPushBenchOn(b, cfg, master.Addr, "wait"+strconv.Itoa(wait))
			pb.pushOneAtATime(b, realisticLogs(100))
		})
	}
}

// queuedProducers is how many goroutines feed BenchmarkPushLogsQueued, as
// concurrent OTLP clients feed the receiver.
const queuedProducers = 4

// BenchmarkPushLogsQueued is BenchmarkPushLogs with the exporter settings of
// the sample config (testdata/config.yaml at the repository root: the
// default sending queue with wait_for_result, and group commit) and 4
// producers, as the distro runs it. With GOMAXPROCS=1 the CPU work of
// one batch overlaps the Redis call of another.
func BenchmarkPushLogsQueued(b *testing.B) {
	for _, users := range benchUserCounts {
		b.Run("users="+strconv.Itoa(users), func(b *testing.B) {
			cfg := sampleExporterConfig(b)
			// The bench reuses its batches; release_records would empty them.
			cfg.ReleaseRecords = false
			pb := newPushBench(b, cfg)
			batches := make(chan plog.Logs, queuedProducers)
			// Load the script and open the pool's connections with pushes in
			// parallel, so that no connection setup falls in the measurement.
			var warm errgroup.Group
			for range queuedProducers {
				ld := realisticLogs(users)
				pb.distinct(ld)
				warm.Go(func() error { return pb.le.ConsumeLogs(b.Context(), ld) })
				batches <- ld
			}
			require.NoError(b, warm.Wait())
			pb.cmds.n.Store(0)
			var pushed atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(queuedProducers) // × GOMAXPROCS goroutines
			b.RunParallel(func(pbt *testing.PB) {
				ld := <-batches // one batch per goroutine (SetParallelism makes at most queuedProducers×GOMAXPROCS)
				defer func() { batches <- ld }()
				for pbt.Next() {
					pb.distinct(ld)
					if err := pb.le.ConsumeLogs(b.Context(), ld); err != nil {
						b.Error(err)
						return
					}
					pushed.Add(1)
				}
			})
			// b.N counts batches; report per event as BenchmarkPushLogs does.
			if n := pushed.Load(); n != int64(b.N) && !b.Failed() {
				b.Fatalf("pushed %d batches, want %d", n, b.N)
			}
			pb.report(b, benchBatchSize)
		})
	}
}

// sampleExporterConfig reads the redis_analytics settings of the repository's
// sample config, for the values it spells out (the ${env:...} ones stay
// unresolved: cluster, sentinel, wait_replicas, username and password take
// their defaults here, and the caller sets the endpoint and key prefix).
// TestSampleExporterConfig keeps it in step with the file.
func sampleExporterConfig(tb testing.TB) *Config {
	tb.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("..", "testdata", "config.yaml"))
	require.NoError(tb, err)
	sub, err := cm.Sub("exporters::" + metadata.Type.String())
	require.NoError(tb, err)
	require.NoError(tb, sub.Merge(confmap.NewFromStringMap(map[string]any{
		"redis": map[string]any{
			"cluster": false, "wait_replicas": 0, "sentinel": map[string]any{"master_name": "", "endpoints": []string{}},
			"username": "", "password": "",
		},
	})))
	cfg := createDefaultConfig().(*Config)
	require.NoError(tb, sub.Unmarshal(cfg))
	require.True(tb, cfg.QueueConfig.HasValue(), "the sample config has a sending queue")
	return cfg
}

// pushBench is an exporter wired as the collector runs it (through
// exporterhelper), against the shared Redis under a fresh key prefix.
type pushBench struct {
	le   exporter.Logs
	cmds *commandCount
	// seq makes every push a new emission, not a resend of an earlier one:
	// one observed timestamp per resource entry changes (dedup.go).
	seq atomic.Uint64
}

func newPushBench(b *testing.B, cfg *Config) *pushBench {
	b.Helper()
	_, prefix := testservers.SharedRedis(b)
	return newPushBenchOn(b, cfg, testservers.RedisEndpoint(), prefix)
}

// newPushBenchOn is newPushBench against the Redis at endpoint, under prefix.
func newPushBenchOn(b *testing.B, cfg *Config, endpoint, prefix string) *pushBench {
	b.Helper()
	cfg.Redis.Endpoint = endpoint
	cfg.KeyPrefix = prefix
	set := exportertest.NewNopSettings(metadata.Type)
	e, err := newRedisAnalyticsExporter(cfg, set, signalLogs)
	require.NoError(b, err)
	pb := &pushBench{cmds: &commandCount{}}
	e.hooks = append(e.hooks, pb.cmds)
	pb.le, err = xexporterhelper.NewLogsRequest(b.Context(), set, e.convertLogs, e.push, e.helperOptions()...)
	require.NoError(b, err)
	require.NoError(b, pb.le.Start(b.Context(), componenttest.NewNopHost()))
	b.Cleanup(func() { require.NoError(b, pb.le.Shutdown(context.Background())) })
	return pb
}

// pushOneAtATime is the loop of BenchmarkPushLogs: ld pushed b.N times as a
// new emission each time, one push at a time.
func (pb *pushBench) pushOneAtATime(b *testing.B, ld plog.Logs) {
	pb.distinct(ld)
	require.NoError(b, pb.le.ConsumeLogs(b.Context(), ld)) // load the script, warm the pool
	pb.cmds.n.Store(0)
	b.ReportAllocs()
	for b.Loop() {
		pb.distinct(ld)
		if err := pb.le.ConsumeLogs(b.Context(), ld); err != nil {
			b.Fatal(err)
		}
	}
	pb.report(b, ld.LogRecordCount())
}

// distinct makes ld a new emission.
func (pb *pushBench) distinct(ld plog.Logs) {
	seq := strconv.FormatUint(pb.seq.Add(1), 10)
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		rls.At(i).ScopeLogs().At(0).LogRecords().At(0).Attributes().PutStr("log.record.uid", "distinct-"+seq)
	}
}

// report adds the per-event metrics, for b.N batches of batchSize records.
func (pb *pushBench) report(b *testing.B, batchSize int) {
	total := float64(b.N * batchSize)
	b.ReportMetric(total/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(pb.cmds.n.Load())/total, "commands/event")
	b.ReportMetric(float64(pb.cmds.n.Load())/float64(b.N), "round_trips/batch")
}

// commandCount is a go-redis hook counting the commands sent.
type commandCount struct{ n atomic.Int64 }

func (*commandCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// A new pooled connection's HELLO is not the exporter's work.
		if cmd.Name() != "hello" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *commandCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1) // one round trip
		return next(ctx, cmds)
	}
}
