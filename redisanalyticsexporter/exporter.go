package redisanalyticsexporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/keyschema"
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
	script    *redis.Script
	// now is the clock for records without a timestamp and for pending scores.
	now func() time.Time
	// hooks are added to the Redis client at start (tests observe or break
	// commands with them).
	hooks []redis.Hook

	ttlSeconds    int64
	markerTTL     time.Duration
	markerSeconds int64
	dedupSeconds  int64

	// attrs are the precomputed metric attribute sets of this signal.
	attrs signalAttrs

	aggregators sync.Pool // of *aggregator
	batches     *batchIDs
	seed        maphash.Seed

	mu      sync.Mutex // guards client and host across start and shutdown
	client  *redis.Client
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
		script:        redis.NewScript(applySource),
		now:           time.Now,
		ttlSeconds:    ceilSeconds(cfg.TTL),
		markerTTL:     markerTTL,
		markerSeconds: ceilSeconds(markerTTL),
		dedupSeconds:  ceilSeconds(cfg.DedupWindow),
		attrs:         newSignalAttrs(signal),
		aggregators:   sync.Pool{New: func() any { return newAggregator() }},
		batches:       newBatchIDs(),
		seed:          maphash.MakeSeed(),
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
	for _, h := range e.hooks {
		client.AddHook(h)
	}
	client.AddHook(commandCounter{e})
	e.mu.Lock()
	e.client, e.host = client, host
	e.mu.Unlock()
	e.logger.Info("Connected to Redis",
		zap.String("endpoint", e.cfg.ClientConfig.Endpoint),
		zap.String("key_prefix", e.cfg.KeyPrefix))
	return nil
}

// shutdown closes the client. It is safe without start and when called twice.
// exporterhelper has drained the sending queue before it calls shutdown.
func (e *redisAnalyticsExporter) shutdown(context.Context) error {
	e.mu.Lock()
	client := e.client
	e.client = nil
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

func (e *redisAnalyticsExporter) pushLogs(ctx context.Context, ld plog.Logs) error {
	return e.push(ctx, ld, func(a *aggregator, nowNanos int64) { a.addLogs(ld, &e.mapper, nowNanos) })
}

func (e *redisAnalyticsExporter) pushTraces(ctx context.Context, td ptrace.Traces) error {
	return e.push(ctx, td, func(a *aggregator, nowNanos int64) { a.addTraces(td, &e.mapper, nowNanos) })
}

// maxDedupRounds bounds the script calls of one push attempt. A round after
// the first happens only when resource markers exist (a resend, see
// dedup.go); a further round only when another push set a marker of this
// request between two rounds. Past the bound the attempt fails with a
// retryable error and the retry resumes with the exclusions found so far.
const maxDedupRounds = 4

var errDedupRounds = errors.New("redis apply counters: resource markers kept appearing; retrying")

// push aggregates one request and applies it to Redis in one script call
// (more only when the request repeats resource entries already counted, see
// dedup.go).
//
// Retry idempotency: data is the plog.Logs or ptrace.Traces value itself (a
// comparable struct of two pointers). exporterhelper v0.165.0 retries with the
// same value: in exporterhelper@v0.165.0/internal/retry_sender.go, Send loops
// on rs.next.Send(ctx, req) with the same req, replaced only by
// req.OnError(err), and internal/queuebatch/logs.go (traces.go alike)
// OnError returns the same request unless err is a consumererror.Logs partial
// error, which this exporter never returns; RequestConsumeFromLogs passes
// req.ld to the pusher. So a push that failed with a retryable error keeps its
// batch id, its clock reading and its excluded resource entries in
// e.batches, and the retry sends the same id with the same data: if the first
// attempt was applied and only its reply was lost, the script's batch marker
// turns the retry into a no-op. go-redis' own retries resend the same EVALSHA
// arguments, so they are idempotent too.
//
// Drops (by reason) are recorded once per push, when it ends without a
// retryable error.
func (e *redisAnalyticsExporter) push(ctx context.Context, data any, fill func(*aggregator, int64)) error {
	e.mu.Lock()
	client := e.client
	e.mu.Unlock()
	if client == nil {
		return errNotStarted
	}

	wallNow := e.now()
	prev, isRetry := e.batches.lookup(data, wallNow)
	now := wallNow
	var excluded []int32
	if isRetry {
		now = prev.now // same buckets for records without a timestamp
		excluded = prev.excluded
	}

	agg, _ := e.aggregators.Get().(*aggregator)
	defer e.release(agg)
	excluded = e.aggregate(agg, fill, now, excluded)
	fp := agg.fingerprint(e.seed)
	if isRetry && fp != prev.fingerprint {
		// The same pdata value now holds other data (a pooled request reused
		// after exporterhelper gave up on it): this is a new batch.
		isRetry, now = false, wallNow
		excluded = e.aggregate(agg, fill, now, nil)
		fp = agg.fingerprint(e.seed)
	}
	entry := prev
	if !isRetry {
		entry = batchEntry{id: newBatchID(), now: now, expires: wallNow.Add(e.markerTTL)}
	}
	entry.fingerprint, entry.excluded = fp, excluded

	start := time.Now()
	var res applyResult
	for round := 1; ; round++ {
		if agg.counted == 0 {
			e.batches.forget(data)
			e.recordDrops(ctx, agg)
			return nil
		}
		agg.setBatchKey(e.schema.BatchKey(entry.id))
		var err error
		res, err = runApply(ctx, client, e.script, agg.keys, agg.args)
		if err == nil && res.outcome == outcomeDuplicateResources && round == maxDedupRounds {
			err = errDedupRounds
		}
		if err != nil {
			return e.pushFailed(ctx, data, entry, agg, err)
		}
		if res.outcome != outcomeDuplicateResources {
			break
		}
		// Exclude the entries already counted and aggregate again, with the
		// same batch id: nothing of this batch was written yet.
		more := make([]int32, len(res.dups))
		for i, j := range res.dups {
			more[i] = agg.markerRes[j]
		}
		excluded = e.aggregate(agg, fill, now, mergeExcluded(excluded, more))
		entry.fingerprint, entry.excluded = agg.fingerprint(e.seed), excluded
	}
	e.batches.forget(data)
	e.reportRecovery()
	e.recordDrops(ctx, agg)
	e.telemetry.ExporterRedisAnalyticsEvents.Add(ctx, agg.counted, e.attrs.signal)
	if res.outcome == outcomeDeduplicated {
		e.telemetry.ExporterRedisAnalyticsBatchesDeduplicated.Add(ctx, 1)
	} else {
		e.telemetry.ExporterRedisAnalyticsKeysWritten.Record(ctx, int64(agg.numKeys()))
	}
	if ce := e.logger.Check(zap.DebugLevel, "Applied counters"); ce != nil {
		ce.Write(zap.String("batch_id", entry.id), zap.Int64("events", agg.counted),
			zap.Int("keys", agg.numKeys()), zap.Bool("deduplicated", res.outcome == outcomeDeduplicated),
			zap.Int64("duplicate_events", agg.dropped[reasonDuplicate]),
			zap.Duration("elapsed", time.Since(start)))
	}
	return nil
}

// pushFailed records a failed script call: a retryable failure keeps the
// batch entry for the retry, a permanent one records the drops.
func (e *redisAnalyticsExporter) pushFailed(ctx context.Context, data any, entry batchEntry, agg *aggregator, err error) error {
	permanent := consumererror.IsPermanent(err)
	if permanent {
		e.batches.forget(data)
		e.recordDrops(ctx, agg)
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.permanent)
	} else {
		e.batches.remember(data, entry, e.now())
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.retryable)
	}
	e.reportFailure(err)
	e.logger.Debug("Applying counters failed",
		zap.String("batch_id", entry.id), zap.Int("keys", agg.numKeys()),
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

// aggregate (re)fills agg from the request, skipping the excluded resource
// entries, and encodes the script arguments. It returns the exclusions it
// used: excluded plus the entries repeating an earlier entry of the same
// request (a request merged with its own resend), which are excluded too.
func (e *redisAnalyticsExporter) aggregate(agg *aggregator, fill func(*aggregator, int64), now time.Time, excluded []int32) []int32 {
	for {
		agg.reset()
		agg.setExcluded(excluded)
		fill(agg, now.UnixNano())
		dups := agg.selectMarkers()
		if len(dups) == 0 {
			break
		}
		excluded = mergeExcluded(excluded, dups)
	}
	agg.finalize(&e.mapper)
	agg.encode(e.schema, e.ttlSeconds, now.UnixMilli(), e.markerSeconds, e.dedupSeconds)
	return excluded
}

func (e *redisAnalyticsExporter) release(agg *aggregator) {
	if !agg.reusable() {
		return
	}
	agg.reset()
	e.aggregators.Put(agg)
}

// reportFailure marks the component as recoverably failing (health_check shows it).
func (e *redisAnalyticsExporter) reportFailure(err error) {
	e.failing.Store(true)
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

// commandCounter counts every command sent on the exporter's client (EVALSHA,
// and EVAL after a NOSCRIPT) in the redis_commands metric.
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

// batchEntry is the batch id a failed push keeps for its retries.
type batchEntry struct {
	id          string
	fingerprint uint64
	// excluded lists the resource entries (by index) the push skips as
	// already counted, so that a retry sends the same counters.
	excluded []int32
	// now is the first attempt's clock reading: retries bucket records
	// without a timestamp the same way.
	now time.Time
	// expires is when the batch marker may be gone from Redis.
	expires time.Time
}

// batchIDs remembers the batch id of each push that failed with a retryable
// error, keyed by the request's pdata value. Entries are removed when the
// push succeeds or fails permanently and expire with the batch marker TTL, so
// the map holds at most the requests still being retried.
type batchIDs struct {
	mu        sync.Mutex
	entries   map[any]batchEntry
	nextPurge int
}

const minPurgeSize = 16

func newBatchIDs() *batchIDs {
	return &batchIDs{entries: make(map[any]batchEntry), nextPurge: minPurgeSize}
}

// lookup returns the live entry of data, if any.
func (b *batchIDs) lookup(data any, now time.Time) (batchEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.entries) == 0 {
		return batchEntry{}, false
	}
	entry, ok := b.entries[data]
	if !ok {
		return batchEntry{}, false
	}
	if !now.Before(entry.expires) {
		delete(b.entries, data)
		return batchEntry{}, false
	}
	return entry, true
}

// remember keeps entry for data's retries, purging expired entries now and then.
func (b *batchIDs) remember(data any, entry batchEntry, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries[data] = entry
	if len(b.entries) < b.nextPurge {
		return
	}
	for k, v := range b.entries {
		if !now.Before(v.expires) {
			delete(b.entries, k)
		}
	}
	b.nextPurge = max(2*len(b.entries), minPurgeSize)
}

// forget drops data's entry.
func (b *batchIDs) forget(data any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.entries) > 0 {
		delete(b.entries, data)
	}
}

// size is the number of remembered entries.
func (b *batchIDs) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.entries)
}
