package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// Issue #20 item 7: the collector starts while a backend is down. The
// health check may report the outage, so these tests wait for the OTLP port
// instead of a healthy status.

// waitListening waits until the collector accepts connections on its
// OTLP/HTTP port, failing the test if it exits first.
func (d *distro) waitListening() {
	d.t.Helper()
	addr := strings.TrimPrefix(d.httpURL, "http://")
	waitFor(d.t, 60*time.Second, 50*time.Millisecond, "the collector's OTLP/HTTP port is not listening", func() bool {
		select {
		case <-d.exited:
			d.t.Fatalf("collector exited during start: %v\n%s", d.waitErr, d.output())
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	})
}

// TestDistroStartsWhilePostgresIsDown: started while its PostgreSQL is down,
// the distro starts, acknowledges requests once they are counted in Redis
// (pg_flush reports a recoverable error meanwhile), and once PostgreSQL is
// up pg_flush connects, creates the tables and moves every count exactly once.
func TestDistroStartsWhilePostgresIsDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t)
	dsn := pg.FreshDatabase(t)
	pg.Stop()
	rdb, prefix := testservers.SharedRedis(t)
	d := launchDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: 200 * time.Millisecond,
	})
	d.waitListening()

	var reqs []*request
	for i := range 10 {
		r, err := mixedRequest(i, 200, 100)
		require.NoError(t, err)
		d.post(ctx, r.path, r.body) // a 200: counted in Redis (wait_for_result)
		reqs = append(reqs, r)
	}
	assert.Positive(t, rdb.ZCard(ctx, prefix+":pending").Val(), "the counters wait in Redis")
	waitFor(t, 10*time.Second, 50*time.Millisecond, "the health check does not show pg_flush's recoverable error", func() bool {
		return strings.Contains(d.health(ctx), "StatusRecoverableError")
	})
	assert.Contains(t, d.output(), "pg_flush cannot reach PostgreSQL or Redis")

	pg.Start()
	// The tables exist once pg_flush has connected (create_schema).
	waitFor(t, 30*time.Second, 50*time.Millisecond, "pg_flush did not connect after PostgreSQL came up", func() bool {
		return strings.Contains(d.output(), "pg_flush connected to PostgreSQL and Redis")
	})
	want := sumExpected(reqs)
	waitFor(t, 30*time.Second, 100*time.Millisecond, "the counts did not reach PostgreSQL after it came up", func() bool {
		got := tableRows(ctx, t, dsn)
		if o := overcounted(want, got); o != "" {
			t.Fatalf("counted twice: %s", o)
		}
		return sameTables(want, got)
	})
	waitFor(t, 10*time.Second, 50*time.Millisecond, "the health check does not show the recovery", func() bool {
		return !strings.Contains(d.health(ctx), "StatusRecoverableError")
	})

	d.stop()
	assertExactlyOnce(t, tableRows(ctx, t, dsn), reqs)
	assertRedisDrained(ctx, t, rdb, prefix)
}

// TestDistroStartsWhileRedisIsDown: started while its Redis is down, the
// distro starts; a request is retried by the exporter (not connected yet)
// and acknowledged once Redis is up and the exporter has connected; its
// counts reach PostgreSQL.
func TestDistroStartsWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	srv.Stop()
	dsn := testservers.FreshDatabase(t)
	d := launchDistro(t, distroEnv{
		RedisEndpoint: srv.Addr, PostgresDSN: dsn, KeyPrefix: privatePrefix,
		FlushInterval: 200 * time.Millisecond,
	})
	d.waitListening()
	assert.Contains(t, d.output(), "Redis is not reachable: the exporter starts anyway")

	r, err := mixedRequest(0, 200, 100)
	require.NoError(t, err)
	sent := make(chan error, 1)
	go func() { sent <- d.send(ctx, r.path, r.body) }()
	waitFor(t, 20*time.Second, 50*time.Millisecond, "the exporter did not refuse the request while not connected", func() bool {
		return metricValue(d.scrapeMetrics(ctx), "otelcol_exporter_redis_analytics_redis_errors", `retryable="true"`) > 0
	})
	srv.Start()
	select {
	case err := <-sent:
		require.NoError(t, err, "the request is acknowledged once the exporter has connected")
	case <-time.After(30 * time.Second):
		t.Fatal("the request was not acknowledged after Redis came up")
	}
	waitFor(t, 30*time.Second, 100*time.Millisecond, "the counts did not reach PostgreSQL", func() bool {
		return sameTables(r.exp, tableRows(ctx, t, dsn))
	})
	assert.Contains(t, d.output(), "Connected to Redis")

	d.stop()
	assertExactlyOnce(t, tableRows(ctx, t, dsn), []*request{r})
}
