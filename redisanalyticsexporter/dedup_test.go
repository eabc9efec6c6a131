package redisanalyticsexporter

import (
	"context"
	"maps"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
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

// dedupLogs builds one resource entry per group, each record with its own
// log.record.uid (group and index), as an SDK that sets it emits them.
func dedupLogs(typ string, groups ...int) plog.Logs {
	ld := plog.NewLogs()
	for g, n := range groups {
		rl := ld.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("service.name", "shop-"+strconv.Itoa(g))
		rl.Resource().Attributes().PutStr("user.id", "res-user")
		lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
		for i := range n {
			lr := lrs.AppendEmpty()
			lr.SetEventName(typ)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord.Add(time.Duration(g*1000 + i))))
			lr.Attributes().PutStr("log.record.uid", typ+"-"+strconv.Itoa(g)+"-"+strconv.Itoa(i))
			lr.Attributes().PutStr("user.id", "u"+strconv.Itoa(i%2))
		}
	}
	return ld
}

// resourceFPs aggregates ld and returns each entry's fingerprint (the zero
// resFP when it has none). The converter splits a resource entry into its
// identified and its anonymous records.
func resourceFPs(ld plog.Logs) []resFP {
	return resourceFPsWith(createDefaultConfig().(*Config), ld)
}

func resourceFPsWith(cfg *Config, ld plog.Logs) []resFP {
	m := newMapper(cfg)
	a := newAggregator(testSchema)
	a.addLogs(ld, &m, tsNow.UnixNano())
	return a.fingerprints()
}

func TestResourceFingerprintLogs(t *testing.T) {
	t.Parallel()
	base := resourceFPs(dedupLogs("view", 3, 5))
	require.Len(t, base, 2)
	assert.NotEqual(t, resFP{}, base[0])
	assert.NotEqual(t, base[0], base[1])
	assert.Equal(t, base, resourceFPs(dedupLogs("view", 3, 5)), "same identities, independently built: same fingerprints")
	assert.Equal(t, "x:c7e0f1a2b3c4d5e6f708192a3b4c5d6e", string(resFP{0xc7e0f1a2b3c4d5e6, 0xf708192a3b4c5d6e}.appendHex([]byte("x:"))))
	// Pinned: the markers of a collector and of its restarted successor must agree.
	assert.Equal(t, resFP{0xd6f02fbebb58d01c, 0xafead953ba04fca1}, base[0], "stable across processes and releases")

	// The fingerprint does not depend on the other entries of the request
	// (the queue merges requests by appending entries).
	merged := dedupLogs("view", 3, 5)
	dedupLogs("click", 2).ResourceLogs().MoveAndAppendTo(merged.ResourceLogs())
	assert.Equal(t, base, resourceFPs(merged)[:2])

	// Only the identities decide; the content does not.
	sameIdentity := map[string]func(lr plog.LogRecord){
		"timestamp":     func(lr plog.LogRecord) { lr.SetTimestamp(lr.Timestamp() + 1) },
		"body":          func(lr plog.LogRecord) { lr.Body().SetStr("other") },
		"user":          func(lr plog.LogRecord) { lr.Attributes().PutStr("user.id", "someone") },
		"trace id":      func(lr plog.LogRecord) { lr.SetTraceID([16]byte{9}) },
		"other attr":    func(lr plog.LogRecord) { lr.Attributes().PutStr("url.path", "/x") },
		"severity text": func(lr plog.LogRecord) { lr.SetSeverityText("WARN") },
	}
	for name, change := range sameIdentity {
		ld := dedupLogs("view", 3, 5)
		change(ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().At(2))
		assert.Equal(t, base, resourceFPs(ld), name)
	}
	otherIdentity := map[string]func(lr plog.LogRecord){
		"uid":       func(lr plog.LogRecord) { lr.Attributes().PutStr("log.record.uid", "other") },
		"int uid":   func(lr plog.LogRecord) { lr.Attributes().PutInt("log.record.uid", 7) },
		"bytes uid": func(lr plog.LogRecord) { lr.Attributes().PutEmptyBytes("log.record.uid").FromRaw([]byte{1, 2}) },
	}
	for name, change := range otherIdentity {
		ld := dedupLogs("view", 3, 5)
		change(ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().At(2))
		got := resourceFPs(ld)
		assert.Equal(t, base[0], got[0], name)
		assert.NotEqual(t, base[1], got[1], name)
		assert.NotEqual(t, resFP{}, got[1], name)
	}
	ld := dedupLogs("view", 3, 5)
	ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().At(0).CopyTo(
		ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().AppendEmpty())
	assert.NotEqual(t, base[1], resourceFPs(ld)[1], "one more record")

	// A record without an identity goes to an anonymous entry of its own;
	// the identified records keep their fingerprint minus that record.
	ld = dedupLogs("view", 3, 5)
	ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().At(4).Attributes().Remove("log.record.uid")
	got := resourceFPs(ld)
	require.Len(t, got, 3)
	assert.Equal(t, base[0], got[0])
	assert.NotEqual(t, resFP{}, got[1])
	assert.NotEqual(t, base[1], got[1])
	assert.Equal(t, resFP{}, got[2], "anonymous: no fingerprint")
	// An empty uid is no identity either.
	ld.ResourceLogs().At(1).ScopeLogs().At(0).LogRecords().At(4).Attributes().PutStr("log.record.uid", "")
	assert.Equal(t, got, resourceFPs(ld))
}

func TestRecordIDAttributes(t *testing.T) {
	t.Parallel()
	ld := plog.NewLogs()
	lrs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for _, id := range []string{"e1", "e2"} {
		lr := lrs.AppendEmpty()
		lr.SetEventName("view")
		lr.Attributes().PutStr("event.id", id)
	}
	assert.Equal(t, []resFP{{}}, resourceFPs(ld), "event.id is not an identity by default")

	cfg := createDefaultConfig().(*Config)
	cfg.RecordIDAttributes = []string{"log.record.uid", "event.id"}
	fp := resourceFPsWith(cfg, ld)
	require.Len(t, fp, 1)
	assert.NotEqual(t, resFP{}, fp[0])

	// The first attribute of the list that a record holds wins.
	lrs.At(0).Attributes().PutStr("log.record.uid", "u1")
	assert.NotEqual(t, fp, resourceFPsWith(cfg, ld))

	cfg.RecordIDAttributes = nil
	assert.Equal(t, []resFP{{}}, resourceFPsWith(cfg, ld), "no attributes: every log record is anonymous")
}

// dedupTraces builds one resource entry per group of spans with ids.
func dedupTraces(typ string, groups ...int) ptrace.Traces {
	td := ptrace.NewTraces()
	for g, n := range groups {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "shop-"+strconv.Itoa(g))
		spans := rs.ScopeSpans().AppendEmpty().Spans()
		for i := range n {
			sp := spans.AppendEmpty()
			sp.SetName(typ)
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(tsRecord.Add(time.Duration(i))))
			sp.SetTraceID([16]byte{1, byte(g)})
			sp.SetSpanID([8]byte{2, byte(g), byte(i)})
			sp.Attributes().PutStr("enduser.id", "u"+strconv.Itoa(i%2))
		}
	}
	return td
}

func spanFPs(td ptrace.Traces) []resFP {
	return spanFPsWith(createDefaultConfig().(*Config), td)
}

func spanFPsWith(cfg *Config, td ptrace.Traces) []resFP {
	m := newMapper(cfg)
	a := newAggregator(testSchema)
	a.addTraces(td, &m, tsNow.UnixNano())
	return a.fingerprints()
}

func TestResourceFingerprintSpans(t *testing.T) {
	t.Parallel()
	base := spanFPs(dedupTraces("view", 2, 4))
	require.Len(t, base, 2)
	assert.NotEqual(t, resFP{}, base[1])
	assert.Equal(t, base, spanFPs(dedupTraces("view", 2, 4)))
	for name, change := range map[string]func(sp ptrace.Span){
		"start": func(sp ptrace.Span) { sp.SetStartTimestamp(sp.StartTimestamp() + 1) },
		"user":  func(sp ptrace.Span) { sp.Attributes().PutStr("enduser.id", "someone") },
	} {
		td := dedupTraces("view", 2, 4)
		change(td.ResourceSpans().At(1).ScopeSpans().At(0).Spans().At(3))
		assert.Equal(t, base, spanFPs(td), "same ids: "+name)
	}
	changes := map[string]func(sp ptrace.Span){
		"trace id": func(sp ptrace.Span) { sp.SetTraceID([16]byte{9}) },
		"span id":  func(sp ptrace.Span) { sp.SetSpanID([8]byte{9}) },
	}
	for name, change := range changes {
		td := dedupTraces("view", 2, 4)
		change(td.ResourceSpans().At(1).ScopeSpans().At(0).Spans().At(3))
		got := spanFPs(td)
		assert.Equal(t, base[0], got[0], name)
		assert.NotEqual(t, base[1], got[1], name)
		assert.NotEqual(t, resFP{}, got[1], name)
	}
	td := dedupTraces("view", 2, 4)
	td.ResourceSpans().At(1).ScopeSpans().At(0).Spans().At(3).SetSpanID([8]byte{})
	got := spanFPs(td)
	require.Len(t, got, 3, "an all-zero span id: the span goes to an anonymous entry")
	assert.Equal(t, base[0], got[0])
	assert.NotEqual(t, resFP{}, got[1])
	assert.Equal(t, resFP{}, got[2])
}

// appendEntries appends copies of src's resource entries to dst, as the
// sending queue merges requests.
func appendEntries(dst, src plog.Logs) {
	rls := src.ResourceLogs()
	for i := range rls.Len() {
		rls.At(i).CopyTo(dst.ResourceLogs().AppendEmpty())
	}
}

func merged(parts ...plog.Logs) plog.Logs {
	ld := plog.NewLogs()
	for _, p := range parts {
		appendEntries(ld, p)
	}
	return ld
}

func TestResendOfResourceEntriesCountsOnce(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	rec := &evalRecorder{}
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(tel),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })
	ctx := t.Context()

	reqA := dedupLogs("a-evt", 3, 4) // 7 events in 2 entries
	reqB := dedupLogs("b-evt", 5)    // 5 events
	want := func(a, b int64) map[string]int64 {
		w := map[string]int64{}
		maps.Copy(w, counterKeys(prefix, "a-evt", "", tsRecord, a))
		maps.Copy(w, counterKeys(prefix, "b-evt", "", tsRecord, b))
		return w
	}
	require.NoError(t, le.ConsumeLogs(ctx, reqA))
	assert.Equal(t, want(7, 0), counterValues(t, client, keysOf(want(7, 0))))

	// The client did not get the response and resends A; the queue merges
	// the resend with a new request B.
	require.NoError(t, le.ConsumeLogs(ctx, merged(reqB, dedupLogs("a-evt", 3, 4))))
	assert.Equal(t, want(7, 5), counterValues(t, client, keysOf(want(7, 5))), "A once, B counted")
	calls := rec.scriptCalls()
	require.Len(t, calls, 3, "one call for A; for the merged batch: duplicates found, then applied")
	assert.Equal(t, 3, scriptMarkers(t, calls[1]))
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	for _, k := range scriptLayout(t, calls[1]).Markers {
		assert.Regexp(t, "^"+regexp.QuoteMeta(schema.ResourceKey(""))+"[0-9a-f]{32}$", k)
	}
	assert.Equal(t, 1, scriptMarkers(t, calls[2]), "only B's entry is marked")
	assert.Equal(t, scriptLayout(t, calls[1]).Batches, scriptLayout(t, calls[2]).Batches, "same batch id")

	// A alone again: nothing to count.
	require.NoError(t, le.ConsumeLogs(ctx, dedupLogs("a-evt", 3, 4)))
	assert.Equal(t, want(7, 5), counterValues(t, client, keysOf(want(7, 5))))
	// A request merged with its own resend counts once.
	reqC := dedupLogs("c-evt", 2)
	require.NoError(t, le.ConsumeLogs(ctx, merged(reqC, reqC)))
	wantC := counterKeys(prefix, "c-evt", "", tsRecord, 2)
	assert.Equal(t, wantC, counterValues(t, client, keysOf(wantC)))

	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsEvents(t, tel, []metricdata.DataPoint[int64]{
		{Value: 7 + 5 + 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"))},
	}, opts...)
	metadatatest.AssertEqualExporterRedisAnalyticsEventsDropped(t, tel, []metricdata.DataPoint[int64]{
		{Value: 7 + 7 + 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"), attribute.String("reason", "duplicate"))},
	}, opts...)
}

// TestResendWithoutIdentityCountsTwice: records without an identity are
// counted at least once, the identified ones of the same entry exactly once.
func TestResendWithoutIdentityCountsTwice(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	le, _ := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), metadatatest.NewSettings(tel),
		componenttest.NewNopHost(), func(*redisAnalyticsExporter) {})
	req := func() plog.Logs {
		ld := dedupLogs("ided", 3)
		lr := ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().AppendEmpty()
		lr.SetEventName("anon")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(tsRecord))
		return ld
	}
	require.NoError(t, le.ConsumeLogs(t.Context(), req()))
	require.NoError(t, le.ConsumeLogs(t.Context(), req())) // a resend
	want := counterKeys(prefix, "ided", "", tsRecord, 3)
	maps.Copy(want, counterKeys(prefix, "anon", "", tsRecord, 2))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)), "documented: at-least-once without an identity")
	opts := []metricdatatest.Option{metricdatatest.IgnoreTimestamp(), metricdatatest.IgnoreExemplars()}
	metadatatest.AssertEqualExporterRedisAnalyticsEventsWithoutIdentity(t, tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: attribute.NewSet(attribute.String("signal", "logs"))},
	}, opts...)
}

func TestResendOfSpansCountsOnce(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	te, err := NewFactory().CreateTraces(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, te.Start(t.Context(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, te.Shutdown(context.Background())) })
	require.NoError(t, te.ConsumeTraces(t.Context(), dedupTraces("s-evt", 2, 3)))
	resend := dedupTraces("s-evt", 2, 3)
	dedupTraces("t-evt", 1).ResourceSpans().MoveAndAppendTo(resend.ResourceSpans())
	require.NoError(t, te.ConsumeTraces(t.Context(), resend))
	want := counterKeys(prefix, "s-evt", "", tsRecord, 5)
	maps.Copy(want, counterKeys(prefix, "t-evt", "", tsRecord, 1))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestLostReplyAfterExclusionCountsOnce: the apply round that follows an
// exclusion loses its reply; the retry keeps the exclusion and the batch id.
func TestLostReplyAfterExclusionCountsOnce(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	lost := &faultAt{at: 3, afterApply: true} // the applying round of the second push
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, lost) })
	ctx := t.Context()
	require.NoError(t, e.pushLogs(ctx, dedupLogs("x-evt", 2)))
	batch := e.logsRequest(merged(dedupLogs("x-evt", 2), dedupLogs("y-evt", 3)))
	require.Error(t, e.push(ctx, batch))
	id := batch.batchID
	require.NotEmpty(t, id, "the failed push keeps its batch id in the request")
	require.NoError(t, e.push(ctx, batch)) // exporterhelper's retry
	assert.Equal(t, int32(4), lost.calls.Load(), "the retry found its batch marker")
	assert.Equal(t, id, batch.batchID)
	want := counterKeys(prefix, "x-evt", "", tsRecord, 2)
	maps.Copy(want, counterKeys(prefix, "y-evt", "", tsRecord, 3))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestRetryOfCountedResendReportsRecovery: a resend's first attempt fails,
// and its retry finds every entry counted before, so it has nothing left to
// apply. Redis answered: the component reports OK again.
func TestRetryOfCountedResendReportsRecovery(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	rec := &evalRecorder{}
	host := &statusHost{}
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		host, func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, rec) })
	ctx := t.Context()
	require.NoError(t, e.pushLogs(ctx, dedupLogs("r-evt", 2, 3)))

	rec.failBefore.Store(1) // the resend's first attempt never reaches Redis
	resend := e.logsRequest(dedupLogs("r-evt", 2, 3))
	require.ErrorIs(t, e.push(ctx, resend), errLostReply)
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, host.statuses())

	require.NoError(t, e.push(ctx, resend)) // exporterhelper's retry
	assert.Len(t, rec.scriptCalls(), 3, "the retry's one call found both entries counted")
	for _, en := range resend.entries {
		assert.True(t, en.excluded)
	}
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, host.statuses())
	want := counterKeys(prefix, "r-evt", "", tsRecord, 5)
	assert.Equal(t, want, counterValues(t, client, keysOf(want)), "counted once")
}
