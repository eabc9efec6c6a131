package redisanalyticsexporter

import (
	"context"
	"time"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
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

// counterKeysStart is the index of the first counter key in the encoded KEYS:
// after the pending set, the batch marker and the resource markers.
func (a *aggregator) counterKeysStart() int { return markerKeysOffset + len(a.markerRes) }

// Where the apply script's KEYS hold the batch markers (after the pending
// set) and, with one batch marker (a group of one push), the first resource
// marker; where its ARGV holds the numbers of markers and the first
// increment (see internal/protocol/apply.lua).
const (
	batchKeysOffset   = 1
	batchKeyIndex     = batchKeysOffset
	markerKeysOffset  = batchKeysOffset + 1
	argNumBatches     = 2
	argNumMarkers     = 3
	counterArgsOffset = 5
)

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
