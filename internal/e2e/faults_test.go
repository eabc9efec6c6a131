package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// Distro-level fault tests. Each one ends with the system
// quiescent and a final flush (SIGTERM), then compares the three tables with
// exact expectations: the sum over every request of what it counts times the
// number of times it was applied, read from its probe row (see request).

func buildMixed(logs, spans int) func(id int) (*request, error) {
	return func(id int) (*request, error) { return mixedRequest(id, logs, spans) }
}

// sumExpected is what reqs count when each is applied once.
func sumExpected(reqs []*request) *expected {
	e := newExpected()
	for _, r := range reqs {
		e.addTimes(r.exp, 1)
	}
	return e
}

// assertExactlyOnce checks that every request was applied exactly once and
// that the tables hold exactly their sum.
func assertExactlyOnce(t *testing.T, got *expected, reqs []*request) {
	t.Helper()
	mult, want := multiplicities(got, reqs)
	var wrong []string
	for _, r := range reqs {
		if mult[r.id] != 1 {
			wrong = append(wrong, fmt.Sprintf("request %d applied %d times (attempts %d, failed %d)",
				r.id, mult[r.id], r.attempts, r.failures))
		}
	}
	assert.Empty(t, wrong, "every acknowledged request must be counted exactly once")
	assertTables(t, sumExpected(reqs), got)
	assertTables(t, want, got)
}

// postgresOutage is how long TestFaultPostgresOutage keeps PostgreSQL down.
const postgresOutage = time.Minute

// TestFaultPostgresOutage kills the private PostgreSQL while events keep
// arriving: every request is still acknowledged (Redis is up), the flusher
// reports failed ticks and keeps the moved counts staged in Redis, and once
// PostgreSQL is back the periodic flushes catch up to exact totals.
func TestFaultPostgresOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	dsn := pg.FreshDatabase(t)
	rdb, prefix := testservers.SharedRedis(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
	})
	var reqs []*request
	send := func() {
		r, err := mixedRequest(len(reqs), 200, 100)
		require.NoError(t, err)
		d.post(ctx, r.path, r.body) // requires a 200: acknowledged once in Redis
		reqs = append(reqs, r)
	}

	for range 10 {
		send()
	}
	waitFor(t, 20*time.Second, 50*time.Millisecond, "no periodic flush reached PostgreSQL", func() bool {
		return len(tableRows(ctx, t, dsn).daily) > 0
	})

	pg.Kill()
	outage := time.Now()
	before := len(reqs)
	// A minute of outage, with a request every 100 ms: the flusher
	// fails every tick meanwhile and must hold everything it moved.
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for time.Since(outage) < postgresOutage {
		send()
		<-pace.C
	}
	duringOutage := len(reqs) - before
	// The failure is seen and reported, and the counts moved out of the
	// counters are held in staging entries in Redis.
	waitFor(t, 10*time.Second, 50*time.Millisecond, "no failed flush reported while PostgreSQL is down", func() bool {
		return metricValue(d.scrapeMetrics(ctx), "otelcol_pg_flush_flushes", `outcome="failure"`) > 0
	})
	// The health check (component status) shows pg_flush's recoverable error.
	waitFor(t, 10*time.Second, 50*time.Millisecond, "health check does not show the recoverable error", func() bool {
		return strings.Contains(d.health(ctx), "StatusRecoverableError")
	})
	staged := rdb.ZCard(ctx, prefix+":staging").Val()
	require.Positive(t, staged, "a tick during the outage stages counts and keeps them")
	failures := metricValue(d.scrapeMetrics(ctx), "otelcol_pg_flush_flushes", `outcome="failure"`)
	pg.Start()
	outageLen := time.Since(outage)

	for range 10 {
		send()
	}
	want := sumExpected(reqs)
	caughtUp := time.Now()
	waitFor(t, 30*time.Second, 100*time.Millisecond, "flushes did not catch up after PostgreSQL came back", func() bool {
		got := tableRows(ctx, t, dsn)
		if o := overcounted(want, got); o != "" {
			t.Fatalf("counted twice: %s", o)
		}
		return sameTables(want, got)
	})
	waitFor(t, 10*time.Second, 50*time.Millisecond, "health check does not show the recovery", func() bool {
		return !strings.Contains(d.health(ctx), "StatusRecoverableError")
	})
	metrics := d.scrapeMetrics(ctx)
	recovered := metricValue(metrics, "otelcol_pg_flush_staging_recovered")
	assert.Positive(t, recovered, "the staged entries are applied by recovery")
	assert.Contains(t, d.output(), "flush failed; staged and pending counts stay in Redis")
	t.Logf("PostgreSQL down %s: %d requests acknowledged meanwhile, %.0f failed ticks, %d staging entries held; "+
		"caught up %s after restart, %.0f entries recovered; %d requests, %d events in total",
		outageLen.Round(time.Millisecond), duringOutage, failures, staged,
		time.Since(caughtUp).Round(time.Millisecond), recovered, len(reqs), want.events)

	d.stop()
	assertExactlyOnce(t, tableRows(ctx, t, dsn), reqs)
	assertRedisDrained(ctx, t, rdb, prefix)
}

// privatePrefix is the key prefix of a distro on a private Redis.
const privatePrefix = "analytics"

// startPrivateRedisDistro starts a distro on a private Redis (key prefix
// privatePrefix) and a fresh database, flushing every 300ms.
func startPrivateRedisDistro(t *testing.T) (*testservers.RedisServer, *distro, string) {
	t.Helper()
	srv := testservers.StartRedis(t)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: srv.Addr, PostgresDSN: dsn, KeyPrefix: privatePrefix,
		FlushInterval: 300 * time.Millisecond,
	})
	return srv, d, dsn
}

// TestFaultRedisRestart kills the private Redis (AOF, appendfsync always)
// with SIGKILL while four clients keep sending, and restarts it after 1 s,
// then again after 4 s.
// Clients resend a request until it is acknowledged; every request must be
// counted exactly once (the batch marker deduplicates the collector's own
// retries of a batch whose reply was lost).
func TestFaultRedisRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv, d, dsn := startPrivateRedisDistro(t)
	rdb := srv.Client(t)
	// An attempt may take as long as the exporter retries (max_elapsed_time
	// 30s): a client that gave up earlier and resent would cause the
	// duplicate itself.
	c := newLoadClient(t, 5000, 10, 45*time.Second, buildMixed(120, 60))
	c.start(ctx, 4, d)
	// 1s is absorbed by go-redis' own retries (5 dial attempts 100ms apart,
	// 3 command retries): the exporter never sees an error. 4s exceeds them,
	// so pushes fail and exporterhelper retries them with the same batch id.
	var report []string
	for _, outage := range []time.Duration{time.Second, 4 * time.Second} {
		from := c.ackedCount()
		waitFor(t, 20*time.Second, 5*time.Millisecond, "no traffic before the kill", func() bool {
			return c.ackedCount() >= from+40
		})
		srv.Kill()
		atKill := c.ackedCount()
		time.Sleep(outage) // hold the outage open
		srv.Start()
		restarted := time.Now()
		waitFor(t, 45*time.Second, 5*time.Millisecond, "traffic did not resume after Redis restarted", func() bool {
			return c.ackedCount() >= atKill+80
		})
		m := d.scrapeMetrics(ctx)
		report = append(report, fmt.Sprintf("outage %s: killed after %d acks, 80 more acks %s after the restart; "+
			"so far %d client-visible failed attempts, exporter %.0f retryable Redis errors, %.0f batches deduplicated, "+
			"%.0f failed flush ticks", outage, atKill, time.Since(restarted).Round(time.Millisecond), c.failedCount(),
			metricValue(m, "otelcol_exporter_redis_analytics_redis_errors", `retryable="true"`),
			metricValue(m, "otelcol_exporter_redis_analytics_batches_deduplicated"),
			metricValue(m, "otelcol_pg_flush_flushes", `outcome="failure"`)))
	}
	reqs := c.finish()
	d.stop()

	got := tableRows(ctx, t, dsn)
	assertExactlyOnce(t, got, reqs)
	assertRedisDrained(ctx, t, rdb, privatePrefix)
	t.Logf("%d requests, %d events\n%s", len(reqs), sumExpected(reqs).events, strings.Join(report, "\n"))
}

// TestFaultRedisFull fills Redis (maxmemory below its use, noeviction)
// under load until the exporter has been refused 8 times. Every push is refused before it changes anything (a
// retryable OOM), so no request is acknowledged meanwhile, while pg_flush
// keeps draining what was counted; once memory is available, traffic
// resumes and every acknowledged request is counted exactly once.
func TestFaultRedisFull(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv, d, dsn := startPrivateRedisDistro(t)
	rdb := srv.Client(t)
	const workers = 4 // each waits for its request's answer before the next
	c := newLoadClient(t, 5000, 10, 45*time.Second, buildMixed(120, 60))
	c.start(ctx, workers, d)
	waitFor(t, 20*time.Second, 5*time.Millisecond, "no traffic before Redis filled up", func() bool {
		return c.ackedCount() >= 40
	})
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	atFull := c.ackedCount()
	waitFor(t, 10*time.Second, 10*time.Millisecond, "pg_flush did not drain the full Redis", func() bool {
		return rdb.ZCard(ctx, privatePrefix+":pending").Val() == 0
	})
	// Hold Redis full until the exporter has seen several refusals (its
	// retries of the same batches included).
	var oomErrors float64
	waitFor(t, 20*time.Second, 100*time.Millisecond, "pushes were not refused while Redis was full", func() bool {
		oomErrors = metricValue(d.scrapeMetrics(ctx), "otelcol_exporter_redis_analytics_redis_errors", `retryable="true"`)
		return oomErrors >= 8
	})
	// Only requests whose batch was applied before Redis filled up may be
	// answered since: at most one per client.
	assert.LessOrEqual(t, c.ackedCount(), atFull+workers, "requests acknowledged while Redis was full")
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	freed := time.Now()
	waitFor(t, 45*time.Second, 5*time.Millisecond, "traffic did not resume after memory was freed", func() bool {
		return c.ackedCount() >= atFull+80
	})
	resumed := time.Since(freed)
	reqs := c.finish()
	d.stop()

	got := tableRows(ctx, t, dsn)
	assertExactlyOnce(t, got, reqs)
	assertRedisDrained(ctx, t, rdb, privatePrefix)
	assert.Contains(t, d.output(), "OOM command not allowed")
	t.Logf("%d requests, %d events; %d acks before Redis filled up, %.0f refused pushes (retryable) while full, "+
		"traffic resumed %s after memory was freed", len(reqs), sumExpected(reqs).events, atFull, oomErrors,
		resumed.Round(time.Millisecond))
}

// TestFaultPersistentQueueSurvivesCrash covers durability mode (b),
// testdata/bench/persistent-queue.yaml: requests acknowledged while Redis is
// down wait in the file_storage queue as encoded counts; the collector is
// SIGKILLed, Redis comes back, and a new collector on the same storage
// directory replays them. Nothing was applied before the kill, so the
// totals must be exact.
func TestFaultPersistentQueueSurvivesCrash(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	rdb := srv.Client(t)
	dsn := testservers.FreshDatabase(t)
	const prefix = "analytics"
	env := distroEnv{
		RedisEndpoint: srv.Addr, PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
		Config:        filepath.Join(repoRoot(t), "testdata", "bench", "persistent-queue.yaml"),
		Env:           []string{"STORAGE_DIR=" + t.TempDir()},
	}
	first := startDistro(t, env)
	srv.Kill()
	exp := newExpected()
	const requests = 30
	for i := range requests {
		sendLogs(ctx, t, first, 200, 1000+i, exp)
		sendTraces(ctx, t, first, 100, 2000+i, exp)
	}
	queued := metricValue(first.scrapeMetrics(ctx), "otelcol_exporter_queue_size", `data_type="logs"`) +
		metricValue(first.scrapeMetrics(ctx), "otelcol_exporter_queue_size", `data_type="traces"`)
	first.kill()
	srv.Start()

	second := startDistro(t, env)
	waitFor(t, 60*time.Second, 20*time.Millisecond, "the replayed queue was not applied", func() bool {
		m := second.scrapeMetrics(ctx)
		return metricValue(m, "otelcol_exporter_redis_analytics_events", `signal="logs"`)+
			metricValue(m, "otelcol_exporter_redis_analytics_events", `signal="traces"`) == float64(exp.events)
	})
	second.stop()
	assertTables(t, exp, tableRows(ctx, t, dsn))
	assertRedisDrained(ctx, t, rdb, prefix)
	t.Logf("%d log records and %d spans (%d events) acknowledged with Redis down (%.0f items queued at the kill), replayed after SIGKILL",
		requests*200, requests*100, exp.events, queued)
}

// TestFaultThreeCollectors runs three collectors on one Redis prefix and one
// database, with 100 ms flush intervals so their flushes overlap, sends to
// them round robin, stops them together and checks exact totals. It logs how
// long their flush ticks took.
func TestFaultThreeCollectors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	env := distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 100 * time.Millisecond,
	}
	ds := []*distro{startDistro(t, env), startDistro(t, env), startDistro(t, env)}
	const total = 150
	c := newLoadClient(t, total, 3, 30*time.Second, buildMixed(300, 150))
	c.start(ctx, 3, ds...)
	waitFor(t, 60*time.Second, 10*time.Millisecond, "requests not acknowledged", func() bool {
		return c.ackedCount() == total
	})
	reqs := c.finish()

	var report []string
	for i, d := range ds {
		m := d.scrapeMetrics(ctx)
		h := parseHistogram(m, "otelcol_pg_flush_duration")
		fails := metricValue(m, "otelcol_pg_flush_flushes", `outcome="failure"`)
		assert.Zero(t, fails, "collector %d: failed flush ticks", i)
		assert.LessOrEqual(t, h.maxBound, 5.0, "collector %d: a flush tick took longer than 5 s", i)
		report = append(report, fmt.Sprintf("collector %d: %s, %.0f counters flushed, %.0f failed",
			i, h, metricValue(m, "otelcol_pg_flush_counters_flushed"), fails))
	}
	for _, d := range ds {
		d.terminate() // the three final flushes run at once
	}
	for _, d := range ds {
		d.waitStopped()
	}
	got := tableRows(ctx, t, dsn)
	assertExactlyOnce(t, got, reqs)
	assertRedisDrained(ctx, t, rdb, prefix)
	batches, counters := ledgerStats(ctx, t, dsn)
	t.Logf("%d requests, %d events; ledger: %d batches, %d counters\n%s",
		len(reqs), sumExpected(reqs).events, batches, counters, strings.Join(report, "\n"))
}

func ledgerStats(ctx context.Context, t *testing.T, dsn string) (batches, counters int64) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	require.NoError(t, conn.QueryRow(ctx,
		`SELECT count(*), coalesce(sum(counters), 0) FROM analytics_flush_ledger`).Scan(&batches, &counters))
	return batches, counters
}

// killSeed is $E2E_KILL_SEED or a fresh seed, logged so a run can be replayed.
func killSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_KILL_SEED"); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "E2E_KILL_SEED")
	}
	t.Logf("kill seed %d (replay with E2E_KILL_SEED=%d)", seed, seed)
	return seed
}

// TestFaultCollectorKilledUnderLoad SIGKILLs the collector ten times, at
// seeded random moments or right after Redis applied a batch, while four
// clients stream requests; each time a new collector (same prefix and
// database) takes over and the clients resend what was not acknowledged.
// Every request is counted exactly once: one whose attempt was in flight at a
// kill may have been applied to Redis without its acknowledgment reaching the
// client, and the resend is then recognized by its resource entries'
// markers (every record of the dataset carries a timestamp, every span a
// span id) and not counted again.
func TestFaultCollectorKilledUnderLoad(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(killSeed(t), 0))
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	env := distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // the exporter's window only: flushes are killed in the next test
	}
	d := startDistro(t, env)
	c := newLoadClient(t, 20000, 10, 20*time.Second, buildMixed(60, 30))
	c.start(ctx, 4, d)

	// Every other kill is aimed at the window: it lands right after Redis
	// applied a batch (every request adds a new probe key to the pending
	// set), while the collector is still answering the requests of that batch.
	const kills = 10
	type kill struct {
		moment   string
		inFlight []*request
	}
	var history []kill
	pendingKey := prefix + ":pending"
	for k := range kills {
		from := c.ackedCount()
		waitFor(t, 20*time.Second, 2*time.Millisecond, "no traffic to the new collector", func() bool {
			return c.ackedCount() >= from+5
		})
		var moment string
		if k%2 == 0 {
			delay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
			time.Sleep(delay) // the random moment of the kill
			moment = "+" + delay.Round(time.Millisecond).String()
		} else {
			applied := rdb.ZCard(ctx, pendingKey).Val()
			waitFor(t, 10*time.Second, 0, "no batch applied", func() bool {
				return rdb.ZCard(ctx, pendingKey).Val() > applied
			})
			moment = "right after a batch was applied"
		}
		inFlight := c.pause()
		d.kill()
		history = append(history, kill{moment: moment, inFlight: inFlight})
		d = startDistro(t, env)
		c.resume(d)
	}
	from := c.ackedCount()
	waitFor(t, 20*time.Second, 2*time.Millisecond, "no traffic after the last kill", func() bool {
		return c.ackedCount() >= from+20
	})
	reqs := c.finish()
	d.stop()
	// A collector killed in its start-up tick may leave a staging entry that
	// the last collector's final flush leaves to its grace period (its
	// flusher could be alive elsewhere): a flusher ticking after it
	// recovers it.
	if rdb.ZCard(ctx, prefix+":staging").Val() > 0 {
		late := env
		late.FlushInterval = 300 * time.Millisecond
		late.Config = configWithFlush(t, "timeout: 1s") // grace period 2s
		d = startDistro(t, late)
		waitFor(t, 30*time.Second, 50*time.Millisecond, "staging entries not recovered", func() bool {
			return rdb.ZCard(ctx, prefix+":staging").Val() == 0
		})
		d.stop()
	}

	got := tableRows(ctx, t, dsn)
	mult, want := multiplicities(got, reqs)
	// The tables are exactly the requests times their multiplicities …
	assertTables(t, want, got)
	// … and every request is counted exactly once, in flight at a kill or not.
	var excess, inFlight int64
	for _, r := range reqs {
		m := mult[r.id]
		assert.Equal(t, int64(1), m, "request %d applied %d times, in flight at %d kills", r.id, m, r.inFlightAtKill)
		excess += (m - 1) * r.exp.events
		if r.inFlightAtKill > 0 {
			inFlight++
		}
	}
	acked, counted := sumExpected(reqs).events, sum(got.daily)
	assert.Equal(t, acked, counted, "counted == acknowledged")
	assertRedisDrained(ctx, t, rdb, prefix)

	var lines []string
	var dupRequests int
	for i, k := range history {
		var dups []string
		for _, r := range k.inFlight {
			if mult[r.id] > 1 {
				dups = append(dups, fmt.Sprintf("%d (%d events)", r.id, r.exp.events))
				dupRequests++
			}
		}
		slices.Sort(dups)
		lines = append(lines, fmt.Sprintf("kill %d %s: %d in flight, counted twice: %v",
			i+1, k.moment, len(k.inFlight), dups))
	}
	t.Logf("%d requests (%d events acknowledged), %d failed attempts, %d requests in flight at a kill; excess %d events from %d requests\n%s",
		len(reqs), acked, c.failedCount(), inFlight, excess, dupRequests, strings.Join(lines, "\n"))
}

// backlogRequest builds n log records, each with its own user (n per-user
// counters), and adds them to exp.
func backlogRequest(id, n int, exp *expected) ([]byte, error) {
	ld := plog.NewLogs()
	recs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for i := range n {
		eventType := eventTypes[i%len(eventTypes)]
		user := fmt.Sprintf("backlog-%d-%d", id, i)
		ts := base.Add(time.Duration(i%3) * time.Hour)
		lr := recs.AppendEmpty()
		lr.SetEventName(eventType)
		lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
		lr.Attributes().PutStr("user.id", user)
		exp.add(eventType, user, ts)
	}
	return plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
}

// TestFaultCollectorKilledMidFlush builds a backlog of 20 000 counters,
// SIGKILLs the collector as soon as its flush tick has staged a batch, and
// starts another collector, which must recover the dead flusher's staging
// entries once they pass the grace period (2 × timeout) and reach exact
// totals, never counting anything twice on the way.
func TestFaultCollectorKilledMidFlush(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	// timeout 1s: grace period 2s; batches of 1000 make a tick of many batches.
	cfg := configWithFlush(t, "timeout: 1s", "batch_size: 1000")
	env := distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 3 * time.Second, Config: cfg, // the backlog is sent before the first tick
	}
	a := startDistro(t, env)
	want := newExpected()
	sending := time.Now()
	for id := range 20 {
		body, err := backlogRequest(id, 1000, want)
		require.NoError(t, err)
		a.post(ctx, "/v1/logs", body)
	}
	sent := time.Since(sending)
	pending := rdb.ZCard(ctx, prefix+":pending").Val()

	stagingIndex := prefix + ":staging"
	waitFor(t, 10*time.Second, time.Millisecond, "the first flush tick did not start", func() bool {
		return rdb.ZCard(ctx, stagingIndex).Val() > 0
	})
	a.kill()
	left, err := rdb.ZRange(ctx, stagingIndex, 0, -1).Result()
	require.NoError(t, err)
	require.NotEmpty(t, left, "the kill did not land mid-flush: no staging entry left")
	var leftCounters int64
	for _, id := range left {
		leftCounters += rdb.HLen(ctx, prefix+":staging:"+id).Val()
	}
	committed := ledgerHas(ctx, t, dsn, left)
	t.Logf("backlog of %d events sent in %s, %d counters pending; killed mid-flush with %d staging entries left "+
		"(%d counters), %d of them already committed (crash between commit and cleanup)",
		want.events, sent.Round(time.Millisecond), pending, len(left), leftCounters, committed)

	env.FlushInterval = 200 * time.Millisecond
	b := startDistro(t, env)
	start := time.Now()
	// Caught up: every count in PostgreSQL and every staging entry gone. An
	// entry committed before the kill adds nothing to the tables, and its
	// grace period may end a tick after the others'.
	waitFor(t, 30*time.Second, 100*time.Millisecond, "the new collector did not recover the staging entries", func() bool {
		got := tableRows(ctx, t, dsn)
		if o := overcounted(want, got); o != "" {
			t.Fatalf("counted twice: %s", o)
		}
		return sameTables(want, got) && rdb.ZCard(ctx, stagingIndex).Val() == 0
	})
	caughtUp := time.Since(start)
	recovered := metricValue(b.scrapeMetrics(ctx), "otelcol_pg_flush_staging_recovered")
	out := b.output()
	for _, id := range left {
		assert.Contains(t, out, `"flush_id": "`+id+`"`, "staging entry %s not recovered by the new collector", id)
	}
	b.stop()
	assertTables(t, want, tableRows(ctx, t, dsn))
	assertRedisDrained(ctx, t, rdb, prefix)
	t.Logf("new collector caught up in %s, %.0f staging entries recovered", caughtUp.Round(time.Millisecond), recovered)
}

// ledgerHas counts the flush ids present in the ledger.
func ledgerHas(ctx context.Context, t *testing.T, dsn string, ids []string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx,
		`SELECT count(*) FROM analytics_flush_ledger WHERE flush_id = ANY($1)`, ids).Scan(&n))
	return n
}
