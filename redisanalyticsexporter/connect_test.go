package redisanalyticsexporter

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// connectWait bounds the waits for the background connection: the delay
// between attempts reaches 5 s, and an attempt against a stopped server
// takes about 2 s (go-redis' own dial retries).
const connectWait = 30 * time.Second

// observedSettings returns exporter settings whose logs (Info and up) are
// recorded.
func observedSettings() (exporter.Settings, *observer.ObservedLogs) {
	set := exportertest.NewNopSettings(metadata.Type)
	core, logs := observer.New(zapcore.InfoLevel)
	set.Logger = zap.New(core)
	return set, logs
}

// lastStatus returns the last status host received, or StatusNone.
func (h *statusHost) lastStatus() componentstatus.Status {
	s := h.statuses()
	if len(s) == 0 {
		return componentstatus.StatusNone
	}
	return s[len(s)-1]
}

// TestStartsWhileRedisIsDown: with Redis down, Start succeeds and reports a
// recoverable error; pushes fail with a retryable error that says the
// exporter is not connected yet; once Redis is up, the exporter connects in
// the background, reports StatusOK, and a retried push and a new one count.
func TestStartsWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testservers.StartRedis(t)
	srv.Stop()
	set, logs := observedSettings()
	host := &statusHost{}
	const prefix = "analytics"
	le, e := startLogs(t, testConfig(srv.Addr, prefix), set, host, nil)

	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, host.statuses())
	warned := logs.FilterMessageSnippet("Redis is not reachable")
	require.Equal(t, 1, warned.Len())
	assert.Equal(t, zapcore.WarnLevel, warned.All()[0].Level)

	err := e.pushLogs(ctx, sampleLogs())
	require.ErrorIs(t, err, errNotConnected)
	require.NotErrorIs(t, err, errNotStarted)
	assert.False(t, consumererror.IsPermanent(err), "retryable: %v", err)
	require.ErrorContains(t, err, "redis ping "+srv.Addr)

	// Through exporterhelper: the push is retried until the exporter has
	// connected.
	done := make(chan error, 1)
	go func() { done <- le.ConsumeLogs(ctx, sampleLogs()) }()
	srv.Start()
	require.Eventually(t, func() bool { return host.lastStatus() == componentstatus.StatusOK },
		connectWait, 10*time.Millisecond, "the exporter did not connect")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(connectWait):
		t.Fatal("the retried push did not succeed after Redis came up")
	}
	require.NoError(t, e.pushLogs(ctx, sampleLogs()))

	want := scaled(expectedCounters(t, prefix), 2)
	assert.Equal(t, want, counterValues(t, srv.Client(t), keysOf(want)), "the push that failed fast counted nothing")
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, host.statuses())
	assert.Equal(t, 1, logs.FilterMessage("Connected to Redis").Len())
	assert.Equal(t, 1, logs.FilterLevelExact(zapcore.WarnLevel).Len(), "one warning for the outage, not one per attempt")
}

// TestShutdownStopsConnecting: Shutdown ends the background connection loop
// of an exporter whose Redis never comes up, promptly (goleak checks that
// its goroutine is gone); pushes then fail as not started.
func TestShutdownStopsConnecting(t *testing.T) {
	t.Parallel()
	addr := "127.0.0.1:" + strconv.Itoa(testservers.FreePort(t))
	e, err := newRedisAnalyticsExporter(testConfig(addr, "unused"), exportertest.NewNopSettings(metadata.Type), signalLogs)
	require.NoError(t, err)
	host := &statusHost{}
	require.NoError(t, e.start(t.Context(), host))
	require.ErrorIs(t, e.pushLogs(t.Context(), sampleLogs()), errNotConnected)

	stopped := make(chan error, 1)
	go func() { stopped <- e.shutdown(context.Background()) }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not stop the connection loop")
	}
	require.ErrorIs(t, e.pushLogs(t.Context(), sampleLogs()), errNotStarted)
	require.NoError(t, e.shutdown(t.Context()), "twice")
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, host.statuses())
}

// TestStartFailsForWhatNoRetryFixes: a rejected password and TLS
// misconfigurations still fail Start, with an error that names the server
// and the cause but never the password.
func TestStartFailsForWhatNoRetryFixes(t *testing.T) {
	t.Parallel()
	pki := testservers.NewTestPKI(t)
	otherPKI := testservers.NewTestPKI(t)
	srv := testservers.StartRedisTLS(t, pki)
	require.NoError(t, srv.Client(t).Do(t.Context(), "ACL", "SETUSER", "default", "resetpass", ">right-secret").Err())
	const wrong = "wrong-secret"
	verifyWith := func(ca string) configtls.ClientConfig {
		c := configtls.NewDefaultClientConfig()
		c.CAFile, c.CertFile, c.KeyFile = ca, pki.ClientCertFile, pki.ClientKeyFile
		return c
	}
	for _, tt := range []struct {
		name      string
		configure func(cfg *Config)
		wantErr   []string
	}{
		{
			name:      "wrong password",
			configure: func(cfg *Config) { cfg.Redis.Password = wrong },
			wantErr:   []string{"connect to redis: redis ping " + srv.Addr, "WRONGPASS"},
		},
		{
			name:      "no password",
			configure: func(*Config) {},
			wantErr:   []string{"connect to redis: redis ping " + srv.Addr, "NOAUTH"},
		},
		{
			name: "server certificate of an unknown CA",
			configure: func(cfg *Config) {
				cfg.Redis.Endpoint, cfg.Redis.TLS = srv.TLSAddr, verifyWith(otherPKI.CAFile)
			},
			wantErr: []string{"redis ping " + srv.TLSAddr, "certificate signed by unknown authority"},
		},
		{
			name: "plain text to the TLS port",
			configure: func(cfg *Config) {
				cfg.Redis.Endpoint, cfg.Redis.Password = srv.TLSAddr, wrong
			},
			wantErr: []string{"redis ping " + srv.TLSAddr, "the server speaks TLS"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(srv.Addr, "unused")
			tt.configure(cfg)
			le, err := NewFactory().CreateLogs(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
			require.NoError(t, err)
			host := &statusHost{}
			err = le.Start(t.Context(), host)
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			assert.NotContains(t, err.Error(), wrong)
			assert.Empty(t, host.statuses(), "the collector reports the failed Start itself")
			require.NoError(t, le.Shutdown(t.Context()))
		})
	}
}

// TestRefusedSettingsAfterStart: a Redis that was down at Start and comes up
// refusing the settings (here: cluster mode against a single server) ends
// the background loop with a permanent error status; pushes keep failing
// with a retryable error that says why.
func TestRefusedSettingsAfterStart(t *testing.T) {
	t.Parallel()
	srv := testservers.StartRedis(t)
	srv.Stop()
	cfg := testConfig(srv.Addr, "{analytics}")
	cfg.Redis.Cluster = true
	set, logs := observedSettings()
	host := &statusHost{}
	_, e := startLogs(t, cfg, set, host, nil)
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, host.statuses())

	srv.Start()
	require.Eventually(t, func() bool { return host.lastStatus() == componentstatus.StatusPermanentError },
		connectWait, 10*time.Millisecond, "the refused settings were not reported")
	assert.Equal(t, 1, logs.FilterMessageSnippet("stops connecting").Len())
	err := e.pushLogs(t.Context(), sampleLogs())
	require.ErrorIs(t, err, errNotConnected)
	require.ErrorContains(t, err, "cluster support disabled")
	assert.False(t, consumererror.IsPermanent(err))
}
