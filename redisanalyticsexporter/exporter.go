package redisanalyticsexporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/keyschema"
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
	schema    keyschema.Schema
	mapper    mapper
	script    *redisconn.Script
	// now is the clock for records without a timestamp and for pending scores.
	now func() time.Time
	// hooks are added to the Redis client at start (tests observe or break
	// commands with them).
	hooks []redis.Hook

	ttlSeconds    int64
	markerSeconds int64
	dedupSeconds  int64

	// attrs are the precomputed metric attribute sets of this signal.
	attrs signalAttrs

	converters  sync.Pool // of *converter
	aggregators sync.Pool // of *aggregator

	mu      sync.Mutex // guards client, runner and host across start and shutdown
	client  redis.UniversalClient
	runner  *redisconn.ScriptRunner
	host    component.Host
	failing atomic.Bool // the last push failed on Redis; report OK on recovery
}

// signalAttrs holds the metric attribute options of one signal, built once
// so that recording a measurement does not allocate.
type signalAttrs struct {
	signal    metric.MeasurementOption
	dropped   [numDropReasons]metric.MeasurementOption
	retryable metric.MeasurementOption
	permanent metric.MeasurementOption
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
	return a
}

func newRedisAnalyticsExporter(cfg *Config, set exporter.Settings, signal string) (*redisAnalyticsExporter, error) {
	schema, err := keyschema.New(cfg.KeyPrefix)
	if err != nil { // Validate rejects this first; kept for direct callers
		return nil, fmt.Errorf("key_prefix: %w", err)
	}
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("create telemetry: %w", err)
	}
	markerTTL := cfg.batchMarkerTTL()
	return &redisAnalyticsExporter{
		cfg:           cfg,
		logger:        set.Logger,
		telemetry:     tb,
		schema:        schema,
		mapper:        newMapper(cfg),
		script:        redisconn.NewScript(applySource),
		now:           time.Now,
		ttlSeconds:    ceilSeconds(cfg.TTL),
		markerSeconds: ceilSeconds(markerTTL),
		dedupSeconds:  ceilSeconds(cfg.DedupWindow),
		attrs:         newSignalAttrs(signal),
		converters:    sync.Pool{New: func() any { return newConverter() }},
		aggregators:   sync.Pool{New: func() any { return newAggregator() }},
	}, nil
}

// start connects to Redis. Clients are built here, not in the factory, so that
// a collector that only validates its config opens no connection; PING makes a
// wrong endpoint or password fail startup with a clear error.
func (e *redisAnalyticsExporter) start(ctx context.Context, host component.Host) error {
	client, err := e.cfg.ClientConfig.NewClient(ctx)
	if err != nil {
		return fmt.Errorf("connect to redis: %w", err)
	}
	// Before the hooks: redis_commands counts the counting path only.
	e.cfg.ClientConfig.WarnIfEvicting(ctx, client, e.logger)
	hooks := append(slices.Clone(e.hooks), commandCounter{e})
	for _, h := range hooks {
		client.AddHook(h)
	}
	runner := e.cfg.ClientConfig.NewScriptRunner(client, hooks...)
	e.mu.Lock()
	e.client, e.runner, e.host = client, runner, host
	e.mu.Unlock()
	e.checkFlushers(host)
	e.logger.Info("Connected to Redis",
		zap.String("redis", e.cfg.ClientConfig.Describe()),
		zap.String("key_prefix", e.cfg.KeyPrefix),
		zap.Int("wait_replicas", e.cfg.ClientConfig.WaitReplicas))
	return nil
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
		f, ok := ext.(keyschema.Flusher)
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

// shutdown closes the client. It is safe without start and when called twice.
// exporterhelper has drained the sending queue before it calls shutdown.
func (e *redisAnalyticsExporter) shutdown(context.Context) error {
	e.mu.Lock()
	client := e.client
	e.client, e.runner = nil, nil
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

// maxDedupRounds bounds the script calls of one push attempt. A round after
// the first happens only when resource markers exist (a resend, see
// dedup.go); a further round only when another push set a marker of this
// request between two rounds. Past the bound the attempt fails with a
// retryable error and the retry resumes with the exclusions found so far.
const maxDedupRounds = 4

var errDedupRounds = errors.New("redis apply counters: resource markers kept appearing; retrying")

// push applies one countsRequest (one or more OTLP requests, merged by the
// sending queue) to Redis in one script call; more only when the request
// repeats resource entries already counted (dedup.go).
//
// Retry idempotency: the first attempt gives the request a batch id, and
// exporterhelper's retries send the same request value (its retry_sender
// loops on the same request; this request type has no OnError, so it is
// never replaced). If an attempt was applied and only its reply was lost, the
// script's batch marker turns the retry into a no-op. go-redis' own retries
// resend the same EVALSHA arguments. The entries found already counted stay
// excluded in the request, so a retry sends the same counters.
//
// Drops (by reason) are recorded once per push, when it ends without a
// retryable error.
func (e *redisAnalyticsExporter) push(ctx context.Context, r xexporterhelper.Request) error {
	req, ok := r.(*countsRequest)
	if !ok {
		return consumererror.NewPermanent(fmt.Errorf("redis_analytics: unexpected request type %T", r))
	}
	e.mu.Lock()
	runner := e.runner
	e.mu.Unlock()
	if runner == nil {
		return errNotStarted
	}
	if req.batchID == "" {
		req.batchID = newBatchID()
	}

	agg, _ := e.aggregators.Get().(*aggregator)
	defer e.release(agg)
	e.aggregate(agg, req)

	start := time.Now()
	var res applyResult
	for round := 1; ; round++ {
		if agg.counted == 0 {
			if round > 1 {
				// Redis answered the previous round: every remaining entry
				// was counted before. A success like any other.
				e.reportRecovery()
			}
			e.recordDrops(ctx, agg)
			return nil
		}
		agg.setBatchKey(e.schema.BatchKey(req.batchID))
		var err error
		res, err = runApply(ctx, runner, e.script, agg.keys, agg.args)
		if err == nil && res.outcome == outcomeDuplicateResources && round == maxDedupRounds {
			err = errDedupRounds
		}
		if err != nil {
			return e.pushFailed(ctx, req, agg, err)
		}
		if res.outcome != outcomeDuplicateResources {
			break
		}
		// Exclude the entries already counted and aggregate again, with the
		// same batch id: nothing of this batch was written yet.
		for _, j := range res.dups {
			req.entries[agg.markerRes[j]].excluded = true
		}
		e.aggregate(agg, req)
	}
	e.reportRecovery()
	e.recordDrops(ctx, agg)
	e.telemetry.ExporterRedisAnalyticsEvents.Add(ctx, agg.counted, e.attrs.signal)
	if agg.anonymous > 0 {
		e.telemetry.ExporterRedisAnalyticsEventsWithoutIdentity.Add(ctx, agg.anonymous, e.attrs.signal)
	}
	if res.outcome == outcomeDeduplicated {
		e.telemetry.ExporterRedisAnalyticsBatchesDeduplicated.Add(ctx, 1)
	} else {
		e.telemetry.ExporterRedisAnalyticsKeysWritten.Record(ctx, int64(agg.numKeys()))
	}
	if res.expired > 0 {
		e.telemetry.ExporterRedisAnalyticsCountersExpired.Add(ctx, res.expired)
		e.logger.Error("Counters expired in Redis before pg_flush moved them; their counts are lost. "+
			"Make ttl much longer than the flush interval and check that pg_flush runs with the same key_prefix",
			zap.Int64("counters", res.expired), zap.Duration("ttl", e.cfg.TTL), zap.String("key_prefix", e.cfg.KeyPrefix))
	}
	if ce := e.logger.Check(zap.DebugLevel, "Applied counters"); ce != nil {
		ce.Write(zap.String("batch_id", req.batchID), zap.Int64("events", agg.counted),
			zap.Int("keys", agg.numKeys()), zap.Bool("deduplicated", res.outcome == outcomeDeduplicated),
			zap.Int64("duplicate_events", agg.dropped[reasonDuplicate]),
			zap.Duration("elapsed", time.Since(start)))
	}
	return nil
}

// pushFailed records a failed script call: a retryable failure keeps the
// request's batch id for the retry, a permanent one records the drops.
func (e *redisAnalyticsExporter) pushFailed(ctx context.Context, req *countsRequest, agg *aggregator, err error) error {
	permanent := consumererror.IsPermanent(err)
	if permanent {
		e.recordDrops(ctx, agg)
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.permanent)
	} else {
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.retryable)
	}
	e.reportFailure(err)
	e.logger.Debug("Applying counters failed",
		zap.String("batch_id", req.batchID), zap.Int("keys", agg.numKeys()),
		zap.Bool("permanent", permanent), zap.Error(err))
	return err
}

// recordDrops adds the push's drops to the events_dropped metric.
func (e *redisAnalyticsExporter) recordDrops(ctx context.Context, agg *aggregator) {
	for r, n := range agg.dropped {
		if n > 0 {
			e.telemetry.ExporterRedisAnalyticsEventsDropped.Add(ctx, n, e.attrs.dropped[r])
		}
	}
}

// aggregate (re)fills agg from the request's entries that are not excluded
// and encodes the script arguments. An entry repeating an earlier entry of
// the same request (the queue merged a request with its own resend) is
// excluded too.
func (e *redisAnalyticsExporter) aggregate(agg *aggregator, req *countsRequest) {
	for {
		agg.reset()
		agg.fold(req)
		dups := agg.selectMarkers()
		if len(dups) == 0 {
			break
		}
		for _, i := range dups {
			req.entries[i].excluded = true
		}
	}
	agg.finalize(&e.mapper)
	agg.encode(e.schema, e.ttlSeconds, e.markerSeconds, e.dedupSeconds)
}

func (e *redisAnalyticsExporter) release(agg *aggregator) {
	if !agg.reusable() {
		return
	}
	agg.reset()
	e.aggregators.Put(agg)
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

// ceilSeconds rounds d up to whole seconds (Redis TTLs are in seconds).
func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return max(s, 1)
}
