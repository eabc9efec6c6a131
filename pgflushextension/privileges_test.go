package pgflushextension

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

// leastPrivilegeGrants are the privileges a flusher's role needs once the
// tables exist (README, Least-privilege role; TestREADMEListsTheGrants keeps
// the two in step). The upserts read the row they update; recovering a
// batch already applied refreshes its ledger row; the ledger's pruning reads
// applied_at.
const leastPrivilegeGrants = `GRANT SELECT, INSERT, UPDATE ON analytics_daily, analytics_hourly, analytics_user_daily TO flusher;
GRANT SELECT, INSERT, UPDATE ON analytics_property_daily, analytics_property_hourly, analytics_sum_daily, analytics_sum_hourly TO flusher;
GRANT SELECT, INSERT, UPDATE ON analytics_user_seen_daily, analytics_visitors_daily, analytics_type_visitors_daily TO flusher;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics_flush_ledger TO flusher;`

// TestFlushAsLeastPrivilegedRole: with the tables created by their owner,
// pg_flush flushes exactly as a role that holds only leastPrivilegeGrants
// (create_schema: false), recovery of a batch already applied and ledger
// pruning included; the same role cannot start with create_schema: true,
// and says why.
func TestFlushAsLeastPrivilegedRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pg := testservers.StartPostgres(t) // roles are per server: a private one
	ownerDSN := pg.FreshDatabase(t)
	owner, err := pgxpool.New(ctx, ownerDSN)
	require.NoError(t, err)
	defer owner.Close()
	require.NoError(t, createSchema(ctx, owner))
	_, err = owner.Exec(ctx, "CREATE ROLE flusher LOGIN")
	require.NoError(t, err)
	_, err = owner.Exec(ctx, leastPrivilegeGrants)
	require.NoError(t, err)

	u, err := url.Parse(ownerDSN)
	require.NoError(t, err)
	u.User = url.User("flusher")
	flusherDSN := u.String()

	rdb, prefix := testservers.SharedRedis(t)
	env := newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), flusherDSN)
	cfg := env.config()
	cfg.CreateSchema = false
	f := env.start(cfg)
	env.flushAwkwardExactly(ctx, f)

	// The property and sum tables, a sum's overflow check included.
	want := totals{}
	want.add(awkwardIncrements()...)
	props := propertyIncrements()
	require.NoError(t, env.apply(ctx, props...))
	want.add(props...)
	st, err := f.flush(ctx)
	require.NoError(t, err)
	require.Equal(t, len(props), st.counters)
	require.Equal(t, want, env.readTotals(ctx))

	// A batch committed whose CLEANUP failed: its recovery finds it applied
	// and refreshes its ledger row.
	require.NoError(t, env.write(ctx, awkwardIncrements()...))
	env.commitWithoutCleanup(ctx, f)
	f.grace = 0
	st, err = f.flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, st.recovered)
	assert.Zero(t, st.counters)
	requireOnlyMarkersLeft(t, env)

	// Pruning deletes as the flusher: age the ledger rows past retention.
	_, err = owner.Exec(ctx, "UPDATE analytics_flush_ledger SET applied_at = applied_at - interval '30 days'")
	require.NoError(t, err)
	st, err = f.flush(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), st.pruned)

	cfg = env.config()
	cfg.CreateSchema = true
	withSchema, err := newFlusher(cfg, extensiontest.NewNopSettings(metadata.Type))
	require.NoError(t, err)
	err = withSchema.Start(ctx, &statusHost{})
	require.ErrorContains(t, err, "permission denied for schema public")
	require.NoError(t, withSchema.Shutdown(context.Background()))
}

// TestREADMEListsTheGrants: the GRANT statements in the README are the ones
// TestFlushAsLeastPrivilegedRole runs with.
func TestREADMEListsTheGrants(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	var grants []string
	for l := range strings.Lines(string(readme)) {
		if strings.HasPrefix(l, "GRANT ") && strings.HasSuffix(strings.TrimSpace(l), "TO flusher;") {
			grants = append(grants, strings.TrimSpace(l))
		}
	}
	assert.Equal(t, strings.Split(leastPrivilegeGrants, "\n"), grants)
}
