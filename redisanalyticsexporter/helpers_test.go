package redisanalyticsexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// addLogs converts ld as the exporter's converter does and folds the result
// into a, as a push does.
func (a *aggregator) addLogs(ld plog.Logs, m *mapper, nowNanos int64) {
	a.fold(newConverter().logs(ld, m, nowNanos), 0)
}

// addTraces is addLogs for spans.
func (a *aggregator) addTraces(td ptrace.Traces, m *mapper, nowNanos int64) {
	a.fold(newConverter().traces(td, m, nowNanos), 0)
}

// logsRequest converts ld as exporterhelper's converter call does.
func (e *redisAnalyticsExporter) logsRequest(ld plog.Logs) *countsRequest {
	return e.logsRequestCtx(context.Background(), ld)
}

func (e *redisAnalyticsExporter) logsRequestCtx(ctx context.Context, ld plog.Logs) *countsRequest {
	req, _ := e.convertLogs(ctx, ld)
	return req.(*countsRequest)
}

// pushLogs converts and pushes ld as a new request (no sending queue).
func (e *redisAnalyticsExporter) pushLogs(ctx context.Context, ld plog.Logs) error {
	return e.push(ctx, e.logsRequestCtx(ctx, ld))
}

// layout reads the encoded script call back (protocol.ParseApplyArgs).
func (a *aggregator) layout(t testing.TB) protocol.ApplyLayout {
	t.Helper()
	l, err := protocol.ParseApplyArgs(a.call.Keys(), a.call.Args())
	require.NoError(t, err)
	return l
}

// increments returns a call's counters as key -> increment; a key must not
// appear twice.
func increments(t testing.TB, l protocol.ApplyLayout) map[string]int64 {
	t.Helper()
	got := make(map[string]int64, len(l.Counters))
	for _, c := range l.Counters {
		_, dup := got[c.Key]
		require.False(t, dup, "key %q appears twice in one call", c.Key)
		got[c.Key] = c.Incr
	}
	return got
}

// testTTLs are the script's TTLs of the aggregation tests: 10 s, 30 s, 40 s.
var testTTLs = protocol.ApplyTTLs{Counter: 10 * time.Second, BatchMarker: 30 * time.Second, ResourceMarker: 40 * time.Second}

// testSchema is the default prefix's schema, for aggregations that write
// nothing.
var testSchema = func() protocol.Schema {
	s, err := protocol.New(protocol.DefaultPrefix)
	if err != nil {
		panic(err)
	}
	return s
}()

// fingerprints returns the fingerprint of each entry folded into a, the
// zero resFP for an entry without one.
func (a *aggregator) fingerprints() []resFP {
	out := make([]resFP, len(a.res))
	for i, r := range a.res {
		if r.ok {
			out[i] = r.fp
		}
	}
	return out
}
