package redisanalyticsexporter

import (
	"context"

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

// With one batch marker (a group of one push): where the batch marker and
// the first resource marker are in KEYS.
const (
	batchKeyIndex    = batchKeysOffset
	markerKeysOffset = batchKeysOffset + 1
)

// setBatchKey sets the batch marker of a group of one push in the encoded KEYS.
func (a *aggregator) setBatchKey(key string) { a.keys[batchKeyIndex] = key }
