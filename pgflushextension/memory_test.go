package pgflushextension

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestFlushDrainsAFullRedis: a Redis at maxmemory with noeviction refuses
// the exporter's pushes, but a flush still moves every counter out (STAGE's
// first write, the EXPIRE of its claim key, is not a deny-oom command, so
// Redis lets it through, and a script that has written may go on), which is
// what frees the memory.
func TestFlushDrainsAFullRedis(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rds := testservers.StartRedis(t) // noeviction, redis-server's default
	admin := rds.Client(t)
	env := newTestEnvWith(t, admin, "full", rds.Addr, testservers.FreshDatabase(t))
	f := env.start(env.config())
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))

	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err()) // every allocating write now exceeds it
	t.Cleanup(func() { _ = admin.ConfigSet(ctx, "maxmemory", "0").Err() })
	require.ErrorContains(t, env.write(ctx, incs...), "OOM command not allowed", "Redis is full: a script whose first write allocates is refused")
	want := totals{}
	want.add(incs...)
	st, err := f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, len(incs), st.counters)
	assert.Equal(t, want, env.readTotals(ctx))
	env.requireRedisEmpty(ctx)
}
