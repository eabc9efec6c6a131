package pgflushextension

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.uber.org/zap/zapcore"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// connectWait bounds the waits for the background connection: the delay
// between attempts reaches 5 s, and an attempt against a stopped Redis
// takes about 2 s (go-redis' own dial retries).
const connectWait = 30 * time.Second

// lastStatus returns the last status h received, or StatusNone.
func (h *statusHost) lastStatus() componentstatus.Status {
	s := h.statuses()
	if len(s) == 0 {
		return componentstatus.StatusNone
	}
	return s[len(s)-1]
}

// lastErr returns the error of the last status event h received.
func (h *statusHost) lastErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) == 0 {
		return nil
	}
	return h.events[len(h.events)-1].Err()
}

// TestStartsWhileServersAreDown: with PostgreSQL, Redis or both down, Start
// succeeds, warns once and reports a recoverable error that names what is
// down; once the servers are up, pg_flush connects in the background
// (creating the schema), reports StatusOK, and a flush moves the counters.
func TestStartsWhileServersAreDown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name                string
		postgresDown, redis bool
		wantErr             []string
	}{
		{name: "postgres down", postgresDown: true, wantErr: []string{"pg_flush: postgres ping 127.0.0.1:"}},
		{name: "redis down", redis: true, wantErr: []string{"pg_flush: redis ping 127.0.0.1:"}},
		{name: "both down", postgresDown: true, redis: true, wantErr: []string{"postgres ping 127.0.0.1:", "redis ping 127.0.0.1:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			pg := testservers.StartPostgres(t)
			rds := testservers.StartRedis(t)
			env := newTestEnvWith(t, rds.Client(t), "analytics", rds.Addr, pg.FreshDatabase(t))
			if tt.postgresDown {
				pg.Stop()
			}
			if tt.redis {
				rds.Stop()
			}
			f := env.start(env.config())

			require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, f.host.statuses())
			for _, want := range tt.wantErr {
				require.ErrorContains(t, f.host.lastErr(), want)
			}
			assert.Equal(t, 1, f.logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("keeps connecting in the background").Len())

			if tt.postgresDown {
				pg.Start()
			}
			if tt.redis {
				rds.Start()
			}
			require.Eventually(t, func() bool { return f.host.lastStatus() == componentstatus.StatusOK },
				connectWait, 10*time.Millisecond, "pg_flush did not connect")
			assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, f.host.statuses())
			assert.Equal(t, 1, f.logs.FilterMessageSnippet("pg_flush connected to PostgreSQL and Redis").Len())
			assert.Equal(t, 1, f.logs.FilterLevelExact(zapcore.WarnLevel).Len(), "one warning for the outage, not one per attempt")
			env.db.Reset() // its connections may predate a restart
			env.flushAwkwardExactly(ctx, f)
		})
	}
}

// TestShutdownWhileConnecting: Shutdown of a flusher that never reached its
// servers stops the background loop promptly and flushes nothing.
func TestShutdownWhileConnecting(t *testing.T) {
	t.Parallel()
	set, _ := nopSettings(t)
	cfg := createDefaultConfig().(*Config)
	cfg.DSN = configopaque.String(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/db?sslmode=disable", testservers.FreePort(t)))
	cfg.Redis.Endpoint = fmt.Sprintf("127.0.0.1:%d", testservers.FreePort(t))
	f, err := newFlusher(cfg, set)
	require.NoError(t, err)
	require.NoError(t, f.Start(t.Context(), &statusHost{}))

	stopped := make(chan error, 1)
	go func() { stopped <- f.Shutdown(context.Background()) }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not stop the connection loop")
	}
	require.NoError(t, f.Shutdown(context.Background()), "twice")
}

// withPasswords makes pg require a password (SCRAM) over TCP from role
// flusher, whose password is "right-secret", and returns the DSN of a fresh
// database as flusher with password. The superuser keeps trust, which the
// test servers' own checks use. The setting is in pg_hba.conf, so it
// outlives a restart.
func withPasswords(t *testing.T, pg *testservers.PostgresServer, password string) string {
	t.Helper()
	ctx := t.Context()
	dsn := pg.FreshDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var hbaFile string
	require.NoError(t, conn.QueryRow(ctx, "SHOW hba_file").Scan(&hbaFile))
	hba := "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	require.NoError(t, os.WriteFile(hbaFile, []byte(hba), 0o600))
	_, err = conn.Exec(ctx, "CREATE ROLE flusher LOGIN PASSWORD 'right-secret'")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "GRANT CREATE ON SCHEMA public TO flusher")
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	require.NoError(t, err)
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.User = url.UserPassword("flusher", password)
	return u.String()
}

// TestStartFailsForWhatNoRetryFixes: a rejected PostgreSQL password, a role
// that does not exist, and a rejected Redis password still fail Start, with
// an error that names the server and never the password, even while the
// other server is down.
func TestStartFailsForWhatNoRetryFixes(t *testing.T) {
	t.Parallel()
	pg := testservers.StartPostgres(t)
	wrongPasswordDSN := withPasswords(t, pg, testSecret)
	rds := testservers.StartRedis(t)
	require.NoError(t, rds.Client(t).Do(t.Context(), "ACL", "SETUSER", "default", "resetpass", ">right-secret").Err())
	noRole, err := url.Parse(testservers.FreshDatabase(t)) // the shared server: trust, any role may try
	require.NoError(t, err)
	noRole.User = url.User("nobody")
	closedPort := testservers.FreePort(t)
	for _, tt := range []struct {
		name          string
		dsn           string
		redisPassword string
		redis         string
		wantErr       []string
	}{
		{
			name: "wrong postgres password", dsn: wrongPasswordDSN, redisPassword: "right-secret", redis: rds.Addr,
			wantErr: []string{"pg_flush: postgres ping 127.0.0.1:", "28P01"},
		},
		{
			name: "no such role", dsn: noRole.String(), redisPassword: "right-secret", redis: rds.Addr,
			wantErr: []string{"pg_flush: postgres ping 127.0.0.1:", "28000"},
		},
		{
			name: "wrong redis password while postgres is down", redisPassword: testSecret, redis: rds.Addr,
			dsn:     fmt.Sprintf("postgres://postgres@127.0.0.1:%d/db?sslmode=disable", closedPort),
			wantErr: []string{"postgres ping", "redis ping " + rds.Addr, "WRONGPASS"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, _ := nopSettings(t)
			cfg := createDefaultConfig().(*Config)
			cfg.DSN = configopaque.String(tt.dsn)
			cfg.Redis.Endpoint, cfg.Redis.Password = tt.redis, configopaque.String(tt.redisPassword)
			f, err := newFlusher(cfg, set)
			require.NoError(t, err)
			host := &statusHost{}
			err = f.Start(t.Context(), host)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			assert.NotContains(t, err.Error(), testSecret)
			assert.Empty(t, host.statuses(), "the collector reports the failed Start itself")
			require.NoError(t, f.Shutdown(t.Context()))
		})
	}
}

// TestRefusedPasswordAfterStart: a PostgreSQL that was down at Start and
// comes up rejecting the password ends the background loop with a permanent
// error status, and Shutdown then flushes nothing.
func TestRefusedPasswordAfterStart(t *testing.T) {
	t.Parallel()
	pg := testservers.StartPostgres(t)
	dsn := withPasswords(t, pg, testSecret)
	pg.Stop()
	rdb, prefix := testservers.SharedRedis(t)
	env := newTestEnvWith(t, rdb, prefix, testservers.RedisEndpoint(), dsn)
	f := env.start(env.config())
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, f.host.statuses())

	pg.Start()
	require.Eventually(t, func() bool { return f.host.lastStatus() == componentstatus.StatusPermanentError },
		connectWait, 10*time.Millisecond, "the rejected password was not reported")
	err := f.host.lastErr()
	require.ErrorContains(t, err, "28P01")
	assert.NotContains(t, err.Error(), testSecret)
	assert.Equal(t, 1, f.logs.FilterMessageSnippet("pg_flush stops connecting").Len())
}
