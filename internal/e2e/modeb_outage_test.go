package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

const (
	// modeBRetryLimit is the max_elapsed_time of the bounded variant of
	// TestFaultPersistentQueueSurvivesLongRedisOutage.
	modeBRetryLimit = 5 * time.Second
	// modeBOutage is how long Redis stays down after the last request was
	// acknowledged: twice the bounded variant's limit.
	modeBOutage = 2 * modeBRetryLimit
	// modeBRequests are sent while Redis is down (half logs, half spans).
	modeBRequests = 20
)

// modeBSampleRetry is the retry block of testdata/bench/persistent-queue.yaml.
const modeBSampleRetry = `    retry_on_failure:
      enabled: true
      initial_interval: 100ms
      max_interval: 5s
      max_elapsed_time: 0
`

// modeBConfig writes a copy of testdata/bench/persistent-queue.yaml whose
// retries come every 100 ms to 1 s and stop after maxElapsed (0: never),
// and returns its path.
func modeBConfig(t testing.TB, maxElapsed time.Duration) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata", "bench", "persistent-queue.yaml"))
	require.NoError(t, err)
	require.Contains(t, string(src), modeBSampleRetry,
		"mode (b) must retry without a time limit; update modeBSampleRetry if its retry block changed")
	retry := fmt.Sprintf(`    retry_on_failure:
      enabled: true
      initial_interval: 100ms
      max_interval: 1s
      max_elapsed_time: %s
`, maxElapsed)
	path := filepath.Join(t.TempDir(), "persistent-queue.yaml")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(src), modeBSampleRetry, retry, 1)), 0o600))
	return path
}

// modeBOutageRun is what runModeBOutage observed.
type modeBOutageRun struct {
	reqs []*request
	// atRestart are the collector's metrics as Redis came back.
	atRestart string
	// maxSendFailed is the most items exporterhelper had given up on at
	// any scrape during the outage.
	maxSendFailed float64
	// accepted is the number of log records and spans the receiver accepted.
	accepted float64
	// drained is how long after Redis came back every event was counted in
	// Redis (zero when not waited for).
	drained time.Duration
	got     *expected
}

// metricSum adds the values of every series name{labels…} in a Prometheus
// text exposition (metricValue returns the first one).
func metricSum(text, name string, labels ...string) float64 {
	var total float64
	for line := range strings.Lines(text) {
		if v := metricValue(line, name, labels...); v != 0 {
			total += v
		}
	}
	return total
}

// sendFailed is the number of log records and spans exporterhelper gave up on.
func sendFailed(metrics string) float64 {
	return metricValue(metrics, "otelcol_exporter_send_failed_log_records") +
		metricValue(metrics, "otelcol_exporter_send_failed_spans")
}

// runModeBOutage runs the distro with mode (b)'s config, retrying for at most
// maxElapsed (0: without a limit), against a private Redis. It stops Redis,
// sends modeBRequests requests (acknowledged by the persistent queue), keeps
// Redis down for modeBOutage after the last acknowledgment, restarts it,
// waits until the exporter counted every event when waitCounted is set,
// stops the collector (final flush) and reads the tables.
func runModeBOutage(t *testing.T, maxElapsed time.Duration, waitCounted bool) modeBOutageRun {
	t.Helper()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	rdb := srv.Client(t)
	dsn := testservers.FreshDatabase(t)
	const prefix = "analytics"
	d := startDistro(t, distroEnv{
		RedisEndpoint: srv.Addr, PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
		Config:        modeBConfig(t, maxElapsed),
		Env:           []string{"STORAGE_DIR=" + t.TempDir()},
	})

	srv.Stop()
	var run modeBOutageRun
	for id := range modeBRequests {
		r, err := mixedRequest(id, 200, 100)
		require.NoError(t, err)
		d.post(ctx, r.path, r.body) // a 200: the request is in the disk queue
		run.reqs = append(run.reqs, r)
	}
	lastAck := time.Now()

	// The outage: Redis stays down for modeBOutage, whatever the collector
	// does meanwhile; its metrics are read every 250 ms.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for time.Since(lastAck) < modeBOutage {
		run.maxSendFailed = max(run.maxSendFailed, sendFailed(d.scrapeMetrics(ctx)))
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	run.atRestart = d.scrapeMetrics(ctx)
	run.maxSendFailed = max(run.maxSendFailed, sendFailed(run.atRestart))
	run.accepted = metricValue(run.atRestart, "otelcol_receiver_accepted_log_records", `transport="http"`) +
		metricValue(run.atRestart, "otelcol_receiver_accepted_spans", `transport="http"`)
	require.Zero(t, metricValue(run.atRestart, "otelcol_exporter_redis_analytics_events", `signal="logs"`)+
		metricValue(run.atRestart, "otelcol_exporter_redis_analytics_events", `signal="traces"`),
		"nothing can be counted while Redis is down")
	srv.Start()

	if waitCounted {
		want := float64(sumExpected(run.reqs).events)
		restarted := time.Now()
		waitFor(t, 15*time.Second, 20*time.Millisecond, "the queued requests were not applied after Redis came back", func() bool {
			m := d.scrapeMetrics(ctx)
			return metricValue(m, "otelcol_exporter_redis_analytics_events", `signal="logs"`)+
				metricValue(m, "otelcol_exporter_redis_analytics_events", `signal="traces"`) == want
		})
		run.drained = time.Since(restarted)
	}
	d.stop()
	run.got = tableRows(ctx, t, dsn)
	assertRedisDrained(ctx, t, rdb, prefix)
	return run
}

// TestFaultPersistentQueueSurvivesLongRedisOutage: in durability mode (b),
// testdata/bench/persistent-queue.yaml, requests
// acknowledged into the disk queue while Redis is down must survive an
// outage of any length. With max_elapsed_time 0 (the sample's setting) the
// exporter retries until Redis is back and every request is counted exactly
// once. The same outage with a finite max_elapsed_time shorter than it (the
// sample's former 30 s, scaled down to 5 s) makes exporterhelper give up, and
// the persistent queue deletes what it acknowledged.
func TestFaultPersistentQueueSurvivesLongRedisOutage(t *testing.T) {
	t.Parallel()

	t.Run("max_elapsed_time 0 counts every request once", func(t *testing.T) {
		t.Parallel()
		run := runModeBOutage(t, 0, true)
		assert.Zero(t, run.maxSendFailed, "no item given up during the outage")
		require.Positive(t, run.accepted)
		assert.Equal(t, int64(run.accepted), int64(metricSum(run.atRestart, "otelcol_exporter_queue_size")),
			"every accepted log record and span is still in the disk queue when Redis comes back")
		retries := metricSum(run.atRestart, "otelcol_exporter_redis_analytics_redis_errors", `retryable="true"`)
		assert.Positive(t, retries, "the exporter retried during the outage")
		assertExactlyOnce(t, run.got, run.reqs)
		t.Logf("%d requests (%d events) acknowledged with Redis down; Redis down %s after the last one, "+
			"%.0f retryable push failures meanwhile, nothing given up; all counted %s after Redis came back, each exactly once",
			len(run.reqs), sumExpected(run.reqs).events, modeBOutage, retries, run.drained.Round(time.Millisecond))
	})

	t.Run("max_elapsed_time 5s loses them", func(t *testing.T) {
		t.Parallel()
		run := runModeBOutage(t, modeBRetryLimit, false)
		require.Positive(t, run.accepted)
		assert.Equal(t, int64(run.accepted), int64(sendFailed(run.atRestart)),
			"every accepted log record and span given up before Redis came back")
		mult, _ := multiplicities(run.got, run.reqs)
		for _, r := range run.reqs {
			assert.Zero(t, mult[r.id], "request %d: acknowledged, given up and deleted from the queue", r.id)
		}
		assert.Empty(t, run.got.daily, "nothing reached PostgreSQL")
		t.Logf("%d requests acknowledged, %.0f of %.0f items given up after %s of retries: lost",
			len(run.reqs), sendFailed(run.atRestart), run.accepted, modeBRetryLimit)
	})
}
