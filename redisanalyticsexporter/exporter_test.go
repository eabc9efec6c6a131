package redisanalyticsexporter

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadatatest"
)

// testConfig is the default config pointed at endpoint and prefix, with a
// synchronous pipeline (no queue) and fast retries, and a TTL distinct from
// the default so the test can tell they were applied. Its horizon admits
// the test records, stamped in 2025.
func testConfig(endpoint, prefix string) *Config {
	cfg := createDefaultConfig().(*Config)
	cfg.Redis.Endpoint = endpoint
	cfg.KeyPrefix = prefix
	cfg.TTL = time.Hour
	cfg.MaxEventAge = maxHorizon
	cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
	cfg.RetryConfig.InitialInterval = 10 * time.Millisecond
	cfg.RetryConfig.MaxInterval = 100 * time.Millisecond
	cfg.RetryConfig.MaxElapsedTime = 30 * time.Second
	return cfg
}

// statusHost is a host that records the component status events it receives.
type statusHost struct {
	mu     sync.Mutex
	events []componentstatus.Status
}

var (
	_ component.Host           = (*statusHost)(nil)
	_ componentstatus.Reporter = (*statusHost)(nil)
)

func (*statusHost) GetExtensions() map[component.ID]component.Component { return nil }

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev.Status())
}

func (h *statusHost) statuses() []componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]componentstatus.Status(nil), h.events...)
}

// evalRecorder is a go-redis hook that records the script calls (in the
// order they end, without the EVALSHA that a NOSCRIPT turns into EVAL) and
// can fail them: before (the script never runs) or after (the script ran,
// its reply is "lost").
type evalRecorder struct {
	mu    sync.Mutex
	calls [][]any // args of each EVALSHA/EVAL
	// failBefore and failAfter fail that many upcoming script calls.
	failBefore, failAfter atomic.Int32
	failed                atomic.Int32 // script calls that returned an error
}

var errLostReply = errors.New("test: reply lost")

func (*evalRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (*evalRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (r *evalRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		name := cmd.Name()
		if name != "evalsha" && name != "eval" {
			return next(ctx, cmd)
		}
		if r.failBefore.Add(-1) >= 0 {
			r.record(cmd)
			r.failed.Add(1)
			cmd.SetErr(errLostReply)
			return errLostReply
		}
		r.failBefore.Store(0)
		err := next(ctx, cmd)
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			// A Redis that does not know the script yet (go-redis then
			// sends EVAL): not a call of the exporter's.
			return err
		}
		r.record(cmd)
		if err == nil && r.failAfter.Add(-1) >= 0 {
			r.failed.Add(1)
			cmd.SetErr(errLostReply)
			return errLostReply
		}
		r.failAfter.Store(0)
		if err != nil && !errors.Is(err, redis.Nil) {
			r.failed.Add(1)
		}
		return err
	}
}

func (r *evalRecorder) record(cmd redis.Cmder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, append([]any(nil), cmd.Args()...))
}

func (r *evalRecorder) scriptCalls() [][]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]any(nil), r.calls...)
}

// scriptKeys returns the KEYS of a recorded script call.
func scriptKeys(t *testing.T, args []any) []string {
	t.Helper()
	require.GreaterOrEqual(t, len(args), 3)
	n, err := strconv.Atoi(fmt.Sprint(args[2]))
	require.NoError(t, err)
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprint(args[3+i])
	}
	return keys
}

// scriptLayout reads a recorded script call back.
func scriptLayout(t *testing.T, args []any) protocol.ApplyLayout {
	t.Helper()
	keys := scriptKeys(t, args)
	l, err := protocol.ParseApplyArgs(keys, args[3+len(keys):])
	require.NoError(t, err)
	return l
}

// scriptMarkers returns the number of resource markers of a recorded script call.
func scriptMarkers(t *testing.T, args []any) int {
	t.Helper()
	return len(scriptLayout(t, args).Markers)
}

// scriptIncrements returns a recorded script call as its parts before the
// counters, and a map of counter key -> increment, which does not depend on
// the order of keys and guards.
func scriptIncrements(t *testing.T, args []any) scriptCall {
	t.Helper()
	l := scriptLayout(t, args)
	incrs := make(map[string]int64, len(l.Counters))
	for _, c := range l.Counters {
		incrs[c.Key] = c.Incr
	}
	l.Counters = nil
	slices.SortFunc(l.Guards, func(a, b protocol.LaidOutGuard) int {
		return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.Member, b.Member))
	})
	return scriptCall{fixed: l, incrs: incrs}
}

type scriptCall struct {
	fixed protocol.ApplyLayout
	incrs map[string]int64
}

// startLogs builds the logs exporter with the factory's wiring
// (helperOptions), lets setup adjust the inner exporter (hooks, clock), and
// starts it on host.
func startLogs(t *testing.T, cfg *Config, set exporter.Settings, host component.Host, setup func(*redisAnalyticsExporter)) (exporter.Logs, *redisAnalyticsExporter) {
	t.Helper()
	e, err := newRedisAnalyticsExporter(cfg, set, signalLogs)
	require.NoError(t, err)
	if setup != nil {
		setup(e)
	}
	le, err := xexporterhelper.NewLogsRequest(t.Context(), set, e.convertLogs, e.push, e.helperOptions()...)
	require.NoError(t, err)
	require.NoError(t, le.Start(t.Context(), host))
	t.Cleanup(func() { assert.NoError(t, le.Shutdown(context.Background())) })
	return le, e
}

// fixedClock returns a settable clock for redisAnalyticsExporter.now.
func fixedClock(t time.Time) (now func() time.Time, set func(time.Time)) {
	var mu sync.Mutex
	return func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return t
		}, func(nt time.Time) {
			mu.Lock()
			defer mu.Unlock()
			t = nt
		}
}

// counterValues reads keys from Redis; a missing key reads as 0.
func counterValues(t *testing.T, client *redis.Client, keys []string) map[string]int64 {
	t.Helper()
	out := make(map[string]int64, len(keys))
	for _, k := range keys {
		v, err := client.Get(t.Context(), k).Int64()
		if errors.Is(err, redis.Nil) {
			out[k] = 0
			continue
		}
		require.NoError(t, err, k)
		out[k] = v
	}
	return out
}

func keysOf(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// scaled multiplies every count of want by n.
func scaled(want map[string]int64, n int64) map[string]int64 {
	out := make(map[string]int64, len(want))
	for k, v := range want {
		out[k] = v * n
	}
	return out
}

// expectedCounters is what sampleLogs(prefix) must produce.
func expectedCounters(t *testing.T, prefix string) map[string]int64 {
	t.Helper()
	s, err := protocol.New(prefix)
	require.NoError(t, err)
	hour := protocol.HourOf(tsRecord)
	day := hour - hour%24
	return map[string]int64{
		s.Key(protocol.Counter{Family: protocol.Daily, EventType: "page_view", Hour: day}):                    5,
		s.Key(protocol.Counter{Family: protocol.Hourly, EventType: "page_view", Hour: hour}):                  3,
		s.Key(protocol.Counter{Family: protocol.Hourly, EventType: "page_view", Hour: hour + 1}):              2,
		s.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "page_view", UserID: "u1", Hour: day}):  4,
		s.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "page_view", UserID: "u:2", Hour: day}): 1,
		s.Key(protocol.Counter{Family: protocol.Daily, EventType: "signup", Hour: day}):                       1,
		s.Key(protocol.Counter{Family: protocol.Hourly, EventType: "signup", Hour: hour}):                     1,
		s.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "signup", UserID: "u1", Hour: day}):     1,
	}
}

// sampleSeq makes every sampleLogs and sampleTraces call distinct emissions:
// two calls are two emissions, not a resend (see dedup.go).
var sampleSeq atomic.Uint64

// sampleLogs: 5 page_view (4 by u1, 1 by "u:2"; 3 at 09:xx, 2 at 10:xx), one
// signup by u1 (user on the resource), and one record without event type.
// Each call's records carry their own log.record.uid.
func sampleLogs() plog.Logs {
	at := tsRecord
	later := tsRecord.Add(time.Hour)
	ld := newLogs(
		[]logRecord{{"page_view", "u1", at}, {"page_view", "u1", at}, {"page_view", "u:2", later}},
		[]logRecord{{"page_view", "u1", at}, {"page_view", "u1", later}, {"", "u1", at}},
	)
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("user.id", "u1")
	lr := rl.ScopeLogs().AppendEmpty().LogRecords().AppendEmpty()
	lr.SetEventName("signup")
	lr.SetTimestamp(pcommon.NewTimestampFromTime(at))
	setRecordIDs(ld, "sample-"+strconv.FormatUint(sampleSeq.Add(1), 10))
	return ld
}

// setRecordIDs gives every record of ld a log.record.uid under prefix, as
// an SDK that sets it does: records of calls with different prefixes are
// distinct emissions, the same prefix again makes a resend.
func setRecordIDs(ld plog.Logs, prefix string) {
	rls := ld.ResourceLogs()
	for i := range rls.Len() {
		sls := rls.At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lrs.At(k).Attributes().PutStr("log.record.uid", fmt.Sprintf("%s/%d/%d/%d", prefix, i, j, k))
			}
		}
	}
}

// sampleTraces: the same events as sampleLogs, as spans.
// Each call's spans carry their own trace id and span ids.
func sampleTraces() ptrace.Traces {
	td := ptrace.NewTraces()
	seq := sampleSeq.Add(1)
	var n byte
	add := func(rs ptrace.ResourceSpans, name, user string, at time.Time) {
		span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		span.SetName(name)
		var tid [16]byte
		binary.BigEndian.PutUint64(tid[:8], seq)
		span.SetTraceID(tid)
		n++
		span.SetSpanID([8]byte{1, n})
		if user != "" {
			span.Attributes().PutStr("enduser.id", user)
		}
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(at))
	}
	at, later := tsRecord, tsRecord.Add(time.Hour)
	rs := td.ResourceSpans().AppendEmpty()
	add(rs, "page_view", "u1", at)
	add(rs, "page_view", "u1", at)
	add(rs, "page_view", "u:2", later)
	add(rs, "page_view", "u1", at)
	add(rs, "page_view", "u1", later)
	add(rs, "", "u1", at)
	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("user.id", "u1")
	add(rs2, "signup", "", at)
	return td
}

func TestFactoryExportersCountIntoRedis(t *testing.T) {
	t.Parallel()
	for _, signal := range []string{signalLogs, signalTraces} {
		t.Run(signal, func(t *testing.T) {
			t.Parallel()
			client, prefix := testservers.SharedRedis(t)
			// Redis knows the script before the first push, so that no
			// EVALSHA gets NOSCRIPT (and an EVAL) whatever ran before: two
			// pushes are exactly two commands.
			require.NoError(t, protocol.LoadApplyScript(t.Context(), client))
			cfg := testConfig(testservers.RedisEndpoint(), prefix)
			cfg.QueueConfig = configoptional.Some(exporterhelper.NewDefaultQueueConfig())
			cfg.QueueConfig.Get().WaitForResult = true
			tel := componenttest.NewTelemetry()
			t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
			set := metadatatest.NewSettings(tel)

			before := time.Now().UnixMilli()
			var c component.Component
			var consume func() error
			switch signal {
			case signalLogs:
				le, err := NewFactory().CreateLogs(t.Context(), set, cfg)
				require.NoError(t, err)
				c, consume = le, func() error { return le.ConsumeLogs(t.Context(), sampleLogs()) }
			default:
				te, err := NewFactory().CreateTraces(t.Context(), set, cfg)
				require.NoError(t, err)
				c, consume = te, func() error { return te.ConsumeTraces(t.Context(), sampleTraces()) }
			}
			require.NoError(t, c.Start(t.Context(), componenttest.NewNopHost()))
			require.NoError(t, consume())
			require.NoError(t, consume())
			require.NoError(t, c.Shutdown(t.Context()))
			after := time.Now().UnixMilli()

			want := scaled(expectedCounters(t, prefix), 2)
			assert.Equal(t, want, counterValues(t, client, keysOf(want)))

			ctx := t.Context()
			for key := range want {
				ttl, err := client.TTL(ctx, key).Result()
				require.NoError(t, err)
				assert.Greater(t, ttl, time.Duration(0), key)
				assert.LessOrEqual(t, ttl, cfg.TTL, key)
			}

			schema, err := protocol.New(prefix)
			require.NoError(t, err)
			pending, err := client.ZRangeWithScores(ctx, schema.PendingKey(), 0, -1).Result()
			require.NoError(t, err)
			members := make([]string, 0, len(pending))
			families := map[protocol.Family]int{}
			for _, z := range pending {
				member, ok := z.Member.(string)
				require.True(t, ok)
				members = append(members, member)
				c, parseErr := schema.Parse(member)
				require.NoError(t, parseErr)
				families[c.Family]++
				assert.GreaterOrEqual(t, int64(z.Score), before)
				assert.LessOrEqual(t, int64(z.Score), after)
			}
			assert.ElementsMatch(t, keysOf(want), members)
			assert.Equal(t, map[protocol.Family]int{protocol.Daily: 2, protocol.Hourly: 3, protocol.UserDaily: 3}, families)

			// Every other key under the prefix is a batch marker, a resource
			// marker or the day's set of event types, with a TTL.
			all, err := client.Keys(ctx, prefix+":*").Result()
			require.NoError(t, err)
			batchMarkers, resMarkers := 0, 0
			for _, k := range all {
				if _, isCounter := want[k]; isCounter || k == schema.PendingKey() {
					continue
				}
				maxTTL := cfg.batchMarkerTTL()
				switch {
				case strings.HasPrefix(k, schema.ResourceKey("")):
					resMarkers++
					maxTTL = cfg.DedupWindow
				case strings.HasPrefix(k, prefix+":seen:types:"):
					maxTTL = cfg.guardTTL()
				default:
					require.True(t, strings.HasPrefix(k, schema.BatchKey("")), k)
					batchMarkers++
				}
				ttl, err := client.TTL(ctx, k).Result()
				require.NoError(t, err)
				assert.Greater(t, ttl, time.Duration(0), k)
				assert.LessOrEqual(t, ttl, maxTTL, k)
			}
			assert.Equal(t, 2, batchMarkers, "one batch marker per push")
			wantRes := 2 * 3 // logs: three resource entries
			if signal == signalTraces {
				wantRes = 2 * 2
			}
			assert.Equal(t, wantRes, resMarkers, "one marker per resource entry and push")

			opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
			metadatatest.AssertEqualExporterRedisAnalyticsEvents(t, tel, []metricdata.DataPoint[int64]{
				{Value: 12, Attributes: attribute.NewSet(attribute.String("signal", signal))},
			}, opts...)
			metadatatest.AssertEqualExporterRedisAnalyticsEventsDropped(t, tel, []metricdata.DataPoint[int64]{
				{Value: 2, Attributes: attribute.NewSet(attribute.String("signal", signal), attribute.String("reason", "missing_event_type"))},
			}, opts...)
			metadatatest.AssertEqualExporterRedisAnalyticsRedisCommands(t, tel, []metricdata.DataPoint[int64]{{Value: 2}}, opts...) // one EVALSHA per push
			metadatatest.AssertEqualExporterRedisAnalyticsKeysWritten(t, tel, []metricdata.HistogramDataPoint[int64]{{
				Count: 2, Sum: 16, Min: metricdata.NewExtrema[int64](8), Max: metricdata.NewExtrema[int64](8),
				Bounds:       []float64{1, 10, 100, 1000, 10000, 100000},
				BucketCounts: []uint64{0, 2, 0, 0, 0, 0, 0},
			}}, opts...)
		})
	}
}

func TestOneScriptCallWithOneIncrementPerDistinctKey(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	rec := &evalRecorder{}
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })

	const n = 5000
	records := make([]logRecord, n)
	for i := range records {
		records[i] = logRecord{"click", "u" + strconv.Itoa(i%3), tsRecord}
	}
	require.NoError(t, le.ConsumeLogs(t.Context(), newLogs(records)))

	calls := rec.scriptCalls()
	require.Len(t, calls, 1, "one round trip per push")
	l := scriptLayout(t, calls[0])
	require.Empty(t, l.Markers, "records without identity: no marker")
	require.Len(t, l.Counters, 2+3, "daily + hourly + 3 users")
	seen := map[string]bool{}
	counterKeys := make([]string, len(l.Counters))
	for i, c := range l.Counters {
		assert.False(t, seen[c.Key], "key %q sent twice", c.Key)
		seen[c.Key] = true
		counterKeys[i] = c.Key
	}
	// One increment per key, summing to n per family.
	got := counterValues(t, client, counterKeys)
	var users int64
	for i, k := range counterKeys {
		assert.Equal(t, l.Counters[i].Incr, got[k], k)
		if i >= 2 {
			users += got[k]
		}
	}
	assert.Equal(t, int64(n), users)
}

func TestRetryAfterLostReplyCountsOnce(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	rec := &evalRecorder{}
	rec.failAfter.Store(1) // the first script call applies, then its reply is "lost"
	host := &statusHost{}
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(tel), host,
		func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })

	// exporterhelper's retry sender calls the pusher again with the same request.
	require.NoError(t, le.ConsumeLogs(t.Context(), sampleLogs()))

	want := expectedCounters(t, prefix)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)), "counted exactly once")
	calls := rec.scriptCalls()
	require.Len(t, calls, 2, "first attempt + one retry")
	assert.Equal(t, scriptIncrements(t, calls[0]), scriptIncrements(t, calls[1]),
		"the retry resends the same batch id, keys, increments and clock (keys in map order)")
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, host.statuses())

	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsBatchesDeduplicated(t, tel, []metricdata.DataPoint[int64]{{Value: 1}}, opts...)
	metadatatest.AssertEqualExporterRedisAnalyticsRedisErrors(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.Bool("retryable", true))},
	}, opts...)
	metadatatest.AssertEqualExporterRedisAnalyticsEvents(t, tel, []metricdata.DataPoint[int64]{
		{Value: 6, Attributes: attribute.NewSet(attribute.String("signal", "logs"))},
	}, opts...)
	// Drops are recorded once: not by the first attempt, which failed with a
	// retryable error, but by the retry that ended the push (deduplicated).
	metadatatest.AssertEqualExporterRedisAnalyticsEventsDropped(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.String("signal", "logs"), attribute.String("reason", "missing_event_type"))},
	}, opts...)
}

func TestRetryKeepsClockForRecordsWithoutTimestamp(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	rec := &evalRecorder{}
	rec.failAfter.Store(1)
	now, setNow := fixedClock(tsNow)
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) {
			e.hooks = append(e.hooks, rec)
			e.now = now
		})
	ld := plog.NewLogs()
	ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords().AppendEmpty().SetEventName("tick")

	// Call the pusher as exporterhelper's retry sender does: same request, later clock.
	redisBefore, err := client.Time(t.Context()).Result()
	require.NoError(t, err)
	req := e.logsRequest(ld)
	err = e.push(t.Context(), req)
	require.ErrorIs(t, err, errLostReply)
	assert.False(t, consumererror.IsPermanent(err))
	setNow(tsNow.Add(90 * time.Second)) // next hour and day, within the batch marker TTL
	require.NoError(t, e.push(t.Context(), req))

	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	hour := protocol.HourOf(tsNow)
	want := map[string]int64{
		schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "tick", Hour: hour - hour%24}): 1,
		schema.Key(protocol.Counter{Family: protocol.Hourly, EventType: "tick", Hour: hour}):          1,
	}
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
	calls := rec.scriptCalls()
	require.Len(t, calls, 2)
	assert.Equal(t, scriptIncrements(t, calls[0]), scriptIncrements(t, calls[1]))
	// The pending score is Redis' clock when the first attempt was applied,
	// whatever the collector's clock says.
	redisAfter, err := client.Time(t.Context()).Result()
	require.NoError(t, err)
	score, err := client.ZScore(t.Context(), schema.PendingKey(), keysOf(want)[0]).Result()
	require.NoError(t, err)
	assert.GreaterOrEqual(t, score, float64(redisBefore.UnixMilli()))
	assert.LessOrEqual(t, score, float64(redisAfter.UnixMilli()))
}

func TestWrongTypeIsPermanentAndChangesNothing(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	ctx := t.Context()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(tel),
		componenttest.NewNopHost(), nil)

	want := expectedCounters(t, prefix)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	hour := protocol.HourOf(tsRecord)
	day := hour - hour%24
	existing := schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "page_view", Hour: day})
	broken := schema.Key(protocol.Counter{Family: protocol.UserDaily, EventType: "signup", UserID: "u1", Hour: day})
	// Daily keys are sent first and user keys last, so the failing INCRBY
	// comes after increments that must be undone: one of an existing key
	// (DECRBY back to 7, no TTL added) and several of new keys (deleted).
	require.NoError(t, client.Set(ctx, existing, 7, 0).Err())
	require.NoError(t, client.HSet(ctx, broken, "not", "a counter").Err())

	err = le.ConsumeLogs(ctx, sampleLogs())
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err), "WRONGTYPE recurs: %v", err)
	require.ErrorContains(t, err, "WRONGTYPE")
	require.ErrorContains(t, err, broken)

	for key := range want {
		switch key {
		case existing:
			v, getErr := client.Get(ctx, existing).Int64()
			require.NoError(t, getErr)
			assert.Equal(t, int64(7), v)
			assert.Equal(t, time.Duration(-1), client.TTL(ctx, existing).Val(), "no TTL was added")
		case broken:
			assert.Equal(t, "hash", client.Type(ctx, broken).Val())
		default:
			assert.Zero(t, client.Exists(ctx, key).Val(), "%s was created", key)
		}
	}
	assert.Zero(t, client.Exists(ctx, schema.PendingKey()).Val(), "nothing became pending")
	markers, err := client.Keys(ctx, schema.BatchKey("*")).Result()
	require.NoError(t, err)
	assert.Empty(t, markers, "the batch marker was removed, so a later attempt is not skipped")

	metadatatest.AssertEqualExporterRedisAnalyticsRedisErrors(t, tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(attribute.Bool("retryable", false))},
	}, metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars())

	// Once the key is repaired the same data is counted in full.
	require.NoError(t, client.Del(ctx, broken).Err())
	require.NoError(t, le.ConsumeLogs(ctx, sampleLogs()))
	want[existing] += 7
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

func TestPendingKeyOfWrongTypeIsPermanent(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), nil)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	require.NoError(t, client.SAdd(t.Context(), schema.PendingKey(), "legacy").Err())

	err = le.ConsumeLogs(t.Context(), sampleLogs())
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err))
	require.ErrorContains(t, err, "pending set holds a set")
	want := expectedCounters(t, prefix)
	assert.Equal(t, scaled(want, 0), counterValues(t, client, keysOf(want)))
}

func TestShutdownIsSafe(t *testing.T) {
	t.Parallel()
	e, err := newRedisAnalyticsExporter(createDefaultConfig().(*Config), exportertest.NewNopSettings(metadata.Type), signalLogs)
	require.NoError(t, err)
	require.NoError(t, e.shutdown(t.Context()), "without start")
	require.NoError(t, e.shutdown(t.Context()), "twice")
	require.ErrorIs(t, e.pushLogs(t.Context(), sampleLogs()), errNotStarted)
}

func TestRedisKilledMidRun(t *testing.T) {
	t.Parallel()
	srv := testservers.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	rec := &evalRecorder{}
	host := &statusHost{}
	le, e := startLogs(t, testConfig(srv.Addr, "analytics"), exportertest.NewNopSettings(metadata.Type), host,
		func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })
	ctx := t.Context()

	require.NoError(t, le.ConsumeLogs(ctx, sampleLogs()))
	srv.Kill()

	// The pusher reports a retryable error while Redis is down.
	down := e.logsRequest(sampleLogs())
	err := e.push(ctx, down)
	require.Error(t, err)
	assert.False(t, consumererror.IsPermanent(err), "connection errors are retried: %v", err)
	require.NotEmpty(t, down.batchID, "the failed push keeps its batch id for the retry")
	downID := down.batchID

	// Through exporterhelper: the push keeps retrying until Redis is back.
	failedBefore := rec.failed.Load()
	done := make(chan error, 1)
	go func() { done <- le.ConsumeLogs(ctx, sampleLogs()) }()
	require.Eventually(t, func() bool { return rec.failed.Load() > failedBefore }, 10*time.Second, 5*time.Millisecond)
	srv.Start() // empty script cache: EVALSHA gets NOSCRIPT, Run falls back to EVAL
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the retried push did not finish after Redis came back")
	}
	// exporterhelper would retry `down` with the same value too.
	require.NoError(t, e.push(ctx, down))
	assert.Equal(t, downID, down.batchID)

	want := scaled(expectedCounters(t, "analytics"), 3)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)), "AOF kept the first push; the others counted once")
	statuses := host.statuses()
	require.NotEmpty(t, statuses)
	assert.Equal(t, componentstatus.StatusRecoverableError, statuses[0])
	assert.Equal(t, componentstatus.StatusOK, statuses[len(statuses)-1])
}

func TestClassifyRedisError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err       error
		permanent bool
	}{
		{errors.New("dial tcp: connection refused"), false},
		{context.DeadlineExceeded, false},
		{redis.ErrPoolTimeout, false},
		{redisError("LOADING Redis is loading the dataset in memory"), false},
		{redisError("BUSY Redis is busy running a script"), false},
		{redisError("OOM command not allowed when used memory > 'maxmemory'"), false},
		{redisError(protocol.AbortPrefix + " k: WRONGTYPE Operation against a key holding the wrong kind of value"), true},
		{redisError("NOAUTH Authentication required."), true},
		{redisError("WRONGPASS invalid username-password pair"), true},
		{redisError("NOPERM this user has no permissions to run the 'evalsha' command"), true},
	}
	for _, tt := range tests {
		err := classifyRedisError(tt.err)
		assert.Equal(t, tt.permanent, consumererror.IsPermanent(err), tt.err.Error())
		assert.ErrorIs(t, err, tt.err)
	}
}

// redisError is a server error reply as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}

func TestConcurrentPushes(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	queue := exporterhelper.NewDefaultQueueConfig()
	queue.NumConsumers = 4
	queue.WaitForResult = true
	cfg.QueueConfig = configoptional.Some(queue)
	le, err := NewFactory().CreateLogs(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, le.Start(t.Context(), componenttest.NewNopHost()))

	const goroutines, pushes = 8, 5
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range pushes {
				assert.NoError(t, le.ConsumeLogs(t.Context(), sampleLogs()))
			}
		})
	}
	wg.Wait()
	require.NoError(t, le.Shutdown(t.Context()))

	want := scaled(expectedCounters(t, prefix), goroutines*pushes)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

func TestReleaseRecords(t *testing.T) {
	t.Parallel()
	for _, release := range []bool{false, true} {
		t.Run(fmt.Sprintf("release_records=%v", release), func(t *testing.T) {
			t.Parallel()
			client, prefix := testservers.SharedRedis(t)
			cfg := testConfig(testservers.RedisEndpoint(), prefix)
			cfg.ReleaseRecords = release
			queue := exporterhelper.NewDefaultQueueConfig()
			queue.WaitForResult = true
			cfg.QueueConfig = configoptional.Some(queue)
			f := NewFactory()
			le, err := f.CreateLogs(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
			require.NoError(t, err)
			te, err := f.CreateTraces(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
			require.NoError(t, err)
			assert.Equal(t, release, le.Capabilities().MutatesData)
			assert.Equal(t, release, te.Capabilities().MutatesData)
			require.NoError(t, le.Start(t.Context(), componenttest.NewNopHost()))
			t.Cleanup(func() { assert.NoError(t, le.Shutdown(context.Background())) })
			require.NoError(t, te.Start(t.Context(), componenttest.NewNopHost()))
			t.Cleanup(func() { assert.NoError(t, te.Shutdown(context.Background())) })

			ld := sampleLogs()
			records := ld.LogRecordCount()
			require.NoError(t, le.ConsumeLogs(t.Context(), ld))
			td := dedupTraces("span-evt", 3)
			require.NoError(t, te.ConsumeTraces(t.Context(), td))

			want := expectedCounters(t, prefix)
			maps.Copy(want, counterKeys(prefix, "span-evt", "", tsRecord, 3))
			assert.Equal(t, want, counterValues(t, client, keysOf(want)), "counted in full either way")
			if release {
				assert.Zero(t, ld.LogRecordCount(), "the records were released once counted")
				assert.Zero(t, td.SpanCount())
			} else {
				assert.Equal(t, records, ld.LogRecordCount(), "the input is left as it was")
				assert.Equal(t, 3, td.SpanCount())
			}
		})
	}
}
