package sdkload

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Result is the outcome of a run, summed over its instances.
type Result struct {
	// Emitted is the number of records passed to Logger.Emit.
	Emitted int64
	// Exported is the number of records the batch processors passed to
	// their exporter, whatever the result.
	Exported int64
	// Failed is the number of exported records in calls that returned an
	// error (the SDK does not resend them).
	Failed int64
	// ExportErrors is the number of export calls that returned an error.
	ExportErrors int
	// Latency summarizes the duration of every export call that carried
	// records, over all instances.
	Latency LatencySummary
	// Elapsed is the time from the first emit to the last instance's last
	// emit; Emitted / Elapsed is the achieved rate.
	Elapsed time.Duration
	// Expected is Emitted by event type and UTC day.
	Expected Expected
}

// Dropped is the number of records the SDKs dropped without exporting
// (queue overflow, or still queued at the end of ShutdownTimeout).
func (r Result) Dropped() int64 { return r.Emitted - r.Exported }

// DropRatio is Dropped / Emitted (0 when nothing was emitted).
func (r Result) DropRatio() float64 {
	if r.Emitted == 0 {
		return 0
	}
	return float64(r.Dropped()) / float64(r.Emitted)
}

func (r Result) String() string {
	return fmt.Sprintf("emitted=%d exported=%d dropped=%d (%.1f%%) failed=%d export_errors=%d rate=%.0f/s latency: %s",
		r.Emitted, r.Exported, r.Dropped(), 100*r.DropRatio(), r.Failed, r.ExportErrors,
		float64(r.Emitted)/max(r.Elapsed.Seconds(), 1e-9), r.Latency)
}

// Run starts opts.Instances LoggerProviders with default batch processors,
// emits opts.Rate records/s from each for opts.Duration, then flushes and
// shuts every provider down within opts.ShutdownTimeout. Canceling ctx
// stops the emitting early; the providers are still flushed. The error
// reports invalid options, an exporter that could not be built, and failed
// flushes and shutdowns; the Result is valid in every case but the first two.
func Run(ctx context.Context, opts Options) (Result, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return Result{}, fmt.Errorf("sdkload options: %w", err)
	}
	instances := make([]*instance, opts.Instances)
	for i := range instances {
		in, err := newInstance(ctx, opts, i)
		if err != nil {
			for _, started := range instances[:i] {
				_ = started.shutdown(ctx, opts.ShutdownTimeout)
			}
			return Result{}, fmt.Errorf("sdkload instance %d: %w", i, err)
		}
		instances[i] = in
	}

	// Like separate applications, each instance emits, then flushes and
	// shuts down, on its own.
	start := time.Now()
	shutdownErrs := make([]error, len(instances))
	var wg sync.WaitGroup
	for i, in := range instances {
		wg.Go(func() {
			in.emit(ctx, opts)
			if err := in.shutdown(ctx, opts.ShutdownTimeout); err != nil {
				shutdownErrs[i] = fmt.Errorf("sdkload instance %d: %w", i, err)
			}
		})
	}
	wg.Wait()

	res := Result{Expected: Expected{}}
	var latencies []time.Duration
	var lastEmit time.Time
	for _, in := range instances {
		res.Emitted += in.emitted
		res.Expected.merge(in.expected)
		if in.lastEmit.After(lastEmit) {
			lastEmit = in.lastEmit
		}
		latencies = in.exporter.addTo(&res, latencies)
	}
	if !lastEmit.IsZero() {
		res.Elapsed = lastEmit.Sub(start)
	}
	res.Latency = summarize(latencies)
	return res, errors.Join(shutdownErrs...)
}

// instance is one application: a LoggerProvider and what it emitted.
type instance struct {
	provider *sdklog.LoggerProvider
	logger   otellog.Logger
	exporter *measuringExporter

	emitted  int64
	lastEmit time.Time
	expected Expected
}

func newInstance(ctx context.Context, opts Options, id int) (*instance, error) {
	otlp, err := newOTLPExporter(ctx, opts)
	if err != nil {
		return nil, err
	}
	exp := &measuringExporter{next: otlp}
	res := resource.NewSchemaless(
		attribute.String("service.name", opts.ServiceName),
		attribute.String("service.instance.id", opts.ServiceName+"-"+strconv.Itoa(id)),
	)
	provider := sdklog.NewLoggerProvider(
		sdklog.WithResource(res),
		// The defaults on purpose: this is what applications run.
		sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)),
	)
	return &instance{
		provider: provider,
		logger:   provider.Logger("github.com/otelcol-analytics/otelcol-analytics/internal/sdkload"),
		exporter: exp,
		expected: Expected{},
	}, nil
}

func newOTLPExporter(ctx context.Context, opts Options) (sdklog.Exporter, error) {
	if opts.Protocol == ProtocolGRPC {
		return otlploggrpc.New(ctx, otlploggrpc.WithEndpoint(opts.Endpoint), otlploggrpc.WithInsecure())
	}
	return otlploghttp.New(ctx, otlploghttp.WithEndpoint(opts.Endpoint), otlploghttp.WithInsecure())
}

// emit paces the records: every tick it emits those due since the start,
// at most two ticks' worth, until Rate × Duration are emitted, Duration has
// passed or ctx is done.
func (in *instance) emit(ctx context.Context, opts Options) {
	total, burst := opts.total(), 2*opts.perTick()
	ticker := time.NewTicker(opts.Tick)
	defer ticker.Stop()
	start := time.Now()
	for in.emitted < total {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-ticker.C:
		}
		elapsed := now.Sub(start)
		due := min(total, int64(float64(opts.Rate)*elapsed.Seconds()))
		in.emitBatch(ctx, opts, now, min(due-in.emitted, burst))
		if elapsed >= opts.Duration {
			return
		}
	}
}

// emitBatch emits n records stamped ts.
func (in *instance) emitBatch(ctx context.Context, opts Options, ts time.Time, n int64) {
	if n <= 0 {
		return
	}
	day := utcDay(ts)
	for range n {
		seq := int(in.emitted)
		eventName := opts.EventNames[seq%len(opts.EventNames)]
		var r otellog.Record
		r.SetEventName(eventName)
		r.SetTimestamp(ts)
		r.SetSeverity(otellog.SeverityInfo)
		r.AddAttributes(
			attribute.String("user.id", "user-"+strconv.Itoa(seq%opts.Users)),
			attribute.String("log.record.uid", uuid.NewString()),
		)
		in.logger.Emit(ctx, r)
		in.emitted++
		in.expected[EventDay{EventType: eventName, Day: day}]++
	}
	in.lastEmit = time.Now()
}

// shutdown flushes the provider's queue and shuts it down, both within
// timeout (even when ctx is already canceled).
func (in *instance) shutdown(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	return errors.Join(in.provider.ForceFlush(ctx), in.provider.Shutdown(ctx))
}
