package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// A push, top to bottom: the request (already mapped and counted per
// resource entry by convert.go) gets a batch id on its first attempt and
// goes to the committer (committer.go), which applies it at once, or with
// the pushes that arrived while a call was in flight. applyGroup folds the group into one increment per
// counter key, selects the resource markers (dedup.go) and makes one script
// call (apply.go). Only when the script finds markers of pushes or entries
// counted before does it take another round without them.

// maxApplyRounds bounds the script calls of one group. A round after the
// first happens only when batch or resource markers exist (a retry or a
// resend); a further one only when another collector set a marker of this
// group between two rounds. Past the bound the group fails with a retryable
// error, and the retries resume with the exclusions found so far.
const maxApplyRounds = 4

var errApplyRounds = errors.New("redis apply counters: markers kept appearing; retrying")

// push applies one countsRequest (one OTLP request, or several merged by a
// batching sending queue) to Redis and returns once Redis answered.
//
// Retry idempotency: the first attempt gives the request a batch id, and
// exporterhelper's retries send the same request value (its retry_sender
// loops on the same request; this request type has no OnError, so it is
// never replaced). If an attempt was applied and only its reply was lost, the
// batch marker turns the retry into a no-op, whichever group it joins.
// go-redis' own retries resend the same EVALSHA arguments. The entries found
// already counted stay excluded in the request, so a retry sends the same
// counters.
func (e *redisAnalyticsExporter) push(ctx context.Context, r xexporterhelper.Request) error {
	req, ok := r.(*countsRequest)
	if !ok {
		return consumererror.NewPermanent(fmt.Errorf("redis_analytics: unexpected request type %T", r))
	}
	if req.batchID == "" {
		req.batchID = newBatchID()
	}
	return e.committer.do(ctx, newPushWaiter(req))
}

// applyGroup applies a group of pushes and answers each one.
func (e *redisAnalyticsExporter) applyGroup(group []*pushWaiter) {
	e.mu.Lock()
	runner := e.runner
	e.mu.Unlock()
	if runner == nil {
		answer(group, errNotStarted)
		return
	}
	ctx := context.Background()
	if t := e.cfg.TimeoutConfig.Timeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	agg, _ := e.aggregators.Get().(*aggregator)
	defer e.release(agg)

	start := time.Now()
	live := slices.Clone(group)
	for round := 1; ; round++ {
		e.aggregate(agg, live)
		if agg.counted == 0 {
			// Nothing to count: every record was dropped, or was counted
			// before (then Redis answered an earlier round).
			if round > 1 {
				e.reportRecovery()
			}
			e.recordCounted(ctx, agg)
			answer(live, nil)
			return
		}
		res, err := agg.call.Run(ctx, runner)
		err = classifyRedisError(err)
		if err == nil && res.Outcome != protocol.Applied && round == maxApplyRounds {
			err = errApplyRounds
		}
		if err != nil {
			if consumererror.IsPermanent(err) && len(live) > 1 {
				// An error that recurs (a counter key of the wrong type, an
				// overflow) belongs to some pushes of the group, not all:
				// apply each on its own, so that only those are dropped. The
				// call changed nothing, and each push keeps its batch id.
				forgetSameAsEarlier(live)
				for _, w := range live {
					e.applyGroup([]*pushWaiter{w})
				}
				return
			}
			e.groupFailed(ctx, agg, live, err)
			return
		}
		switch res.Outcome {
		case protocol.Applied:
			e.groupApplied(ctx, agg, live, res, time.Since(start))
			return
		case protocol.AppliedBefore:
			// Retries of pushes applied before: answer them, go on without.
			before := make([]*pushWaiter, 0, len(res.Positions))
			for _, i := range res.Positions {
				before = append(before, live[i])
			}
			for _, w := range before {
				e.appliedBefore(ctx, w)
			}
			live = slices.DeleteFunc(live, func(w *pushWaiter) bool { return slices.Contains(before, w) })
			if len(live) == 0 {
				e.reportRecovery()
				return
			}
		case protocol.DuplicateResources:
			// Entries counted before: exclude them, same batch ids.
			for _, j := range res.Positions {
				ref := agg.refs[agg.markerRes[j]]
				live[ref.member].req.entries[ref.entry].excluded = true
			}
		}
	}
}

// aggregate (re)fills agg from the group's entries that are not excluded
// and encodes the script arguments. An entry repeating an earlier entry of
// the group (a request queued with its own resend) is left out of this call.
func (e *redisAnalyticsExporter) aggregate(agg *aggregator, live []*pushWaiter) {
	forgetSameAsEarlier(live)
	for {
		agg.reset()
		for i, w := range live {
			agg.fold(w.req, i)
		}
		dups := agg.selectMarkers()
		if len(dups) == 0 {
			break
		}
		for _, i := range dups {
			ref := agg.refs[i]
			live[ref.member].req.entries[ref.entry].sameAsEarlier = true
		}
	}
	agg.finalize(&e.mapper)
	batchIDs := make([]string, len(live))
	for i, w := range live {
		batchIDs[i] = w.req.batchID
	}
	agg.encode(batchIDs, e.ttls, e.cfg.CardinalityLimits, e.knownSets)
}

// groupApplied records an applied group and answers its pushes.
func (e *redisAnalyticsExporter) groupApplied(ctx context.Context, agg *aggregator, live []*pushWaiter, res protocol.ApplyResult, elapsed time.Duration) {
	e.reportRecovery()
	e.recordCounted(ctx, agg)
	e.telemetry.ExporterRedisAnalyticsKeysWritten.Record(ctx, int64(agg.numKeys()))
	if res.Expired > 0 {
		e.telemetry.ExporterRedisAnalyticsCountersExpired.Add(ctx, res.Expired)
		e.logger.Error("Counters expired in Redis before pg_flush moved them; their counts are lost. "+
			"Make ttl much longer than the flush interval and check that pg_flush runs with the same key_prefix",
			zap.Int64("counters", res.Expired), zap.Duration("ttl", e.cfg.TTL), zap.String("key_prefix", e.cfg.KeyPrefix))
	}
	e.recordFolded(ctx, agg, res)
	defer e.learnSets(ctx, agg, res)
	if ce := e.logger.Check(zap.DebugLevel, "Applied counters"); ce != nil {
		ce.Write(zap.Int("pushes", len(live)), zap.Int64("events", agg.counted),
			zap.Int("keys", agg.numKeys()), zap.Int64("duplicate_events", agg.dropped[reasonDuplicate]),
			zap.Duration("elapsed", elapsed))
	}
	answer(live, nil)
}

// appliedBefore answers a push that Redis had applied before (a retry after
// a lost reply): its events were counted then, its metrics are recorded now.
func (e *redisAnalyticsExporter) appliedBefore(ctx context.Context, w *pushWaiter) {
	agg, _ := e.aggregators.Get().(*aggregator)
	defer e.release(agg)
	alone := []*pushWaiter{w}
	e.aggregate(agg, alone)
	forgetSameAsEarlier(alone)
	e.recordCounted(ctx, agg)
	e.telemetry.ExporterRedisAnalyticsBatchesDeduplicated.Add(ctx, 1)
	w.done <- nil
}

// groupFailed records a failed script call and answers the group's pushes
// with its error: a retryable failure keeps each request's batch id for its
// retry, a permanent one records the drops.
func (e *redisAnalyticsExporter) groupFailed(ctx context.Context, agg *aggregator, live []*pushWaiter, err error) {
	permanent := consumererror.IsPermanent(err)
	if permanent {
		e.recordDrops(ctx, agg)
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.permanent)
	} else {
		e.telemetry.ExporterRedisAnalyticsRedisErrors.Add(ctx, 1, e.attrs.retryable)
	}
	e.reportFailure(err)
	e.logger.Debug("Applying counters failed",
		zap.Int("pushes", len(live)), zap.Int("keys", agg.numKeys()),
		zap.Bool("permanent", permanent), zap.Error(err))
	forgetSameAsEarlier(live)
	answer(live, err)
}

// forgetSameAsEarlier clears what the last aggregation found repeated within
// the group: it holds for that group's call only.
func forgetSameAsEarlier(group []*pushWaiter) {
	for _, w := range group {
		for i := range w.req.entries {
			w.req.entries[i].sameAsEarlier = false
		}
	}
}

// overflowWarnInterval is the least time between two warnings about a
// cardinality cap or a sum overflow: a flood of new values must not flood
// the log too.
const overflowWarnInterval = time.Minute

// recordFolded records the events that a full cardinality set folded into
// protocol.OverflowValue (in Redis, or here for a set known to be full) and
// the sums Redis left out, with a rate-limited warning that names one of
// them.
func (e *redisAnalyticsExporter) recordFolded(ctx context.Context, agg *aggregator, res protocol.ApplyResult) {
	folded := agg.guards.localFolded
	for _, pos := range res.Folded {
		info := agg.guards.infos[pos]
		folded[info.key.kind] += info.events
	}
	var sample guardKey
	switch {
	case len(res.Folded) > 0:
		sample = agg.guards.infos[res.Folded[0]].key
	case agg.guards.localSample.kind != 0:
		sample = agg.guards.localSample
	}
	for kind, n := range folded {
		if n > 0 {
			e.telemetry.ExporterRedisAnalyticsCardinalityOverflow.Add(ctx, n, e.attrs.folded[kind])
		}
	}
	var overflowed int64
	for _, pos := range res.Overflowed {
		overflowed += agg.guards.sumValues(pos)
	}
	if overflowed > 0 {
		e.telemetry.ExporterRedisAnalyticsValuesDropped.Add(ctx, overflowed, e.attrs.valueDropped[valueSumOverflow])
	}
	if sample.kind == 0 && overflowed == 0 || !e.overflowWarn.Allow() {
		return
	}
	if sample.kind != 0 {
		e.logger.Warn("A cardinality cap of the day is reached: new values are counted under "+protocol.OverflowValue+
			" (see cardinality_limits; this warning repeats at most once a minute)",
			zap.Stringer("cap", sample.kind), zap.String("property", sample.attr), zap.String("value", sample.member),
			zap.Time("day", time.Unix(sample.day*3600, 0).UTC()))
	}
	if overflowed > 0 {
		e.logger.Warn("Sums in Redis would overflow 64 bits: their values are dropped (this warning repeats at most once a minute)",
			zap.Int64("values", overflowed))
	}
}

// learnSets remembers what the applied call told of the day's cardinality
// sets, after the group was answered: the members its guards admitted, and
// (read from Redis) the members of the sets its folded guards found full.
// The next pushes then need no guard for them (knownSets). A failed read
// only costs the next pushes those checks in Redis.
func (e *redisAnalyticsExporter) learnSets(ctx context.Context, agg *aggregator, res protocol.ApplyResult) {
	infos := agg.guards.infos
	if len(infos) == 0 {
		return
	}
	oldest := dayOf(protocol.HourOf(e.now().Add(-e.cfg.MaxEventAge - e.cfg.MaxClockSkew)))
	folded := make([]guardKey, 0, len(res.Folded))
	isFolded := make(map[int]bool, len(res.Folded))
	for _, pos := range res.Folded {
		folded = append(folded, infos[pos].key)
		isFolded[pos] = true
	}
	admitted := make([]guardKey, 0, len(infos)-len(folded))
	for pos, info := range infos {
		if !isFolded[pos] {
			admitted = append(admitted, info.key)
		}
	}
	e.knownSets.remember(admitted, oldest)
	if len(folded) == 0 {
		return
	}
	e.mu.Lock()
	client := e.client
	e.mu.Unlock()
	if client == nil {
		return
	}
	// Its own time: the group's may be nearly spent, and it is answered.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), learnTimeout)
	defer cancel()
	if err := e.knownSets.learn(ctx, client, e.schema, folded, e.cfg.CardinalityLimits, oldest); err != nil {
		e.logger.Debug("Reading full cardinality sets failed", zap.Error(err))
	}
}

// recordCounted adds what agg counted and dropped to the metrics.
func (e *redisAnalyticsExporter) recordCounted(ctx context.Context, agg *aggregator) {
	e.recordDrops(ctx, agg)
	if agg.counted > 0 {
		e.telemetry.ExporterRedisAnalyticsEvents.Add(ctx, agg.counted, e.attrs.signal)
	}
	if agg.anonymous > 0 {
		e.telemetry.ExporterRedisAnalyticsEventsWithoutIdentity.Add(ctx, agg.anonymous, e.attrs.signal)
	}
}

// recordDrops adds agg's drops to the events_dropped and values_dropped
// metrics.
func (e *redisAnalyticsExporter) recordDrops(ctx context.Context, agg *aggregator) {
	for r, n := range agg.dropped {
		if n > 0 {
			e.telemetry.ExporterRedisAnalyticsEventsDropped.Add(ctx, n, e.attrs.dropped[r])
		}
	}
	for r, n := range agg.valueDrops {
		if n > 0 {
			e.telemetry.ExporterRedisAnalyticsValuesDropped.Add(ctx, n, e.attrs.valueDropped[r])
		}
	}
}

func (e *redisAnalyticsExporter) release(agg *aggregator) {
	if !agg.reusable() {
		return
	}
	agg.reset()
	e.aggregators.Put(agg)
}

func answer(group []*pushWaiter, err error) {
	for _, w := range group {
		w.done <- err
	}
}
