package pgflushextension

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testLedgerRetention is far below what Config.Validate accepts (10 ticks),
// so that a ledger row outlives it within the test; newFlusher does not
// validate.
const testLedgerRetention = time.Second

// TestStagedEntryKeepsItsLedgerRow: a batch committed to PostgreSQL whose
// CLEANUP did not happen stays in the staging index longer than
// ledger_retention while ticks prune the ledger. Its ledger row stays, so the
// recovery that follows finds the batch applied and only cleans it up:
// counted once, no operator. The recovery refreshes the row, which then
// outlives the CLEANUP by ledger_retention before it is pruned.
func TestStagedEntryKeepsItsLedgerRow(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.LedgerRetention = testLedgerRetention
	f := env.start(cfg)
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)

	id := env.commitWithoutCleanup(ctx, f)
	require.Equal(t, want, env.readTotals(ctx), "committed")
	require.Eventually(t, func() bool { return env.ledgerRowOlderThan(ctx, id, cfg.LedgerRetention) },
		10*time.Second, 10*time.Millisecond, "the row gets older than ledger_retention")
	// The row of a batch cleaned up long ago, which pruning deletes.
	_, err := env.db.Exec(ctx, `INSERT INTO analytics_flush_ledger VALUES ('finished', now() - interval '1 hour', 1)`)
	require.NoError(t, err)

	// Ticks during the entry's grace period (its flusher may still be
	// working on it) leave it staged and prune the ledger.
	for i := range 2 {
		st, ferr := f.flush(ctx)
		require.NoError(t, ferr)
		assert.Zero(t, st.recovered, "within the grace period")
		assert.Equal(t, int64(1-i), st.pruned, "the first tick prunes the finished batch's row")
		assert.True(t, env.ledgerHas(ctx, id), "the staged entry's row stays, older than ledger_retention")
	}
	assert.Equal(t, int64(1), env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "still staged")

	f.grace = 0
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Zero(t, st.counters, "found applied: not counted twice")
	assert.Equal(t, want, env.readTotals(ctx), "exact: neither lost nor counted twice")
	env.requireRedisEmpty(ctx)
	// The next tick's snapshot no longer holds the entry; the recovery
	// refreshed its row, so that tick's prune keeps it.
	assert.False(t, env.ledgerRowOlderThan(ctx, id, cfg.LedgerRetention))
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.pruned, "the row outlives the CLEANUP by ledger_retention")
	assert.True(t, env.ledgerHas(ctx, id))

	// Once no longer staged, the row goes after ledger_retention.
	assert.Eventually(t, func() bool {
		_, err := f.flush(ctx)
		assert.NoError(t, err)
		return !env.ledgerHas(ctx, id)
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, want, env.readTotals(ctx))
}

// TestRecoveryAfterCleanupAndPruneCountsOnce: two flushers recover the same
// staging entry, whose batch was committed longer than ledger_retention ago.
// B reads it, then stalls; meanwhile A finds the batch applied and cleans
// the entry up, and A's next tick prunes the ledger, the entry gone from the
// staging index. A's recovery refreshed the ledger row, so that prune keeps
// it and B, which then resumes, finds the batch applied too. Without the
// refresh, the prune would delete the row and B would count the batch a
// second time.
func TestRecoveryAfterCleanupAndPruneCountsOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.LedgerRetention = testLedgerRetention
	stager := env.start(cfg)
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)
	id := env.commitWithoutCleanup(ctx, stager)
	require.Eventually(t, func() bool { return env.ledgerRowOlderThan(ctx, id, cfg.LedgerRetention) },
		10*time.Second, 10*time.Millisecond)

	a, b := env.start(cfg), env.start(cfg)
	a.grace, b.grace = 0, 0
	read, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releaseB := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseB) // before b's Shutdown, which waits for its tick
	b.failpoint = func(step string) {
		if step == stepRecoveryRead {
			close(read)
			<-release
		}
	}
	type outcome struct {
		st  flushStats
		err error
	}
	bDone := make(chan outcome, 1)
	go func() {
		st, err := b.flush(ctx)
		bDone <- outcome{st, err}
	}()
	select {
	case <-read:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "B did not reach the entry")
	}

	st, err := a.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, st.recovered)
	assert.Zero(t, st.counters)
	assert.Zero(t, env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val(), "A cleaned the entry up")
	st, err = a.flush(ctx) // its snapshot no longer holds the entry
	require.NoError(t, err)
	assert.Zero(t, st.recovered)
	assert.True(t, env.ledgerHas(ctx, id), "A's prune kept the row its recovery refreshed")

	releaseB()
	var bo outcome
	select {
	case bo = <-bDone:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "B's tick did not end")
	}
	require.NoError(t, bo.err)
	assert.Equal(t, 1, bo.st.recovered)
	assert.Zero(t, bo.st.counters, "B found the batch applied")
	assert.Equal(t, want, env.readTotals(ctx), "counted once")
	env.requireRedisEmpty(ctx)
}
