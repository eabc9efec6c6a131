package redisanalyticsexporter

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exportertest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// gateHook holds the first script call until open is closed, and tells
// through entered that it is held.
type gateHook struct {
	entered chan struct{}
	open    chan struct{}
	calls   atomic.Int32
}

func newGateHook() *gateHook {
	return &gateHook{entered: make(chan struct{}), open: make(chan struct{})}
}

func (*gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (*gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (g *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "evalsha" && name != "eval" {
			return next(ctx, cmd)
		}
		if g.calls.Add(1) == 1 {
			close(g.entered)
			<-g.open
		}
		return next(ctx, cmd)
	}
}

// faultAt fails the at-th script call (1-based): before it reaches Redis,
// or, with afterApply, after Redis applied it (the reply is lost).
type faultAt struct {
	at         int32
	afterApply bool
	calls      atomic.Int32
}

func (*faultAt) DialHook(next redis.DialHook) redis.DialHook { return next }

func (*faultAt) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (f *faultAt) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "evalsha" && name != "eval" {
			return next(ctx, cmd)
		}
		if f.calls.Add(1) != f.at {
			return next(ctx, cmd)
		}
		if f.afterApply {
			if err := next(ctx, cmd); err != nil {
				return err
			}
		}
		cmd.SetErr(errLostReply)
		return errLostReply
	}
}

// pushAll pushes each request in its own goroutine and returns the errors
// once all answered.
func pushAll(ctx context.Context, e *redisAnalyticsExporter, reqs []*countsRequest) []error {
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { errs[i] = e.push(ctx, r) })
	}
	wg.Wait()
	return errs
}

// waitPending waits until n pushes wait for the committer.
func waitPending(t *testing.T, c *committer, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == n
	}, 10*time.Second, time.Millisecond)
}

// TestGroupCommitMergesWhatArrivesDuringACall: a push is applied at once;
// the pushes that arrive while its call is in flight go together in the
// next call.
func TestGroupCommitMergesWhatArrivesDuringACall(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	gate := newGateHook()
	rec := &evalRecorder{}
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, gate, rec) })
	ctx := t.Context()

	first := make(chan error, 1)
	go func() { first <- e.push(ctx, e.logsRequestCtx(ctx, dedupLogs("first", 2))) }()
	<-gate.entered
	const n = 20
	reqs := make([]*countsRequest, n)
	for i := range reqs {
		ld := newLogs([]logRecord{{"later", "u" + strconv.Itoa(i%3), tsRecord}})
		reqs[i] = e.logsRequestCtx(ctx, ld)
	}
	done := make(chan []error, 1)
	go func() { done <- pushAll(ctx, e, reqs) }()
	waitPending(t, e.committer, n)
	close(gate.open)

	require.NoError(t, <-first)
	for i, err := range <-done {
		require.NoError(t, err, i)
	}
	calls := rec.scriptCalls()
	require.Len(t, calls, 2, "the first push alone, then the 20 that waited in one call")
	batches := scriptLayout(t, calls[1]).Batches
	require.Len(t, batches, n)
	for i := range n {
		assert.Contains(t, batches, e.schema.BatchKey(reqs[i].batchID))
	}
	want := sumKeys(counterKeys(prefix, "first", "u0", tsRecord, 1), counterKeys(prefix, "first", "u1", tsRecord, 1))
	for i := range n {
		want = sumKeys(want, counterKeys(prefix, "later", "u"+strconv.Itoa(i%3), tsRecord, 1))
	}
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestGroupRetriesCountOnce: a group whose reply was lost fails every push
// of it; each retry, alone or with others, finds its batch marker.
func TestGroupRetriesCountOnce(t *testing.T) {
	t.Parallel()
	for _, applied := range []bool{true, false} {
		t.Run("applied="+strconv.FormatBool(applied), func(t *testing.T) {
			t.Parallel()
			client, prefix := testservers.SharedRedis(t)
			gate := newGateHook()
			fault := &faultAt{at: 2, afterApply: applied} // the group's call
			_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
				componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, gate, fault) })
			ctx := t.Context()
			blocker := make(chan error, 1)
			go func() { blocker <- e.push(ctx, e.logsRequestCtx(ctx, newLogs([]logRecord{{"blocker", "", tsRecord}}))) }()
			<-gate.entered

			reqs := []*countsRequest{
				e.logsRequestCtx(ctx, newLogs([]logRecord{{"g", "a", tsRecord}})),
				e.logsRequestCtx(ctx, dedupLogs("g-ided", 2)),
				e.logsRequestCtx(ctx, newLogs([]logRecord{{"g", "b", tsRecord}, {"g", "", tsRecord}})),
			}
			done := make(chan []error, 1)
			go func() { done <- pushAll(ctx, e, reqs) }()
			waitPending(t, e.committer, len(reqs))
			close(gate.open)
			require.NoError(t, <-blocker)
			for _, err := range <-done {
				require.ErrorIs(t, err, errLostReply)
			}
			// exporterhelper retries each request on its own, in any order.
			for _, i := range []int{2, 0, 1} {
				require.NoError(t, e.push(ctx, reqs[i]))
			}
			want := sumKeys(counterKeys(prefix, "g", "a", tsRecord, 1), counterKeys(prefix, "g", "b", tsRecord, 1),
				counterKeys(prefix, "g", "", tsRecord, 1),
				counterKeys(prefix, "g-ided", "u0", tsRecord, 1), counterKeys(prefix, "g-ided", "u1", tsRecord, 1))
			assert.Equal(t, want, counterValues(t, client, keysOf(want)))
		})
	}
}

// TestResendInSameGroupCountsWhenTheOriginalNeverReturns: a request and its
// resend wait in one group, whose call fails before Redis; the original is
// never retried (its client gave up), the resend's retry counts it.
func TestResendInSameGroupCountsWhenTheOriginalNeverReturns(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	gate := newGateHook()
	fault := &faultAt{at: 2} // the group's call never reaches Redis
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, gate, fault) })
	ctx := t.Context()
	blocker := make(chan error, 1)
	go func() { blocker <- e.push(ctx, e.logsRequestCtx(ctx, newLogs([]logRecord{{"blocker", "", tsRecord}}))) }()
	<-gate.entered
	original, resend := e.logsRequestCtx(ctx, dedupLogs("r", 3)), e.logsRequestCtx(ctx, dedupLogs("r", 3))
	done := make(chan []error, 1)
	go func() { done <- pushAll(ctx, e, []*countsRequest{original, resend}) }()
	waitPending(t, e.committer, 2)
	close(gate.open)
	require.NoError(t, <-blocker)
	for _, err := range <-done {
		require.ErrorIs(t, err, errLostReply)
	}
	require.NoError(t, e.push(ctx, resend))
	want := sumKeys(counterKeys(prefix, "r", "u0", tsRecord, 2), counterKeys(prefix, "r", "u1", tsRecord, 1))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

// TestPushWithdrawnWhenItsContextEnds: a push whose context ends before a
// group took it is withdrawn and never applied.
func TestPushWithdrawnWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	gate := newGateHook()
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, gate) })
	blocker := make(chan error, 1)
	go func() {
		blocker <- e.push(t.Context(), e.logsRequestCtx(t.Context(), newLogs([]logRecord{{"blocker", "", tsRecord}})))
	}()
	<-gate.entered
	ctx, cancel := context.WithCancel(t.Context())
	withdrawn := make(chan error, 1)
	go func() { withdrawn <- e.push(ctx, e.logsRequestCtx(ctx, newLogs([]logRecord{{"gone", "", tsRecord}}))) }()
	waitPending(t, e.committer, 1)
	cancel()
	require.ErrorIs(t, <-withdrawn, context.Canceled)
	waitPending(t, e.committer, 0)
	close(gate.open)
	require.NoError(t, <-blocker)
	gone := counterKeys(prefix, "gone", "", tsRecord, 0)
	assert.Equal(t, gone, counterValues(t, client, keysOf(gone)), "never applied")
}

// sumKeys adds counter maps key by key.
func sumKeys(ms ...map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

func TestCommitterShutdownIsSafe(t *testing.T) {
	t.Parallel()
	c := newCommitter(func(group []*pushWaiter) { answer(group, nil) })
	c.shutdown() // never started
	c.shutdown()
	require.ErrorIs(t, c.do(t.Context(), newPushWaiter(&countsRequest{})), errNotStarted)

	c = newCommitter(func(group []*pushWaiter) { answer(group, nil) })
	c.start()
	require.NoError(t, c.do(t.Context(), newPushWaiter(&countsRequest{})), "an idle committer: the push leads")
	c.shutdown()
	require.ErrorIs(t, c.do(t.Context(), newPushWaiter(&countsRequest{})), errNotStarted)
}

// TestCommitterHandsTheLeadOn: pushes that wait while a call is in flight
// are applied in one group by the oldest of them, and the committer goes
// idle again.
func TestCommitterHandsTheLeadOn(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var groups []int
	c := newCommitter(func(group []*pushWaiter) {
		mu.Lock()
		first := len(groups) == 0
		groups = append(groups, len(group))
		mu.Unlock()
		if first {
			close(entered)
			<-release
		}
		answer(group, nil)
	})
	c.start()
	first := make(chan error, 1)
	go func() { first <- c.do(t.Context(), newPushWaiter(&countsRequest{records: 1})) }()
	<-entered
	const n = 10
	reqs := make([]*countsRequest, n)
	for i := range reqs {
		reqs[i] = &countsRequest{records: 1}
	}
	done := make(chan []error, 1)
	go func() {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, r := range reqs {
			wg.Go(func() { errs[i] = c.do(t.Context(), newPushWaiter(r)) })
		}
		wg.Wait()
		done <- errs
	}()
	waitPending(t, c, n)
	close(release)
	require.NoError(t, <-first)
	for _, err := range <-done {
		require.NoError(t, err)
	}
	mu.Lock()
	assert.Equal(t, []int{1, n}, groups)
	mu.Unlock()
	c.mu.Lock()
	assert.False(t, c.leading, "idle again")
	c.mu.Unlock()
}

// TestPermanentErrorDropsOnlyItsPush: a group whose call aborts (a counter
// key of the wrong type) is applied push by push, so that only the push
// that adds to that key fails, permanently; the others count.
func TestPermanentErrorDropsOnlyItsPush(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	gate := newGateHook()
	_, e := startLogs(t, testConfig(testservers.RedisEndpoint(), prefix), exportertest.NewNopSettings(metadata.Type),
		componenttest.NewNopHost(), func(e *redisAnalyticsExporter) { e.hooks = append(e.hooks, gate) })
	ctx := t.Context()
	broken := counterKeys(prefix, "broken", "", tsRecord, 1)
	for k := range broken {
		require.NoError(t, client.HSet(ctx, k, "not", "a counter").Err())
	}
	blocker := make(chan error, 1)
	go func() { blocker <- e.push(ctx, e.logsRequestCtx(ctx, newLogs([]logRecord{{"blocker", "", tsRecord}}))) }()
	<-gate.entered
	reqs := []*countsRequest{
		e.logsRequestCtx(ctx, newLogs([]logRecord{{"good-1", "", tsRecord}})),
		e.logsRequestCtx(ctx, newLogs([]logRecord{{"broken", "", tsRecord}})),
		e.logsRequestCtx(ctx, newLogs([]logRecord{{"good-2", "", tsRecord}})),
	}
	done := make(chan []error, 1)
	go func() { done <- pushAll(ctx, e, reqs) }()
	waitPending(t, e.committer, len(reqs))
	close(gate.open)
	require.NoError(t, <-blocker)
	errs := <-done
	require.NoError(t, errs[0])
	require.Error(t, errs[1])
	assert.True(t, consumererror.IsPermanent(errs[1]), errs[1])
	require.NoError(t, errs[2])
	want := sumKeys(counterKeys(prefix, "good-1", "", tsRecord, 1), counterKeys(prefix, "good-2", "", tsRecord, 1))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}
