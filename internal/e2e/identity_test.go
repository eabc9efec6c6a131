package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// anonymousRequest is mixedRequest's logs without any log.record.uid: what an
// SDK that does not set it sends.
func anonymousRequest(t *testing.T, id int) *request {
	t.Helper()
	r, err := mixedRequest(id, 60, 0)
	require.NoError(t, err)
	req := plogotlp.NewExportRequest()
	require.NoError(t, req.UnmarshalProto(r.body))
	ld := req.Logs()
	for i := range ld.ResourceLogs().Len() {
		sls := ld.ResourceLogs().At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lrs.At(k).Attributes().Remove("log.record.uid")
			}
		}
	}
	r.body, err = plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	require.NoError(t, err)
	return r
}

// TestFaultKilledBetweenApplyAndAnswer kills the collector after Redis
// applied the requests and before it answered them (wait_replicas: 1 on a
// Redis without replicas holds every answer in WAIT), then the client
// resends them to a new collector. Records with an identity (log records
// with log.record.uid, spans by their ids) are counted exactly once; a
// request without identities is counted twice, the documented at-least-once
// case.
func TestFaultKilledBetweenApplyAndAnswer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	env := distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // only the final flush of the second collector
	}
	held := env
	held.Env = []string{"REDIS_WAIT_REPLICAS=1"}
	d := startDistro(t, held)

	var identified []*request
	for id := range 4 { // two logs and two spans requests
		r, err := mixedRequest(id, 60, 30)
		require.NoError(t, err)
		identified = append(identified, r)
	}
	anonymous := anonymousRequest(t, 4)
	all := append(identified, anonymous) //nolint:gocritic // a new slice is fine here

	answered := make(chan error, len(all))
	for _, r := range all {
		go func() { answered <- d.send(ctx, r.path, r.body) }()
	}
	probeDayHour := protocol.HourOf(base) - protocol.HourOf(base)%24
	waitFor(t, 20*time.Second, 5*time.Millisecond, "requests not applied to Redis", func() bool {
		for _, r := range all {
			key := schema.Key(protocol.Counter{Family: protocol.Daily, EventType: probeType(r.id), Hour: probeDayHour})
			if rdb.Exists(ctx, key).Val() == 0 {
				return false
			}
		}
		return true
	})
	d.kill()
	for range all {
		require.Error(t, <-answered, "no request may be acknowledged: the answers waited for a replica")
	}

	d = startDistro(t, env)
	for _, r := range all { // the client's resend
		d.post(ctx, r.path, r.body)
	}
	d.stop()

	got := tableRows(ctx, t, dsn)
	mult, want := multiplicities(got, all)
	assertTables(t, want, got)
	for _, r := range identified {
		assert.Equal(t, int64(1), mult[r.id], "request %d (%s) with identities", r.id, r.path)
	}
	assert.Equal(t, int64(2), mult[anonymous.id], "a request without identities is counted at least once: here twice")
	assertRedisDrained(ctx, t, rdb, prefix)
}
