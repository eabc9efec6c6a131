package redisanalyticsexporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

var errNotStarted = errors.New("redis_analytics exporter is not started")

// redisAnalyticsExporter counts one signal's records into Redis. The factory
// creates one per signal; exporterhelper drives start, push and shutdown.
type redisAnalyticsExporter struct {
	cfg       *Config
	logger    *zap.Logger
	telemetry *metadata.TelemetryBuilder
	schema    protocol.Schema
	mapper    mapper
	// now is the clock for records without a timestamp and for pending scores.
	now func() time.Time
	// hooks are added to the Redis client at start (tests observe or break
	// commands with them).
	hooks []redis.Hook

	// ttls are the lifetimes of counters and markers the script sets.
	ttls protocol.ApplyTTLs

	// attrs are the precomputed metric attribute sets of this signal.
	attrs signalAttrs

	converters  sync.Pool // of *converter
	aggregators sync.Pool // of *aggregator
	committer   *committer

	mu     sync.Mutex // guards client, runner, host, connErr and stopConnect
	client redis.UniversalClient
	runner *redisconn.ScriptRunner
	host   component.Host
	// connErr is why a started exporter has no connection yet (connect.go);
	// nil once connected, and before start and after shutdown.
	connErr error
	// stopConnect ends the background connection loop; connecting tracks it.
	stopConnect context.CancelFunc
	connecting  sync.WaitGroup
	failing     atomic.Bool // the last push failed on Redis; report OK on recovery
	// overflowWarn rate-limits the warnings about cardinality caps and sums.
	overflowWarn everyInterval
	// knownSets is what pushes learned of the day's cardinality sets (guard.go).
	knownSets *knownSets
}

// everyInterval allows one event per interval, from any goroutine.
type everyInterval struct {
	interval time.Duration
	next     atomic.Int64 // Unix nanoseconds of the next allowed event
}

// Allow reports whether an event may happen now, and if so, takes its turn.
func (l *everyInterval) Allow() bool {
	now := time.Now().UnixNano()
	next := l.next.Load()
	return now >= next && l.next.CompareAndSwap(next, now+int64(l.interval))
}

// signalAttrs holds the metric attribute options of one signal, built once
// so that recording a measurement does not allocate.
type signalAttrs struct {
	signal       metric.MeasurementOption
	dropped      [numDropReasons]metric.MeasurementOption
	valueDropped [numValueDropReasons]metric.MeasurementOption
	folded       [protocol.GuardUsers + 1]metric.MeasurementOption // by GuardKind
	retryable    metric.MeasurementOption
	permanent    metric.MeasurementOption
}

func newSignalAttrs(signal string) signalAttrs {
	a := signalAttrs{
		signal:    metric.WithAttributeSet(attribute.NewSet(attribute.String("signal", signal))),
		retryable: metric.WithAttributeSet(attribute.NewSet(attribute.Bool("retryable", true))),
		permanent: metric.WithAttributeSet(attribute.NewSet(attribute.Bool("retryable", false))),
	}
	for r := range numDropReasons {
		a.dropped[r] = metric.WithAttributeSet(attribute.NewSet(
			attribute.String("signal", signal), attribute.String("reason", r.String())))
	}
	for r := range numValueDropReasons {
		a.valueDropped[r] = metric.WithAttributeSet(attribute.NewSet(
			attribute.String("signal", signal), attribute.String("reason", r.String())))
	}
	for _, k := range []protocol.GuardKind{protocol.GuardEventTypes, protocol.GuardPropertyValues, protocol.GuardUsers} {
		a.folded[k] = metric.WithAttributeSet(attribute.NewSet(
			attribute.String("signal", signal), attribute.String("reason", k.String())))
	}
	return a
}

func newRedisAnalyticsExporter(cfg *Config, set exporter.Settings, signal string) (*redisAnalyticsExporter, error) {
	schema, err := protocol.New(cfg.KeyPrefix)
	if err != nil { // Validate rejects this first; kept for direct callers
		return nil, fmt.Errorf("key_prefix: %w", err)
	}
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("create telemetry: %w", err)
	}
	markerTTL := cfg.batchMarkerTTL()
	e := &redisAnalyticsExporter{
		cfg:       cfg,
		logger:    set.Logger,
		telemetry: tb,
		schema:    schema,
		mapper:    newMapper(cfg),
		now:       time.Now,
		ttls: protocol.ApplyTTLs{
			Counter: cfg.TTL, BatchMarker: markerTTL, ResourceMarker: cfg.DedupWindow, Guard: cfg.guardTTL(),
		},
		attrs:       newSignalAttrs(signal),
		converters:  sync.Pool{New: func() any { return newConverter() }},
		aggregators: sync.Pool{New: func() any { return newAggregator(schema) }},
	}
	e.overflowWarn.interval = overflowWarnInterval
	e.knownSets = newKnownSets()
	e.committer = newCommitter(e.applyWhenConnected)
	return e, nil
}

// start connects to Redis. Clients are built here, not in the factory, so that
// a collector that only validates its config opens no connection. What no
// retry fixes (a rejected password, a TLS or cluster misconfiguration) fails
// start with a clear error. A Redis that is down or unreachable does not:
// the exporter starts, reports a recoverable error, and keeps connecting in
// the background (connect.go); pushes fail with a retryable error meanwhile.
func (e *redisAnalyticsExporter) start(ctx context.Context, host component.Host) error {
	e.mu.Lock()
	e.host = host
	e.mu.Unlock()
	err := e.connect(ctx)
	if err != nil && redisconn.Unrecoverable(err) {
		return fmt.Errorf("connect to redis: %w", err)
	}
	e.committer.start()
	e.checkFlushers(host)
	e.warnIfAcknowledgedEarly()
	if err != nil {
		e.connectInBackground(ctx, err)
	}
	return nil
}

// warnIfAcknowledgedEarly says what a user loses who turns wait_for_result
// off on an in-memory queue: requests are then answered before their counts
// reach Redis. A persistent queue (storage) answers once the request is on
// disk, the documented durability mode (b).
func (e *redisAnalyticsExporter) warnIfAcknowledgedEarly() {
	if !e.cfg.QueueConfig.HasValue() {
		return // no queue: every push is synchronous
	}
	q := e.cfg.QueueConfig.Get()
	if q.WaitForResult || q.StorageID != nil {
		return
	}
	e.logger.Warn("sending_queue::wait_for_result is false: requests are acknowledged before their counts reach Redis, " +
		"so a collector crash or restart loses what the in-memory queue holds, and clients never resend it. " +
		"Set wait_for_result: true (the default), or use a persistent queue (sending_queue::storage)")
}

// minTTLIntervals is how many flush intervals the counter TTL must span at
// least: a counter then survives a few failed or skipped flushes.
const minTTLIntervals = 10

// checkFlushers warns when the pg_flush extensions of this collector cannot
// move this exporter's counters before they expire: none uses its key_prefix,
// or the ttl is not comfortably longer than the flush interval. A flusher in
// another collector is not visible here.
func (e *redisAnalyticsExporter) checkFlushers(host component.Host) {
	var flushers, samePrefix int
	for id, ext := range host.GetExtensions() {
		f, ok := ext.(protocol.Flusher)
		if !ok {
			continue
		}
		flushers++
		s := f.FlusherSettings()
		if s.KeyPrefix != e.cfg.KeyPrefix {
			continue
		}
		samePrefix++
		if e.cfg.TTL < minTTLIntervals*s.Interval {
			e.logger.Warn("ttl is not comfortably longer than the flush interval: counters may expire before a flush moves them",
				zap.Duration("ttl", e.cfg.TTL), zap.String("flusher", id.String()), zap.Duration("interval", s.Interval),
				zap.Duration("recommended_min_ttl", minTTLIntervals*s.Interval))
		}
	}
	if flushers > 0 && samePrefix == 0 {
		e.logger.Warn("No pg_flush extension of this collector uses this exporter's key_prefix: its counters are flushed only by another collector, or expire",
			zap.String("key_prefix", e.cfg.KeyPrefix))
	}
}

// shutdown stops the background connection loop and closes the client. It is
// safe without start and when called twice.
// exporterhelper has drained the sending queue before it calls shutdown.
func (e *redisAnalyticsExporter) shutdown(context.Context) error {
	e.mu.Lock()
	stopConnect := e.stopConnect
	e.stopConnect = nil
	e.mu.Unlock()
	if stopConnect != nil {
		stopConnect()
	}
	e.connecting.Wait()
	e.committer.shutdown()
	e.mu.Lock()
	client := e.client
	e.client, e.runner, e.connErr = nil, nil, nil
	e.mu.Unlock()
	e.telemetry.Shutdown()
	if client == nil {
		return nil
	}
	if err := client.Close(); err != nil {
		return fmt.Errorf("close redis client: %w", err)
	}
	return nil
}

// reportFailure marks the component as recoverably failing (the health check
// shows it), once per outage: every report restamps the status, and the
// health check counts recovery_duration from that stamp.
func (e *redisAnalyticsExporter) reportFailure(err error) {
	if e.failing.Swap(true) {
		return
	}
	if host := e.currentHost(); host != nil {
		componentstatus.ReportStatus(host, componentstatus.NewRecoverableErrorEvent(err))
	}
}

// reportRecovery reports StatusOK after a push succeeds following a failure.
func (e *redisAnalyticsExporter) reportRecovery() {
	if !e.failing.Load() || !e.failing.CompareAndSwap(true, false) {
		return
	}
	if host := e.currentHost(); host != nil {
		componentstatus.ReportStatus(host, componentstatus.NewEvent(componentstatus.StatusOK))
	}
}

func (e *redisAnalyticsExporter) currentHost() component.Host {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.host
}

// commandCounter counts every command sent on the exporter's client in the
// redis_commands metric: each script call's EVALSHA, plus WAIT when
// wait_replicas > 0 (the pipeline of both counts two), plus EVAL (and its
// WAIT) after a NOSCRIPT.
type commandCounter struct{ e *redisAnalyticsExporter }

func (commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.e.telemetry.ExporterRedisAnalyticsRedisCommands.Add(ctx, 1)
		return next(ctx, cmd)
	}
}

func (c commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.e.telemetry.ExporterRedisAnalyticsRedisCommands.Add(ctx, int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// newBatchID returns 16 random bytes in hex.
func newBatchID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
