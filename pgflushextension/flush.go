package pgflushextension

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// Log field keys used in several places.
const (
	keyFlushID     = "flush_id"
	keyCounters    = "counters"
	keyQuarantined = "quarantined"
	keyElapsed     = "elapsed"
	// keyPendingLeft and keyStagingLeft: what a final flush left in Redis.
	keyPendingLeft = "pending_left"
	keyStagingLeft = "staging_entries_left"
)

// stageFraction is the part of a tick's time (its "timeout", or less when
// its context ends sooner) during which it starts new work: recovering a
// staging entry or staging a batch. The rest is left to the batches already
// staged (at most apply_workers + 1, about two APPLY rounds) and to ledger
// pruning, so that a tick that runs out of time in a backlog ends cleanly
// (logged at Warn, status unchanged) instead of having its transactions
// rolled back at the deadline and reporting a failure.
const stageFraction = 0.75

// flushStats describes one flush tick.
type flushStats struct {
	// Read at the start of the tick.
	pending          int64
	oldestPendingAge time.Duration
	atRisk           int64
	stagingEntries   int

	// recovered counts staging entries applied (or found already applied)
	// by recovery; deferred the ones left for the next tick because this
	// one was out of time.
	recovered int
	deferred  int
	// outOfTime: the tick stopped staging at its stage deadline (see
	// stageFraction) while counters were still pending.
	outOfTime bool
	// batches counts the non-empty batches that this tick's STAGEs handed
	// to an applier, whether or not their APPLY then succeeded (recovered
	// entries are counted in recovered).
	batches int
	// counters is the number of counters committed by this tick; rows the
	// rows upserted per family (indexed by protocol.Family).
	counters int
	rows     [len(families) + 1]int64
	// sumsOverflowed counts the sum rows left out, per family.
	sumsOverflowed [len(families) + 1]int64
	expired        int
	quarantined    int
	pruned         int64
}

// leftBehind reports whether the tick ran out of time before it moved what
// it had to: counters pending at its start, or staging entries to recover.
func (s *flushStats) leftBehind() bool { return s.outOfTime || s.deferred > 0 }

func (s *flushStats) logFields() []zap.Field {
	return []zap.Field{
		zap.Int("batches", s.batches),
		zap.Int(keyCounters, s.counters),
		zap.Int("recovered", s.recovered),
		zap.Int("expired", s.expired),
		zap.Int(keyQuarantined, s.quarantined),
		zap.Int64("pending_at_start", s.pending),
		zap.Int("staging_entries", s.stagingEntries),
	}
}

// newFlushID returns a unique flush id: the time in ms (base 36, for humans)
// and 96 random bits.
func newFlushID(now time.Time) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return strconv.FormatInt(now.UnixMilli(), 36) + "-" + hex.EncodeToString(b[:])
}

// flush runs one tick of the loop (see runFlush); a tick that runs out of
// time in a backlog finishes what it staged, warns and succeeds, and the
// next tick continues.
func (f *flusher) flush(ctx context.Context) (flushStats, error) {
	st, err := f.runFlush(ctx)
	if err == nil && st.leftBehind() {
		f.logger.Warn("flush timeout reached with counters still pending; this tick applied what it had staged and the next tick continues (a backlog: raise timeout or batch_size, or flush more often if it persists)",
			zap.Duration("timeout", f.cfg.Timeout),
			zap.Int("batches", st.batches),
			zap.Int(keyCounters, st.counters),
			zap.Int("recovered", st.recovered),
			zap.Int("deferred_staging_entries", st.deferred),
			zap.Int64("pending_at_start", st.pending))
	}
	return st, err
}

// runFlush runs one tick, bounded by "timeout": recovery of left-over
// staging entries, then STAGE/APPLY/CLEANUP batches until what was pending
// at the start is drained, then ledger pruning. Ticks of one instance never
// overlap. The caller reports the outcome.
//
// New work starts only until the stage deadline (stageFraction of the
// tick's time): a tick that runs out of time in a backlog finishes what it
// staged and reports it in flushStats.leftBehind.
func (f *flusher) runFlush(ctx context.Context) (flushStats, error) {
	f.flushMu.Lock()
	defer f.flushMu.Unlock()
	start := time.Now()
	tickCtx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	deadline, _ := tickCtx.Deadline() // set: WithTimeout
	stageBy := start.Add(time.Duration(float64(deadline.Sub(start)) * stageFraction))
	var st flushStats
	err := f.runTick(tickCtx, stageBy, &st)
	f.record(ctx, &st, err, time.Since(start))
	return st, err
}

// runTick runs the steps of one tick; it starts no recovery and no STAGE
// after stageBy.
func (f *flusher) runTick(ctx context.Context, stageBy time.Time, st *flushStats) error {
	snap, err := f.store.Snapshot(ctx, f.cfg.CounterTTL/2)
	if err != nil {
		return err
	}
	st.pending, st.atRisk, st.stagingEntries = snap.Pending, snap.AtRisk, len(snap.Staging)
	if !snap.OldestPending.IsZero() {
		// Both by Redis' clock, which scored the pending set.
		st.oldestPendingAge = max(0, snap.RedisNow.Sub(snap.OldestPending))
	}
	f.telemetry.PgFlushPendingCounters.Record(ctx, st.pending)
	f.telemetry.PgFlushOldestPendingAge.Record(ctx, st.oldestPendingAge.Seconds())
	f.telemetry.PgFlushPendingAtRisk.Record(ctx, st.atRisk)
	f.telemetry.PgFlushStagingEntries.Record(ctx, int64(st.stagingEntries))
	if f.cfg.CounterTTL > 0 && st.oldestPendingAge > f.cfg.CounterTTL/2 {
		f.logger.Warn("pending counters are older than half of counter_ttl and risk expiring before they are flushed; flush more often, raise batch_size or timeout, or check PostgreSQL",
			zap.Duration("oldest_pending_age", st.oldestPendingAge),
			zap.Int64("at_risk", st.atRisk),
			zap.Duration("counter_ttl", f.cfg.CounterTTL))
	}

	var errs []error
	if err := f.recoverStaging(ctx, snap.RedisNow, stageBy, snap.Staging, st); err != nil {
		errs = append(errs, err)
	}
	if ctx.Err() == nil {
		if err := f.stageBatches(ctx, stageBy, snap.Pending, st); err != nil {
			errs = append(errs, err)
		}
	}
	if st.expired > 0 {
		f.logger.Error("pending counters had expired in Redis before they were flushed; their counts are lost (raise the exporter's ttl or flush more often)",
			zap.Int("expired", st.expired))
	}
	if ctx.Err() == nil {
		n, err := f.pruneLedger(ctx, snap.Staging)
		if err != nil {
			f.logger.Warn("ledger pruning failed; retried next tick", zap.Error(err))
		}
		st.pruned = n
	}
	return errors.Join(errs...)
}

// pruneLedger deletes the ledger rows older than "ledger_retention" whose
// flush ids are not in staged, the staging index as this tick's snapshot
// read it (see pruneLedger in upsert.go): a staging entry keeps its ledger
// row for as long as it waits, so however old it is, it is applied at most
// once. Reusing the snapshot costs no round trip to a Redis that may be
// down.
func (f *flusher) pruneLedger(ctx context.Context, staged []protocol.StagingEntry) (int64, error) {
	ids := make([]string, len(staged))
	for i, e := range staged {
		ids[i] = e.ID
	}
	return pruneLedger(ctx, f.pool, f.cfg.LedgerRetention, ids)
}

// recoverStaging applies the staging entries that this instance left
// unfinished and those older than the grace period (left by a dead or stuck
// flusher). An entry applied concurrently by two flushers is serialized by the
// ledger's primary key: the second one blocks until the first commits, then
// finds the flush id and writes nothing. Ages are measured by Redis's clock
// (redisNow), which stamped the entries. However old an entry is, it is
// applied: the ledger keeps the row of every staged flush id (pruneLedger),
// so an entry whose batch was committed is found applied and only cleaned
// up. No entry is started after stageBy: the rest are counted as deferred
// and left for the next tick.
func (f *flusher) recoverStaging(ctx context.Context, redisNow, stageBy time.Time, entries []protocol.StagingEntry, st *flushStats) error {
	inIndex := make(map[string]struct{}, len(entries))
	var errs []error
	for _, e := range entries {
		inIndex[e.ID] = struct{}{}
		own := f.isOwn(e.ID)
		age := redisNow.Sub(e.Created)
		if !own && age < f.grace {
			continue // another flusher is (probably) still working on it
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("recover staging: %w", err))
			break
		}
		if !time.Now().Before(stageBy) {
			st.deferred++
			continue
		}
		if err := f.store.ConfirmReplicated(ctx, e.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		fields, err := f.store.ReadStaging(ctx, e.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(fields) == 0 {
			// Finished by another flusher between our index read and HGETALL.
			if err := f.store.Finish(ctx, e.ID, nil); err != nil {
				errs = append(errs, err)
				continue
			}
			f.removeOwn(e.ID)
			continue
		}
		f.reach(stepRecoveryRead)
		if err := f.applyAndFinish(ctx, e.ID, len(fields), parseBatch(f.schema, fields), st); err != nil {
			errs = append(errs, err)
			continue
		}
		st.recovered++
		f.logger.Info("recovered staging entry", zap.String(keyFlushID, e.ID), zap.Int(keyCounters, len(fields)),
			zap.Bool("own", own), zap.Duration("age", age))
	}
	// An own id missing from the index was never staged (the script failed or
	// found nothing) or was finished by another flusher.
	f.ownMu.Lock()
	for id := range f.own {
		if _, ok := inIndex[id]; !ok {
			delete(f.own, id)
		}
	}
	f.ownMu.Unlock()
	return errors.Join(errs...)
}

// stagedBatch is a batch handed from the stager to the applier.
type stagedBatch struct {
	id      string
	expired int
	fields  int
	parsed  *parsedBatch // nil when nothing was staged
	err     error
}

// stageBatches runs STAGE/APPLY/CLEANUP batches until a STAGE takes fewer
// than batch_size counters, or the batches have taken as many counters as
// were pending at the start of the tick (so that a tick does not chase a
// steady stream of new counters until its timeout), or stageBy has passed:
// then the batches already staged are still applied under ctx, and
// st.outOfTime is set.
//
// A stager goroutine stages (and parses) batches ahead and hands them over
// an unbuffered channel to "apply_workers" appliers, each with its own
// PostgreSQL transaction: at most apply_workers + 1 batches are held in
// memory. Concurrent transactions cannot deadlock: each upserts its rows
// sorted by primary key, family by family (the same holds between
// collectors). At the first failure the appliers stop the stager and apply
// nothing more; every staged but unapplied batch stays in Redis and in the
// own set, and the next tick applies it first.
func (f *flusher) stageBatches(ctx context.Context, stageBy time.Time, pendingAtStart int64, st *flushStats) error {
	stageCtx, stopStaging := context.WithCancel(ctx)
	defer stopStaging()
	batches := make(chan stagedBatch)
	var outOfTime bool // written by the stager before it closes batches
	go func() {
		defer close(batches)
		outOfTime = f.stageLoop(stageCtx, stageBy, pendingAtStart, batches)
	}()

	workers := max(1, f.cfg.ApplyWorkers)
	stats := make([]flushStats, workers)
	errs := make([]error, workers)
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ws := &stats[w]
			for b := range batches {
				ws.expired += b.expired
				switch {
				case failed.Load():
					// Drain after a failure: a batch staged meanwhile stays staged.
				case b.err != nil:
					errs[w] = b.err
					failed.Store(true)
					stopStaging()
				case b.parsed != nil:
					ws.batches++
					if err := f.applyAndFinish(ctx, b.id, b.fields, b.parsed, ws); err != nil {
						errs[w] = err
						failed.Store(true)
						stopStaging()
					}
				}
			}
		})
	}
	wg.Wait() // the stager has closed batches
	for i := range stats {
		st.addBatches(&stats[i])
	}
	st.outOfTime = outOfTime
	return errors.Join(errs...)
}

// addBatches adds the batch counts of o (one applier's) to s.
func (s *flushStats) addBatches(o *flushStats) {
	s.expired += o.expired
	s.batches += o.batches
	s.counters += o.counters
	s.quarantined += o.quarantined
	for i := range s.rows {
		s.rows[i] += o.rows[i]
		s.sumsOverflowed[i] += o.sumsOverflowed[i]
	}
}

// stageLoop stages batches and sends them to out until there is nothing
// more to take this tick, ctx is done or a STAGE fails. It reports whether
// it stopped at stageBy with counters still to take.
func (f *flusher) stageLoop(ctx context.Context, stageBy time.Time, pendingAtStart int64, out chan<- stagedBatch) (outOfTime bool) {
	var taken int64
	for ctx.Err() == nil {
		if !time.Now().Before(stageBy) {
			return taken < pendingAtStart
		}
		id := newFlushID(f.now())
		// Registered before the script runs: if its reply is lost, the next
		// tick finds the id in the staging index and applies it at once.
		f.addOwn(id)
		f.reach(stepBeforeStage)
		res, err := f.store.Stage(ctx, id, f.cfg.BatchSize)
		fields := res.Fields
		if err == nil && res.AlreadyStaged {
			fields, err = f.store.ReadStaging(ctx, id)
		}
		if err != nil {
			out <- stagedBatch{id: id, err: err}
			return false
		}
		b := stagedBatch{id: id, expired: res.Expired, fields: len(fields)}
		if len(fields) == 0 {
			f.removeOwn(id)
		} else {
			f.reach(stepAfterStage)
			b.parsed = parseBatch(f.schema, fields)
		}
		out <- b
		if res.AlreadyStaged {
			continue
		}
		taken += int64(res.Taken)
		if res.Taken < f.cfg.BatchSize || taken >= pendingAtStart {
			return false
		}
	}
	return false
}

func (f *flusher) addOwn(id string) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	f.own[id] = struct{}{}
}

func (f *flusher) removeOwn(id string) {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	delete(f.own, id)
}

func (f *flusher) isOwn(id string) bool {
	f.ownMu.Lock()
	defer f.ownMu.Unlock()
	_, ok := f.own[id]
	return ok
}

// applyAndFinish runs APPLY then CLEANUP for one staging entry of
// fieldCount staged fields, parsed into b.
func (f *flusher) applyAndFinish(ctx context.Context, id string, fieldCount int, b *parsedBatch, st *flushStats) error {
	res, err := applyBatch(ctx, f.pool, f.upsert, id, b, f.failpoint)
	if err != nil {
		f.logger.Warn("flush batch not committed; it stays staged in Redis and is retried",
			zap.String(keyFlushID, id), zap.Int(keyCounters, fieldCount), zap.Error(err))
		return fmt.Errorf("flush %s: %w", id, err)
	}
	f.reach(stepAfterCommit)
	f.reportOverflows(id, res.overflowed, st)
	if err := f.store.Finish(ctx, id, b.quarantine); err != nil {
		f.logger.Warn("flush batch committed but its staging entry was not cleaned up; the ledger makes the retry a no-op",
			zap.String(keyFlushID, id), zap.Int(keyCounters, fieldCount), zap.Error(err))
		return fmt.Errorf("flush %s: %w", id, err)
	}
	f.reach(stepAfterCleanup)
	f.removeOwn(id)
	if len(b.quarantine) > 0 {
		st.quarantined += len(b.quarantine)
		f.logger.Error("counters could not be parsed or stored and were moved to the quarantine hash",
			zap.String(keyFlushID, id), zap.Int(keyQuarantined, len(b.quarantine)),
			zap.String("quarantine_key", f.schema.QuarantineKey()), zap.Strings("sample", b.quarantineSample))
	}
	if !res.alreadyApplied {
		st.counters += b.counters
		for _, fam := range families {
			st.rows[fam] += res.rows[fam]
		}
	}
	f.logger.Debug("flush batch committed", zap.String(keyFlushID, id), zap.Int(keyCounters, b.counters),
		zap.Bool("already_applied", res.alreadyApplied))
	return nil
}

// maxOverflowLogs bounds the Error lines logged per batch for sums left out.
const maxOverflowLogs = 10

// reportOverflows counts the sum rows that the committed batch id left out
// and logs the first few of them, each with its row.
func (f *flusher) reportOverflows(id string, overflowed []sumOverflow, st *flushStats) {
	for i, o := range overflowed {
		st.sumsOverflowed[o.family]++
		if i >= maxOverflowLogs {
			continue
		}
		bucket := time.Unix(o.hour*3600, 0).UTC()
		layout := time.DateOnly
		if o.family.IsHourly() {
			layout = "2006-01-02T15:04Z07:00"
		}
		f.logger.Error("a staged sum would overflow BIGINT once added to its row in PostgreSQL; the row keeps its value and this amount is dropped",
			zap.String(keyFlushID, id),
			zap.Stringer("family", o.family),
			zap.String("event_type", o.eventType),
			zap.String("attribute", o.attribute),
			zap.String("bucket", bucket.Format(layout)),
			zap.Int64("sum", o.sum),
			zap.Int("sums_overflowed", len(overflowed)))
	}
}

// Metric attribute sets, built once.
var (
	attrOutcomeSuccess = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "success")))
	attrOutcomeFailure = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failure")))
	attrFamily         = func() (a [len(families) + 1]metric.MeasurementOption) {
		for _, f := range families {
			a[f] = metric.WithAttributeSet(attribute.NewSet(attribute.String("family", f.String())))
		}
		return a
	}()
)

// record updates the internal metrics after a tick (the gauges are recorded
// as soon as they are read).
func (f *flusher) record(ctx context.Context, st *flushStats, err error, elapsed time.Duration) {
	tb := f.telemetry
	if err != nil {
		tb.PgFlushFlushes.Add(ctx, 1, attrOutcomeFailure)
	} else {
		tb.PgFlushFlushes.Add(ctx, 1, attrOutcomeSuccess)
	}
	tb.PgFlushDuration.Record(ctx, elapsed.Seconds())
	tb.PgFlushCountersFlushed.Add(ctx, int64(st.counters))
	for _, fam := range families {
		if st.rows[fam] > 0 {
			tb.PgFlushRowsUpserted.Add(ctx, st.rows[fam], attrFamily[fam])
		}
	}
	tb.PgFlushStagingRecovered.Add(ctx, int64(st.recovered))
	tb.PgFlushCountersExpired.Add(ctx, int64(st.expired))
	tb.PgFlushCountersQuarantined.Add(ctx, int64(st.quarantined))
	for _, fam := range families {
		if st.sumsOverflowed[fam] > 0 {
			tb.PgFlushSumsOverflowed.Add(ctx, st.sumsOverflowed[fam], attrFamily[fam])
		}
	}
}
