package pgflushextension

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension"
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// The analytics_query extension reads what this flusher moves: these tests
// pause a flush at each of its steps (the failpoints) and query there,
// which only a test inside this package can do.

// queryHost holds the flusher under test as "pg_flush".
type queryHost struct {
	exts map[component.ID]component.Component
}

func (h *queryHost) GetExtensions() map[component.ID]component.Component { return h.exts }

// startQueryExtension starts an analytics_query extension that reads
// through f and returns its base URL.
func startQueryExtension(t *testing.T, f *flusher) string {
	t.Helper()
	fac := analyticsqueryextension.NewFactory()
	cfg := fac.CreateDefaultConfig()
	endpoint := fmt.Sprintf("127.0.0.1:%d", testservers.FreePort(t))
	require.NoError(t, confmap.NewFromStringMap(map[string]any{"endpoint": endpoint, "flusher": "pg_flush"}).Unmarshal(cfg))
	ext, err := fac.Create(t.Context(), extensiontest.NewNopSettings(fac.Type()), cfg)
	require.NoError(t, err)
	host := &queryHost{exts: map[component.ID]component.Component{component.MustNewID("pg_flush"): f}}
	require.NoError(t, ext.Start(t.Context(), host))
	t.Cleanup(func() { assert.NoError(t, ext.Shutdown(context.Background())) })
	return "http://" + endpoint
}

// queryTables runs each query and returns its results as JSON, in order.
func queryTables(ctx context.Context, base string, queries []string) ([]string, error) {
	out := make([]string, len(queries))
	for i, q := range queries {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v2/query", bytes.NewBufferString(q))
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %d %s", q, resp.StatusCode, body)
		}
		var r struct {
			Results json.RawMessage `json:"results"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return nil, err
		}
		out[i] = string(r.Results)
	}
	return out, nil
}

// applyEvents writes one exporter push through the real apply script: for
// each event, its daily, hourly and per-user counters.
func (e *testEnv) applyEvents(ctx context.Context, evs ...increment) {
	e.t.Helper()
	call := protocol.NewApplyCall(e.schema)
	call.AddBatch(uuid.NewString())
	merged := map[protocol.Counter]int64{}
	for _, inc := range evs {
		merged[inc.counter] += inc.n
	}
	for c, n := range merged {
		call.AddCounter(c, n)
	}
	call.Build(protocol.ApplyTTLs{Counter: testCounterTTL, BatchMarker: time.Hour, ResourceMarker: time.Hour})
	rc := redisconn.NewDefaultClientConfig()
	res, err := call.Run(ctx, rc.NewScriptRunner(e.rdb))
	require.NoError(e.t, err)
	require.Equal(e.t, protocol.Applied, res.Outcome)
}

// userEvents returns the three counters of n events of typ by user at at.
func userEvents(typ, user string, at time.Time, n int64) []increment {
	return []increment{
		{daily(typ, at), n}, {hourly(typ, at), n}, {userDaily(user, typ, at), n},
	}
}

// consistencyQueries are checked at every step: per day and type with
// visitors, per hour, per user, the totals, and visitors per day (the
// daily ones from the visitors rollups).
var consistencyQueries = []string{
	`{"metrics":["events","visitors"],"dimensions":["time:day","event:name"],"date_range":["2026-12-01","2026-12-03"]}`,
	`{"metrics":["events"],"dimensions":["time:hour"],"date_range":["2026-12-01","2026-12-03"]}`,
	`{"metrics":["events","visitors"],"dimensions":["event:user"],"date_range":"all","order_by":[["event:user","asc"]]}`,
	`{"metrics":["visitors","events"],"date_range":["2026-12-01","2026-12-03"]}`,
	`{"metrics":["visitors"],"dimensions":["time:day"],"date_range":["2026-12-01","2026-12-03"]}`,
}

// TestQueryExactAtEveryFlushStep pauses flushes at each of their steps
// (before and after STAGE, inside the APPLY transaction before and after
// the ledger row and before COMMIT, after COMMIT before CLEANUP, after
// CLEANUP, and in the recovery of an entry a dead flusher left) and
// queries there: every answer equals the one before the flush, so nothing
// is counted twice or missed while counts move between Redis and
// PostgreSQL. Part of the data is in PostgreSQL already, with the same
// users and buckets as what waits in Redis.
func TestQueryExactAtEveryFlushStep(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	cfg := env.config()
	cfg.BatchSize = 4 // several batches per tick
	f := env.start(cfg)
	base := startQueryExtension(t, f.flusher)

	d1 := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	d2 := time.Date(2026, 12, 2, 23, 0, 0, 0, time.UTC)
	var first []increment
	for _, u := range []string{"alice", "bob", "carol"} {
		first = append(first, userEvents("view", u, d1, 2)...)
	}
	first = append(first, userEvents("signup", "alice", d2, 1)...)
	env.applyEvents(ctx, first...)
	_, err := f.flush(ctx)
	require.NoError(t, err)

	// The same users, days and types again, and new ones, in Redis.
	env.applyEvents(ctx, append(userEvents("view", "alice", d1, 5), userEvents("view", "dave", d1, 1)...)...)
	env.applyEvents(ctx, append(userEvents("signup", "bob", d2, 1), userEvents("view", "carol", d2.Add(-time.Hour), 3)...)...)
	// A dead flusher's staging entry, old enough to be recovered.
	env.stageAged(ctx, env.redisStore(), 2*f.grace)
	env.applyEvents(ctx, append(userEvents("view", "erin", d2, 1), userEvents("signup", "alice", d2, 2)...)...)

	want, err := queryTables(ctx, base, consistencyQueries)
	require.NoError(t, err)
	require.JSONEq(t, `[
		{"dimensions":["2026-12-01","view"],"metrics":[12,4]},
		{"dimensions":["2026-12-02","signup"],"metrics":[4,2]},
		{"dimensions":["2026-12-02","view"],"metrics":[4,2]}]`, want[0])
	require.JSONEq(t, `[
		{"dimensions":["2026-12-01T10:00:00Z"],"metrics":[12]},
		{"dimensions":["2026-12-02T22:00:00Z"],"metrics":[3]},
		{"dimensions":["2026-12-02T23:00:00Z"],"metrics":[5]}]`, want[1])
	require.JSONEq(t, `[
		{"dimensions":["alice"],"metrics":[10,1]},
		{"dimensions":["bob"],"metrics":[3,1]},
		{"dimensions":["carol"],"metrics":[5,1]},
		{"dimensions":["dave"],"metrics":[1,1]},
		{"dimensions":["erin"],"metrics":[1,1]}]`, want[2])
	require.JSONEq(t, `[{"dimensions":[],"metrics":[5,20]}]`, want[3])
	require.JSONEq(t, `[
		{"dimensions":["2026-12-01"],"metrics":[4]},
		{"dimensions":["2026-12-02"],"metrics":[4]}]`, want[4])

	var (
		mu    sync.Mutex
		steps []string
	)
	f.failpoint = func(step string) {
		got, qerr := queryTables(ctx, base, consistencyQueries)
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, step)
		if assert.NoError(t, qerr, step) {
			assert.Equal(t, want, got, "at step %s", step)
		}
	}
	_, err = f.flush(ctx)
	f.failpoint = nil
	require.NoError(t, err)
	for _, step := range []string{
		stepRecoveryRead, stepBeforeStage, stepAfterStage, stepApplyBegun, stepAfterLedger,
		stepBeforeCommit, stepAfterCommit, stepAfterCleanup,
	} {
		assert.Contains(t, steps, step, "the flush passed every step")
	}
	assert.Greater(t, len(slices.DeleteFunc(slices.Clone(steps), func(s string) bool { return s != stepAfterStage })), 1, "several batches")

	got, err := queryTables(ctx, base, consistencyQueries)
	require.NoError(t, err)
	assert.Equal(t, want, got, "after the flush")
	n, err := env.rdb.ZCard(ctx, env.schema.PendingKey()).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "everything is in PostgreSQL")
}

// TestQueryExactWithCommittedEntryLeftInRedis: a batch committed to
// PostgreSQL whose CLEANUP failed stays in the staging index; its counts are
// counted once, from PostgreSQL (the ledger says it is committed).
func TestQueryExactWithCommittedEntryLeftInRedis(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	f := env.start(env.config())
	base := startQueryExtension(t, f.flusher)
	d := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	env.applyEvents(ctx, append(userEvents("view", "alice", d, 2), userEvents("view", "bob", d, 1)...)...)
	want, err := queryTables(ctx, base, consistencyQueries)
	require.NoError(t, err)

	env.commitWithoutCleanup(ctx, f)
	got, err := queryTables(ctx, base, consistencyQueries)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	env.applyEvents(ctx, userEvents("view", "alice", d, 1)...)
	got, err = queryTables(ctx, base, consistencyQueries[3:])
	require.NoError(t, err)
	assert.JSONEq(t, `[{"dimensions":[],"metrics":[2,4]}]`, got[0], "alice is still one visitor")
}
