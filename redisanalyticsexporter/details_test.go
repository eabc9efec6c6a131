package redisanalyticsexporter

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadatatest"
)

// detailLogs builds one resource (with resAttrs) holding a "gen" record per
// attrs, stamped at tsRecord.
func detailLogs(t *testing.T, resAttrs map[string]any, attrs ...map[string]any) plog.Logs {
	t.Helper()
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	require.NoError(t, rl.Resource().Attributes().FromRaw(resAttrs))
	lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
	for _, a := range attrs {
		lr := lrs.AppendEmpty()
		lr.SetEventName("gen")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
		require.NoError(t, lr.Attributes().FromRaw(a))
	}
	return ld
}

// TestPropertiesAndSumsAreCounted: property values (from the record, else
// its resource, else the default) and integer sums land in their keys; what
// cannot be counted is dropped by reason while its event still counts.
func TestPropertiesAndSumsAreCounted(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	cfg.Properties = []PropertyConfig{{Attribute: "model"}, {Attribute: "plan", Default: "free"}}
	cfg.Sums = []SumConfig{{Attribute: "tokens"}}
	le, _ := startLogs(t, cfg, metadatatest.NewSettings(tel), componenttest.NewNopHost(), nil)

	ld := detailLogs(t, map[string]any{"model": "from-resource"},
		map[string]any{"model": "gpt-4", "plan": "pro", "tokens": 10},
		map[string]any{"model": "gpt-4", "tokens": 20.0},
		map[string]any{"model": "gpt-4:mini", "tokens": "many"},
		map[string]any{"tokens": 2.5},
		map[string]any{"model": 7, "tokens": -4},
	)
	require.NoError(t, le.ConsumeLogs(t.Context(), ld))

	hour := protocol.HourOf(tsRecord)
	day := hour - hour%24
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	prop := func(fam protocol.Family, attr, value string) string {
		h := day
		if fam == protocol.PropertyHourly {
			h = hour
		}
		return schema.Key(protocol.Counter{Family: fam, EventType: "gen", Attribute: attr, Value: value, Hour: h})
	}
	want := map[string]int64{}
	for _, fam := range []protocol.Family{protocol.PropertyDaily, protocol.PropertyHourly} {
		want[prop(fam, "model", "gpt-4")] = 2
		want[prop(fam, "model", "gpt-4:mini")] = 1
		want[prop(fam, "model", "from-resource")] = 1
		want[prop(fam, "model", "7")] = 1
		want[prop(fam, "plan", "pro")] = 1
		want[prop(fam, "plan", "free")] = 4
	}
	want[schema.Key(protocol.Counter{Family: protocol.SumDaily, EventType: "gen", Attribute: "tokens", Hour: day})] = 26
	want[schema.Key(protocol.Counter{Family: protocol.SumHourly, EventType: "gen", Attribute: "tokens", Hour: hour})] = 26
	want[schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "gen", Hour: day})] = 5
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))

	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsValuesDropped(t, tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"), attribute.String("reason", "not_integer"))},
	}, opts...)
}

// TestCardinalityCapsFoldIntoOther: over the day's caps, event types and
// property values are counted under __other__: the keys stay bounded, the
// totals exact, across pushes and across exporters sharing the Redis.
func TestCardinalityCapsFoldIntoOther(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	cfg.Properties = []PropertyConfig{{Attribute: "page"}}
	cfg.CardinalityLimits = CardinalityLimits{EventTypesPerDay: 10, ValuesPerPropertyPerDay: 20}
	first, _ := startLogs(t, cfg, metadatatest.NewSettings(tel), componenttest.NewNopHost(), nil)
	second, _ := startLogs(t, cfg, metadatatest.NewSettings(tel), componenttest.NewNopHost(), nil)

	const types, pages = 300, 500
	for i, le := range []interface {
		ConsumeLogs(context.Context, plog.Logs) error
	}{first, second} {
		ld := plog.NewLogs()
		lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		for j := range types {
			lr := lrs.AppendEmpty()
			lr.SetEventName("type-" + strconv.Itoa((j+i*types/2)%types))
			lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
			lr.Attributes().PutStr("page", "/p/"+strconv.Itoa(j%pages+i*pages))
		}
		require.NoError(t, le.ConsumeLogs(t.Context(), ld))
	}

	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	hour := protocol.HourOf(tsRecord)
	day := hour - hour%24
	assert.Equal(t, int64(10), client.SCard(t.Context(), schema.GuardKey(protocol.Guard{Kind: protocol.GuardEventTypes, Day: day})).Val())
	pending := client.ZRange(t.Context(), schema.PendingKey(), 0, -1).Val()
	var daily, props, total, propTotal int64
	for _, k := range pending {
		c, parseErr := schema.Parse(k)
		require.NoError(t, parseErr)
		n, getErr := client.Get(t.Context(), k).Int64()
		require.NoError(t, getErr)
		switch c.Family {
		case protocol.Daily:
			daily++
			total += n
		case protocol.PropertyDaily:
			props++
			propTotal += n
		default:
		}
	}
	assert.Equal(t, int64(11), daily, "10 types and __other__")
	assert.Equal(t, int64(2*types), total, "every event counted")
	assert.Equal(t, int64(2*types), propTotal, "every page counted")
	assert.LessOrEqual(t, props, int64(11*21), "at most (types+1) x (values+1) property keys")
	otherDaily := schema.Key(protocol.Counter{Family: protocol.Daily, EventType: protocol.OverflowValue, Hour: day})
	// The ten types the first push admitted count under their names in the
	// second push too (each type appears once per push).
	assert.Equal(t, strconv.Itoa(2*types-20), client.Get(t.Context(), otherDaily).Val())

	var folded int64
	overflow, err := tel.GetMetric("otelcol_exporter_redis_analytics_cardinality_overflow")
	require.NoError(t, err)
	for _, m := range overflow.Data.(metricdata.Sum[int64]).DataPoints {
		reason, _ := m.Attributes.Value("reason")
		if reason.AsString() == "event_types" {
			folded += m.Value
		}
	}
	assert.Equal(t, int64(2*types-20), folded)
}

// TestTimeHorizonDropsOldAndFutureEvents: records stamped before
// max_event_age or after max_clock_skew are dropped with their reasons.
func TestTimeHorizonDropsOldAndFutureEvents(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	cfg.MaxEventAge, cfg.MaxClockSkew = 48*time.Hour, time.Hour
	now := time.Now()
	le, _ := startLogs(t, cfg, metadatatest.NewSettings(tel), componenttest.NewNopHost(), nil)
	require.NoError(t, le.ConsumeLogs(t.Context(), newLogs([]logRecord{
		{"old", "", time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"old", "", now.Add(-49 * time.Hour)},
		{"future", "", time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"future", "", now.Add(2 * time.Hour)},
		{"recent", "", now.Add(-47 * time.Hour)},
		{"soon", "", now.Add(30 * time.Minute)},
	})))
	var types []string
	for _, k := range client.ZRange(t.Context(), prefix+":pending", 0, -1).Val() {
		schema, err := protocol.New(prefix)
		require.NoError(t, err)
		c, err := schema.Parse(k)
		require.NoError(t, err)
		if c.Family == protocol.Daily {
			types = append(types, c.EventType)
		}
	}
	assert.ElementsMatch(t, []string{"recent", "soon"}, types)
	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsEventsDropped(t, tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"), attribute.String("reason", "too_old"))},
		{Value: 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"), attribute.String("reason", "in_future"))},
	}, opts...)
}

// TestKnownMembersNeedNoGuard: the exporter remembers the members Redis
// admitted, and a day's set once Redis folded a guard against it: its next
// pushes send no guard for admitted members, fold new values of a full set
// themselves (one folded counter), and the totals stay exact.
func TestKnownMembersNeedNoGuard(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	rec := &evalRecorder{}
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	cfg.UserIDAttributes = nil
	cfg.CardinalityLimits = CardinalityLimits{EventTypesPerDay: 2}
	le, e := startLogs(t, cfg, exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })
	push := func(types ...string) protocol.ApplyLayout {
		t.Helper()
		var records []logRecord
		for _, typ := range types {
			records = append(records, logRecord{typ, "", tsRecord})
		}
		require.NoError(t, le.ConsumeLogs(t.Context(), newLogs(records)))
		calls := rec.scriptCalls()
		return scriptLayout(t, calls[len(calls)-1])
	}
	day := dayOf(protocol.HourOf(tsRecord))
	assert.Len(t, push("a", "b").Guards, 2, "the set fills")
	assert.Empty(t, push("a", "b").Guards, "admitted members need no guard")
	assert.Len(t, push("c").Guards, 1, "Redis folds c")
	require.Eventually(t, func() bool {
		_, known := e.knownSets.admits(guardKey{capSet{kind: protocol.GuardEventTypes, day: day}, "never-seen"})
		return known
	}, 5*time.Second, 10*time.Millisecond, "the exporter learns that the set is full")
	last := push("a", "d", "e", "f")
	assert.Empty(t, last.Guards, "a full set needs no guard")
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	other := schema.Key(protocol.Counter{Family: protocol.Daily, EventType: protocol.OverflowValue, Hour: day})
	incrs := map[string]int64{}
	for _, c := range last.Counters {
		incrs[c.Key] += c.Incr
	}
	assert.Equal(t, int64(3), incrs[other], "d, e and f in one folded counter")
	want := map[string]int64{
		schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "a", Hour: day}): 3,
		schema.Key(protocol.Counter{Family: protocol.Daily, EventType: "b", Hour: day}): 2,
		other: 4,
	}
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestCutEntryKeepsItsDetails: an entry cut by max_size keeps its property
// counts, sums and value drops (with its first piece), whichever sizer,
// even when the request before it is full.
func TestCutEntryKeepsItsDetails(t *testing.T) {
	t.Parallel()
	for _, szt := range []exporterhelper.RequestSizerType{exporterhelper.RequestSizerTypeItems, exporterhelper.RequestSizerTypeBytes} {
		full := testRequest(t, manyRecords(10, 1, "view"))
		details := detailsRequest()
		// Without records outside the horizon, the first piece holds only
		// counts and details.
		en := &details.entries[0]
		details.records -= int(en.tooOld + en.inFuture)
		en.records -= en.tooOld + en.inFuture
		en.tooOld, en.inFuture = 0, 0
		want := *en
		maxSize := 10
		if szt == exporterhelper.RequestSizerTypeBytes {
			maxSize = full.bytes
		}
		out, err := full.MergeSplit(t.Context(), maxSize, szt, details)
		require.NoError(t, err)
		var props, sums, drops int64
		for _, r := range out {
			for _, en := range r.(*countsRequest).entries {
				for _, p := range en.props {
					props += p.n
				}
				for _, s := range en.sums {
					sums += s.sum
				}
				drops += en.valueDrops[valueNotInteger]
			}
		}
		var wantProps, wantSums int64
		for _, p := range want.props {
			wantProps += p.n
		}
		for _, s := range want.sums {
			wantSums += s.sum
		}
		assert.Equal(t, wantProps, props, szt)
		assert.Equal(t, wantSums, sums, szt)
		assert.Equal(t, want.valueDrops[valueNotInteger], drops, szt)
	}
}

// TestDetailsOfDroppedEventsAreNotCounted: an event dropped for its user id
// drops its property values and sums too; a sum reaching math.MinInt64 is
// an overflow (Redis could not undo it).
func TestDetailsOfDroppedEventsAreNotCounted(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	cfg.Properties = []PropertyConfig{{Attribute: "model"}}
	cfg.Sums = []SumConfig{{Attribute: "tokens"}}
	m := newMapper(cfg)
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, user := range []string{strings.Repeat("u", maxValueBytes+1), "ok"} {
		lr := lrs.AppendEmpty()
		lr.SetEventName("gen")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
		lr.Attributes().PutStr("user.id", user)
		lr.Attributes().PutStr("model", "m-"+user[:2])
		lr.Attributes().PutInt("tokens", math.MinInt64)
	}
	a := newAggregator(testSchema)
	a.addLogs(ld, &m, tsRecord.UnixNano())
	a.finalize(&m)
	assert.Equal(t, int64(1), a.dropped[reasonInvalidValue])
	assert.Len(t, a.props, 1, "only the counted event's property")
	assert.Empty(t, a.sums, "-2^63 is an overflow")
	assert.Equal(t, int64(1), a.valueDrops[valueSumOverflow])
}
