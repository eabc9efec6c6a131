package sdkload

import (
	"context"
	"sync"
	"time"

	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// measuringExporter wraps the SDK's OTLP exporter and records what the
// batch processor hands it: records per call, each call's duration and its
// result.
type measuringExporter struct {
	next sdklog.Exporter

	// The batch processor never calls Export concurrently, but a Shutdown
	// that times out returns while an export may still run: the mutex lets
	// the run read the stats then.
	mu        sync.Mutex
	exported  int64
	failed    int64
	errors    int
	latencies []time.Duration
}

var _ sdklog.Exporter = (*measuringExporter)(nil)

func (e *measuringExporter) Export(ctx context.Context, records []sdklog.Record) error {
	if len(records) == 0 { // flushes of an empty queue send nothing
		return e.next.Export(ctx, records)
	}
	start := time.Now()
	err := e.next.Export(ctx, records)
	elapsed := time.Since(start)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.exported += int64(len(records))
	e.latencies = append(e.latencies, elapsed)
	if err != nil {
		e.failed += int64(len(records))
		e.errors++
	}
	return err
}

func (e *measuringExporter) ForceFlush(ctx context.Context) error { return e.next.ForceFlush(ctx) }

func (e *measuringExporter) Shutdown(ctx context.Context) error { return e.next.Shutdown(ctx) }

// addTo adds the recorded stats to r and appends the latencies to all.
func (e *measuringExporter) addTo(r *Result, all []time.Duration) []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	r.Exported += e.exported
	r.Failed += e.failed
	r.ExportErrors += e.errors
	return append(all, e.latencies...)
}
