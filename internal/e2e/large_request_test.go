package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestLargeRequestIsCounted sends one OTLP/HTTP request of 120,000 log
// records (about 16 MB) through the sample config: the sending queue counts
// requests, not records, so a request larger than any record budget fits and
// is answered once counted.
func TestLargeRequestIsCounted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour,
	})
	const n = 120_000
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "bulk-import")
	lrs := rl.ScopeLogs().AppendEmpty().LogRecords()
	lrs.EnsureCapacity(n)
	exp := newExpected()
	for i := range n {
		lr := lrs.AppendEmpty()
		lr.SetEventName("imported")
		lr.SetTimestamp(pcommon.NewTimestampFromTime(base))
		lr.Attributes().PutStr("log.record.uid", "import-"+strconv.Itoa(i))
		lr.Attributes().PutStr("user.id", "u"+strconv.Itoa(i%100))
		lr.Body().SetStr("row " + strconv.Itoa(i) + " of the nightly import, with a body of realistic size ......................")
		exp.add("imported", "u"+strconv.Itoa(i%100), base)
	}
	body, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	require.NoError(t, err)
	require.Greater(t, len(body), 15<<20, "about 16 MB")
	d.post(ctx, "/v1/logs", body) // requires a 200
	d.stop()
	got := tableRows(ctx, t, dsn)
	assertTables(t, exp, got)
	assert.Equal(t, int64(n), sum(got.daily))
}
