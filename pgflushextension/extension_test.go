package pgflushextension

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

const testSecret = "s3cr3t-pw"

// TestStartErrorsDoNotLeakSecrets: neither a failed Start (a DSN that does
// not parse) nor the recoverable error and the warning of a Start that could
// not reach PostgreSQL contain the DSN's password.
func TestStartErrorsDoNotLeakSecrets(t *testing.T) {
	t.Parallel()
	closedPort := testservers.FreePort(t)
	tests := []struct {
		name       string
		dsn        string
		want       string
		startFails bool
	}{
		{
			name: "unreachable url",
			dsn:  fmt.Sprintf("postgres://flusher:%s@127.0.0.1:%d/db?sslmode=disable&connect_timeout=5", testSecret, closedPort),
			want: fmt.Sprintf("pg_flush: postgres ping 127.0.0.1:%d/db", closedPort),
		},
		{
			name: "unreachable url with escaped password",
			dsn:  fmt.Sprintf("postgres://flusher:%s%%2F@127.0.0.1:%d/db?sslmode=disable", testSecret, closedPort),
			want: "postgres ping",
		},
		{
			name: "unreachable keyword/value",
			dsn:  fmt.Sprintf("host=127.0.0.1 port=%d user=flusher password=%s dbname=db sslmode=disable", closedPort, testSecret),
			want: "postgres ping",
		},
		{
			name: "unparsable url",
			dsn:  fmt.Sprintf("postgres://flusher:%s@127.0.0.1:notaport/db", testSecret),
			want: `pg_flush: parse "dsn"`, startFails: true,
		},
		{
			name: "unparsable keyword/value",
			dsn:  "host=127.0.0.1 password='" + testSecret,
			want: `pg_flush: parse "dsn"`, startFails: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, _ := nopSettings(t)
			core, logs := observer.New(zapcore.DebugLevel)
			set.Logger = zap.New(core)
			cfg := createDefaultConfig().(*Config)
			cfg.DSN = configopaque.String(tt.dsn)
			f, err := newFlusher(cfg, set)
			require.NoError(t, err)
			host := &statusHost{}
			err = f.Start(t.Context(), host)
			if !tt.startFails {
				require.NoError(t, err, "an unreachable PostgreSQL does not stop the collector")
				err = host.lastErr()
			}
			require.ErrorContains(t, err, tt.want)
			assert.NotContains(t, err.Error(), testSecret)
			assert.NotContains(t, fmt.Sprintf("%+v", err), testSecret)
			require.NoError(t, f.Shutdown(t.Context()))
			for _, entry := range logs.All() {
				for _, field := range entry.Context {
					assert.NotContains(t, fmt.Sprint(field.Interface, field.String), testSecret, entry.Message)
				}
			}
		})
	}
}

// TestStartRedisUnreachable: a Redis that does not answer does not stop the
// collector either; the status names it, never the password.
func TestStartRedisUnreachable(t *testing.T) {
	t.Parallel()
	set, _ := nopSettings(t)
	cfg := createDefaultConfig().(*Config)
	cfg.DSN = configopaque.String(testservers.FreshDatabase(t))
	cfg.Redis.Endpoint = fmt.Sprintf("127.0.0.1:%d", testservers.FreePort(t))
	cfg.Redis.Password = testSecret
	f, err := newFlusher(cfg, set)
	require.NoError(t, err)
	host := &statusHost{}
	require.NoError(t, f.Start(t.Context(), host))
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, host.statuses())
	err = host.lastErr()
	require.ErrorContains(t, err, "pg_flush: redis ping "+cfg.Redis.Endpoint)
	assert.NotContains(t, err.Error(), testSecret)
	require.NoError(t, f.Shutdown(t.Context()))
}

func TestRedactError(t *testing.T) {
	t.Parallel()
	inner := &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: "password " + testSecret + " rejected"}
	err := redactError(inner, []string{testSecret})
	assert.Equal(t, "FATAL: password xxxxx rejected (SQLSTATE 28P01)", err.Error())
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "errors.As still reaches the original error")
	assert.ErrorIs(t, err, inner)
}

// TestParseErrorsDoNotLeakThePassword: pgx masks the password of a DSN that
// does not parse, in every spelling; pg_flush relies on it.
func TestParseErrorsDoNotLeakThePassword(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"postgres://u:" + testSecret + "@h:port/db",
		"postgresql://u:p%40" + testSecret + "@h:port/db",
		"postgres://u@h/db?password=" + testSecret + "&sslmode=bogus",
		"host=h password=" + testSecret + " user=u sslmode=bogus",
		"host=h password='" + testSecret + "' port=abc",
	} {
		cfg := createDefaultConfig().(*Config)
		cfg.DSN = configopaque.String(dsn)
		f, err := newFlusher(cfg, extensiontest.NewNopSettings(metadata.Type))
		require.NoError(t, err)
		err = f.Start(t.Context(), &statusHost{})
		require.Error(t, err, dsn)
		assert.NotContains(t, err.Error(), testSecret, dsn)
		require.NoError(t, f.Shutdown(t.Context()))
	}
}

// TestFactoryExtensionRecoversAtStart: a collector restarted after a flusher
// died between STAGE and APPLY applies the left staging entry on its first
// tick, right at start, not one interval later.
func TestFactoryExtensionRecoversAtStart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	env := newTestEnv(t)
	incs := awkwardIncrements()
	require.NoError(t, env.write(ctx, incs...))
	want := totals{}
	want.add(incs...)

	// The dead flusher staged an hour ago: past any grace period.
	dead := env.redisStore()
	res := env.stageAged(ctx, dead, time.Hour)
	require.Len(t, res.Fields, len(incs))

	cfg := env.config()
	cfg.Interval = time.Hour // only the tick at start can apply it
	ext, err := NewFactory().Create(ctx, extensiontest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(ctx, &statusHost{}))
	t.Cleanup(func() { require.NoError(t, ext.Shutdown(context.Background())) })

	require.Eventually(t, func() bool {
		return env.rdb.ZCard(ctx, env.schema.StagingIndexKey()).Val() == 0
	}, 10*time.Second, 20*time.Millisecond, "the staging entry was not recovered at start")
	assert.Equal(t, want, env.readTotals(ctx))
}

// TestLifecycleConfigCannotWrite: the generated lifecycle test
// (generated_component_test.go) starts and stops the extension with
// metadata.yaml's tests::config against the shared servers; its ticks must
// not be able to change shared data: a PostgreSQL session that cannot write
// (a DELETE of the ledger pruning fails and is only logged), and a key
// prefix with nothing in Redis (a tick with nothing to take writes nothing).
func TestLifecycleConfigCannotWrite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cm, err := confmaptest.LoadConf("metadata.yaml")
	require.NoError(t, err)
	sub, err := cm.Sub("tests::config")
	require.NoError(t, err)
	cfg := createDefaultConfig().(*Config)
	require.NoError(t, sub.Unmarshal(cfg))
	assert.False(t, cfg.CreateSchema)

	conn, err := pgx.Connect(ctx, string(cfg.DSN))
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var readOnly string
	require.NoError(t, conn.QueryRow(ctx, "SHOW transaction_read_only").Scan(&readOnly))
	assert.Equal(t, "on", readOnly)
	// A temporary table would vanish with the session: a harmless probe.
	_, err = conn.Exec(ctx, "CREATE TEMP TABLE pgflush_lifecycle_probe (i int)")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "25006", pgErr.Code, "read_only_sql_transaction")

	rdb, _ := testservers.SharedRedis(t)
	var keys []string
	iter := rdb.Scan(ctx, 0, cfg.KeyPrefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(t, iter.Err())
	assert.Empty(t, keys, "nothing writes under the lifecycle test's key prefix")
}
