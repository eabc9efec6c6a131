package redisanalyticsexporter

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exportertest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// TestPushOverTLS: the exporter counts through a Redis that takes TLS
// connections with client certificates only, verifying the server against
// the configured CA.
func TestPushOverTLS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pki := testservers.NewTestPKI(t)
	srv := testservers.StartRedisTLS(t, pki)
	const prefix = "tls"
	cfg := testConfig(srv.TLSAddr, prefix)
	cfg.Redis.TLS.Insecure = false
	cfg.Redis.TLS.CAFile = pki.CAFile
	cfg.Redis.TLS.CertFile, cfg.Redis.TLS.KeyFile = pki.ClientCertFile, pki.ClientKeyFile
	require.NoError(t, cfg.Validate())
	_, e := startLogs(t, cfg, exportertest.NewNopSettings(metadata.Type), componenttest.NewNopHost(), nil)
	require.NoError(t, e.pushLogs(ctx, sampleLogs()))
	want := expectedCounters(t, prefix)
	assert.Equal(t, want, counterValues(t, srv.Client(t), keysOf(want)))
}
