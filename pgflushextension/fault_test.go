package pgflushextension

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configopaque"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// Environment of a fault child process (see TestFaultFlusherProcess).
const (
	envFaultChild  = "PGFLUSH_FAULT_CHILD" // "1" in a child
	envFaultRedis  = "PGFLUSH_FAULT_REDIS"
	envFaultDSN    = "PGFLUSH_FAULT_DSN"
	envFaultPrefix = "PGFLUSH_FAULT_PREFIX"
	envFaultBatch  = "PGFLUSH_FAULT_BATCH_SIZE"
	envFaultStep   = "PGFLUSH_FAULT_STEP"
	envFaultK      = "PGFLUSH_FAULT_K"
	// envFaultGrace is the child's grace period as a Go duration; unset
	// keeps graceFactor × timeout. "0" recovers any flusher's entries at once.
	envFaultGrace = "PGFLUSH_FAULT_GRACE"
)

const (
	// faultChildWait bounds one child process; the child's own -test.timeout
	// is shorter, so a hung child dumps its goroutines before it is stopped.
	faultChildWait    = 60 * time.Second
	faultChildTimeout = "50s"
	// maxChildFlushes bounds the flushes of a child that is never killed.
	maxChildFlushes = 200
	// faultBatchSize is the children's batch_size: the 600 seeded counters
	// make 12 batches, so a child reaches every step of the batch path at
	// least maxKillK times; recovery_read gets k left-over entries.
	faultBatchSize = 50
	// maxKillK is the last occurrence killed at: TestKillPoints has
	// len(killSteps) × maxKillK = 56 kill points.
	maxKillK = 7
)

// TestFaultFlusherProcess is the child process of the fault-injection tests
// and returns at once (passing) unless PGFLUSH_FAULT_CHILD=1 is set, which only
// runFaultChild does. In a child it starts a flusher from the PGFLUSH_FAULT_*
// environment whose failpoint SIGKILLs this very process the k-th time the
// named step is reached, then flushes until nothing is left. A child that
// returns was not killed: its step was reached fewer than k times, which the
// parent reports as a failure.
func TestFaultFlusherProcess(t *testing.T) {
	if os.Getenv(envFaultChild) != "1" {
		return
	}
	batch, err := strconv.Atoi(os.Getenv(envFaultBatch))
	require.NoError(t, err)
	k, err := strconv.ParseInt(os.Getenv(envFaultK), 10, 64)
	require.NoError(t, err)
	step := os.Getenv(envFaultStep)
	require.NotEmpty(t, step)

	cfg := createDefaultConfig().(*Config)
	cfg.Redis.Endpoint = os.Getenv(envFaultRedis)
	cfg.KeyPrefix = os.Getenv(envFaultPrefix)
	cfg.DSN = configopaque.String(os.Getenv(envFaultDSN))
	cfg.Interval = time.Hour // flushes are driven below
	cfg.Timeout = 30 * time.Second
	cfg.BatchSize = batch
	cfg.CounterTTL = testCounterTTL
	set, _ := nopSettings(t)
	f, err := newFlusher(cfg, set)
	require.NoError(t, err)
	if g := os.Getenv(envFaultGrace); g != "" {
		f.grace, err = time.ParseDuration(g)
		require.NoError(t, err)
	}
	var reached atomic.Int64
	f.failpoint = func(s string) {
		if s == step && reached.Add(1) == k {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never resume the step
		}
	}
	require.NoError(t, f.Start(t.Context(), &statusHost{}))
	t.Cleanup(func() { require.NoError(t, f.Shutdown(context.Background())) })

	for range maxChildFlushes {
		st, err := f.flush(t.Context())
		require.NoError(t, err)
		if st.batches == 0 && st.recovered == 0 {
			break
		}
	}
	t.Logf("not killed: step %s reached %d times, want %d", step, reached.Load(), k)
}

// runFaultChild runs TestFaultFlusherProcess in a child process against env
// and requires that it died by SIGKILL, i.e. at the k-th time it reached step.
func runFaultChild(t *testing.T, env *testEnv, step string, k int, grace string) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), faultChildWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe,
		"-test.run=^TestFaultFlusherProcess$", "-test.count=1", "-test.v", "-test.timeout="+faultChildTimeout)
	cmd.Env = append(os.Environ(),
		envFaultChild+"=1",
		envFaultRedis+"="+env.redis,
		envFaultDSN+"="+env.dsn,
		envFaultPrefix+"="+env.prefix,
		envFaultBatch+"="+strconv.Itoa(faultBatchSize),
		envFaultStep+"="+step,
		envFaultK+"="+strconv.Itoa(k),
		envFaultGrace+"="+grace,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// On timeout, SIGQUIT: the child dumps its goroutines (and does not die
	// by SIGKILL, which would look like success).
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	require.NoError(t, ctx.Err(), "child (%s, k=%d) still running after %s:\n%s", step, k, faultChildWait, &out)
	require.Error(t, err, "child exited normally: step %s was reached fewer than %d times:\n%s", step, k, &out)
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL,
		"child (%s, k=%d) must die by SIGKILL, got %v:\n%s", step, k, err, &out)
	require.NotContains(t, out.String(), "WARNING: DATA RACE", "race in the child:\n%s", &out)
}

// seedCounters returns 771 counters: 200 of each of the first three
// families, 101 property and 70 sum counters, some with characters that need escaping.
func seedCounters() []protocol.Counter {
	var cs []protocol.Counter
	for i := range 20 {
		typ := fmt.Sprintf("type-%02d", i)
		if i%5 == 0 {
			typ = fmt.Sprintf("type:%d{x}%%", i)
		}
		for d := range 10 {
			cs = append(cs, daily(typ, day1.AddDate(0, 0, d)))
		}
	}
	for i := range 10 {
		for h := range 20 {
			cs = append(cs, hourly(fmt.Sprintf("hourly-%d", i), day1.Add(time.Duration(h)*time.Hour)))
		}
	}
	for u := range 20 {
		user := fmt.Sprintf("user-%02d", u)
		if u%7 == 0 {
			user = fmt.Sprintf("ユーザー %d", u)
		}
		for i := range 5 {
			for d := range 2 {
				cs = append(cs, userDaily(user, fmt.Sprintf("ev-%d", i), day1.AddDate(0, 0, d)))
			}
		}
	}
	values := []string{"gpt-4", "a:b{c}%", "모델 ✓", protocol.OverflowValue}
	for i := range 5 {
		typ := fmt.Sprintf("gen-%d", i)
		if i == 0 {
			typ = "gen:{0}"
		}
		for _, prop := range []string{"model", "plan:tier"} {
			for _, v := range values {
				for d := range 2 {
					cs = append(cs, propDaily(typ, prop, v, day1.AddDate(0, 0, d)))
				}
			}
		}
		for h := range 3 {
			for _, v := range values[:i%2+1] {
				cs = append(cs, propHourly(typ, "model", v, day1.Add(time.Duration(h)*time.Hour)))
			}
		}
		for _, attr := range []string{"tokens", "gen_ai.usage:output{x}"} {
			for d := range 3 {
				cs = append(cs, sumDaily(typ, attr, day1.AddDate(0, 0, d)))
			}
			for h := range 4 {
				cs = append(cs, sumHourly(typ, attr, day1.Add(time.Duration(h)*time.Hour)))
			}
		}
	}
	return cs
}

// randomAmount is a random increment of c for the writers: a count from 1
// to limit, or a sum from -limit to limit (0 and negative included).
func randomAmount(rng *rand.Rand, c protocol.Counter, limit int64) int64 {
	if isSum(c.Family) {
		return rng.Int64N(2*limit+1) - limit
	}
	return 1 + rng.Int64N(limit)
}

// writeFunc applies one exporter batch.
type writeFunc func(ctx context.Context, incs ...increment) error

// seed writes every counter once, exporter-style in batches of 100, and
// returns what it wrote.
func seed(ctx context.Context, t *testing.T, write writeFunc, counters []protocol.Counter, rng *rand.Rand) totals {
	t.Helper()
	sent := totals{}
	for i := 0; i < len(counters); i += 100 {
		var incs []increment
		for _, c := range counters[i:min(i+100, len(counters))] {
			incs = append(incs, increment{c, randomAmount(rng, c, 1000)})
		}
		require.NoError(t, write(ctx, incs...))
		sent.add(incs...)
	}
	return sent
}

// writerPeriod is the pace of pacedWriter: about 500 batches per second.
const writerPeriod = 2 * time.Millisecond

// pacedWriter writes a small exporter batch on random counters every
// writerPeriod, until stop is closed or it has written maxBatches, and returns what
// it wrote. It runs while flushers (and servers) are killed: increments that
// land during a flush must never be orphaned.
func pacedWriter(ctx context.Context, t *testing.T, write writeFunc, counters []protocol.Counter, rng *rand.Rand,
	maxBatches int, stop <-chan struct{},
) totals {
	t.Helper()
	sent := totals{}
	tick := time.NewTicker(writerPeriod)
	defer tick.Stop()
	for range maxBatches {
		select {
		case <-stop:
			return sent
		case <-tick.C:
		}
		incs := make([]increment, 1+rng.IntN(5))
		for i := range incs {
			c := counters[rng.IntN(len(counters))]
			incs[i] = increment{c, randomAmount(rng, c, 100)}
		}
		if err := write(ctx, incs...); err != nil {
			if ctx.Err() == nil {
				t.Errorf("write: %v", err)
			}
			return sent
		}
		sent.add(incs...)
	}
	return sent
}

// startWriter runs pacedWriter in a goroutine; the returned func (also run
// at cleanup) stops it and returns what it wrote.
func startWriter(ctx context.Context, t *testing.T, write writeFunc, counters []protocol.Counter, seed uint64,
	maxBatches int,
) (stop func() totals) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	stopCh := make(chan struct{})
	done := make(chan struct{})
	var sent totals
	go func() {
		defer close(done)
		sent = pacedWriter(ctx, t, write, counters, rng, maxBatches, stopCh)
	}()
	stop = sync.OnceValue(func() totals {
		close(stopCh)
		<-done
		return sent
	})
	t.Cleanup(func() { stop() })
	return stop
}

// requireExactTotals checks PostgreSQL against want, per row and per family,
// and that Redis holds nothing under the prefix but the keys that keep pass.
func requireExactTotals(ctx context.Context, t *testing.T, env *testEnv, want totals, keep func(key string) bool) {
	t.Helper()
	assert.Equal(t, want, env.readTotals(ctx), "PostgreSQL rows")
	wantFamily := map[string]int64{}
	for k, n := range want {
		fam, _, _ := strings.Cut(k, "|")
		wantFamily[fam] += n
	}
	gotFamily := map[string]int64{}
	for _, fam := range families {
		table, column := "analytics_"+fam.String(), "count"
		if isSum(fam) {
			column = "sum"
		}
		var n int64
		require.NoError(t, env.db.QueryRow(ctx, "SELECT coalesce(sum("+column+"), 0)::int8 FROM "+table).Scan(&n))
		if _, ok := wantFamily[fam.String()]; ok || n != 0 {
			gotFamily[fam.String()] = n
		}
	}
	assert.Equal(t, wantFamily, gotFamily, "PostgreSQL sums per family")
	requireRollupsExact(ctx, t, env.db)
	var left []string
	for _, k := range env.keys(ctx) {
		if keep == nil || !keep(k) {
			left = append(left, k)
		}
	}
	assert.Empty(t, left, "Redis must hold no pending member, staging entry, counter or quarantine")
}

// killSteps are the failpoint steps TestKillPoints kills a flusher at.
var killSteps = []string{
	stepBeforeStage, stepAfterStage, stepApplyBegun, stepAfterLedger,
	stepBeforeCommit, stepAfterCommit, stepAfterCleanup, stepRecoveryRead,
}

// TestKillPoints SIGKILLs a flusher process at every failpoint step, at its
// k-th occurrence, while an exporter-style writer keeps incrementing, then
// recovers with another flusher and requires exact totals in PostgreSQL and
// nothing left in Redis.
func TestKillPoints(t *testing.T) {
	t.Parallel()
	for _, step := range killSteps {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			for k := 1; k <= maxKillK; k++ {
				t.Run("k="+strconv.Itoa(k), func(t *testing.T) {
					t.Parallel()
					testKillPoint(t, step, k)
				})
			}
		})
	}
}

func testKillPoint(t *testing.T, step string, k int) {
	ctx := t.Context()
	env := newTestEnv(t)
	counters := seedCounters()
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	write := applyWrite(env.rdb, env.schema)
	want := seed(ctx, t, write, counters, rng)
	stopWriter := startWriter(ctx, t, write, counters, rng.Uint64(), 5000)

	grace := ""
	if step == stepRecoveryRead {
		// Left-over entries to recover: k-1 of flushers that died right
		// after STAGE (the script is atomic: this is exactly the state they
		// leave), then a flusher process killed after STAGE (odd k) or
		// after its commit (even k), which may have staged one more batch
		// ahead. The recovering child ignores the grace period.
		dead := env.redisStore()
		for range k - 1 {
			res, err := dead.Stage(ctx, newFlushID(time.Now()), faultBatchSize)
			require.NoError(t, err)
			require.NotEmpty(t, res.Fields)
		}
		prep := stepAfterStage
		if k%2 == 0 {
			prep = stepAfterCommit
		}
		runFaultChild(t, env, prep, 1, "")
		grace = "0"
	}
	runFaultChild(t, env, step, k, grace)
	mergeTotals(want, stopWriter())

	f := env.start(env.config())
	f.grace = 0 // the dead children's entries, at once
	st, err := f.flush(ctx)
	require.NoError(t, err)
	switch step {
	case stepBeforeStage, stepAfterCleanup:
		// The batch staged ahead, if any, is left over.
	default:
		assert.Positive(t, st.recovered, "the crash left a staging entry")
	}
	t.Logf("recovery: %d entries recovered, %d counters flushed", st.recovered, st.counters)
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Zero(t, st.counters, "the first flush after the crash finished the job")
	requireExactTotals(ctx, t, env, want, env.isBatchMarker)
}
