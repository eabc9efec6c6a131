package e2e

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// healthRecovery is the recovery_duration of the health tests: a
// recoverable error turns the health check unhealthy once it lasts longer.
const healthRecovery = 2 * time.Second

// healthOverride sets the sample config's recovery_duration to healthRecovery.
var healthOverride = "extensions::healthcheckv2::component_health::recovery_duration: " + healthRecovery.String()

// healthStatus returns the health check's HTTP status and verbose body.
func (d *distro) healthStatus(ctx context.Context) (code int, body string) {
	d.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.healthURL+"?verbose", http.NoBody)
	require.NoError(d.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(d.t, err)
	return resp.StatusCode, string(b)
}

// waitHealthCode polls the health check until it answers code and returns
// that answer's body.
func (d *distro) waitHealthCode(ctx context.Context, code int, msg string) string {
	d.t.Helper()
	var body string
	waitFor(d.t, 30*time.Second, 50*time.Millisecond, msg, func() bool {
		var got int
		got, body = d.healthStatus(ctx)
		return got == code
	})
	return body
}

// waitUnhealthy waits until the health check answers 500 because component
// (e.g. "exporter:redis_analytics") reports a recoverable error, and
// requires that this happens no sooner than healthRecovery after the outage
// began at since.
func (d *distro) waitUnhealthy(ctx context.Context, component string, since time.Time) {
	d.t.Helper()
	body := d.waitHealthCode(ctx, http.StatusInternalServerError, "health check did not turn unhealthy during the outage")
	require.GreaterOrEqual(d.t, time.Since(since), healthRecovery, "unhealthy before recovery_duration elapsed: %s", body)
	require.Contains(d.t, body, `"`+component+`":{"healthy":false,"status":"StatusRecoverableError"`)
}

// waitHealthyAgain waits until the health check answers 200 again.
func (d *distro) waitHealthyAgain(ctx context.Context) {
	d.t.Helper()
	body := d.waitHealthCode(ctx, http.StatusOK, "health check did not recover")
	require.NotContains(d.t, body, "StatusRecoverableError")
}

// TestHealthRedisOutage stops a private Redis while a request waits in the
// exporter: the exporter's retries report a recoverable error, GET / turns
// 500 once it has lasted recovery_duration, and back to 200 once Redis is
// back and the request is acknowledged. The collector runs with
// `--config` alone (no feature gate).
func TestHealthRedisOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rs := testservers.StartRedis(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: rs.Addr, PostgresDSN: testservers.FreshDatabase(t), KeyPrefix: privatePrefix,
		// No flush during the test: only the exporter meets the outage.
		FlushInterval: time.Hour,
		Overrides: []string{
			healthOverride,
			// Retries closer together than recovery_duration, as in the
			// sample config (5s against 30s).
			"exporters::redis_analytics::retry_on_failure::max_interval: 200ms",
		},
	})
	code, body := d.healthStatus(ctx)
	require.Equal(t, http.StatusOK, code, body)
	r, err := mixedRequest(0, 20, 10)
	require.NoError(t, err)
	d.post(ctx, r.path, r.body)

	outage := time.Now() // before any failure can be reported
	rs.Stop()
	acked := make(chan error, 1)
	go func() {
		r, err := mixedRequest(1, 20, 10)
		if err != nil {
			acked <- err
			return
		}
		acked <- d.send(ctx, r.path, r.body) // retried until Redis is back
	}()
	d.waitUnhealthy(ctx, "exporter:redis_analytics", outage)

	rs.Start()
	select {
	case err := <-acked:
		require.NoError(t, err, "the request sent during the outage is acknowledged once Redis is back")
	case <-time.After(30 * time.Second):
		t.Fatal("the request sent during the outage was not answered after Redis came back")
	}
	d.waitHealthyAgain(ctx)
	d.stop()
}

// TestHealthPostgresOutage kills a private PostgreSQL while counts wait to be
// flushed: pg_flush's failed ticks turn GET / 500 once they have lasted
// recovery_duration, and a successful tick after the restart turns it 200.
func TestHealthPostgresOutage(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	_, prefix := testservers.SharedRedis(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: pg.FreshDatabase(t), KeyPrefix: prefix,
		FlushInterval: 100 * time.Millisecond,
		Overrides:     []string{healthOverride},
	})
	code, body := d.healthStatus(ctx)
	require.Equal(t, http.StatusOK, code, body)

	outage := time.Now() // before any failure can be reported
	pg.Kill()
	r, err := mixedRequest(0, 20, 10)
	require.NoError(t, err)
	d.post(ctx, r.path, r.body) // Redis is up: acknowledged, and pending for the flusher
	d.waitUnhealthy(ctx, "extension:pg_flush", outage)

	pg.Start()
	d.waitHealthyAgain(ctx)
	d.stop()
}
