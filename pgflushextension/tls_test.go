package pgflushextension

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

// TestFlushOverTLS: a flusher that reads Redis over TLS with a client
// certificate and writes to a PostgreSQL that takes TLS connections only
// (sslmode=verify-full) moves every count exactly once.
func TestFlushOverTLS(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pki := testservers.NewTestPKI(t)
	rds := testservers.StartRedisTLS(t, pki) // clients need a certificate
	pg := testservers.StartPostgresTLS(t, pki)
	dsn := pg.FreshDatabase(t)
	require.Contains(t, dsn, "sslmode=verify-full")
	env := newTestEnvWith(t, rds.Client(t), "tls", rds.TLSAddr, dsn)
	cfg := env.config()
	cfg.Redis.TLS = configtls.NewDefaultClientConfig()
	cfg.Redis.TLS.CAFile, cfg.Redis.TLS.CertFile, cfg.Redis.TLS.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
	require.NoError(t, cfg.Validate())
	f := env.start(cfg)

	env.flushAwkwardExactly(ctx, f)
}

// TestStartFailsWithoutTLS: against servers that require TLS, a flusher
// configured without it does not start, and says which server refused.
func TestStartFailsWithoutTLS(t *testing.T) {
	t.Parallel()
	pki := testservers.NewTestPKI(t)
	rds := testservers.StartRedisTLS(t, pki)
	pg := testservers.StartPostgresTLS(t, pki)
	tlsDSN := pg.FreshDatabase(t)
	base, _, _ := strings.Cut(tlsDSN, "?")
	plainDSN := base + "?sslmode=disable"
	withCert := configtls.NewDefaultClientConfig()
	withCert.CAFile, withCert.CertFile, withCert.KeyFile = pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile
	for _, tt := range []struct {
		name     string
		dsn      string
		redisTLS configtls.ClientConfig
		wantErr  []string
	}{
		{
			name: "plain text to PostgreSQL", dsn: plainDSN, redisTLS: withCert,
			wantErr: []string{"pg_flush: postgres ping 127.0.0.1:", "no encryption"},
		},
		{
			name: "plain text to Redis's TLS port", dsn: tlsDSN, redisTLS: configtls.NewDefaultClientConfig(),
			wantErr: []string{"pg_flush: redis ping " + rds.TLSAddr},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := createDefaultConfig().(*Config)
			cfg.Redis.Endpoint, cfg.Redis.TLS = rds.TLSAddr, tt.redisTLS
			cfg.Redis.TLS.Insecure = tt.redisTLS.CAFile == ""
			cfg.KeyPrefix, cfg.DSN = "tls", configopaque.String(tt.dsn)
			require.NoError(t, cfg.Validate())
			f, err := newFlusher(cfg, extensiontest.NewNopSettings(metadata.Type))
			require.NoError(t, err)
			err = f.Start(context.Background(), componenttest.NewNopHost())
			for _, want := range tt.wantErr {
				require.ErrorContains(t, err, want)
			}
			require.NoError(t, f.Shutdown(context.Background()))
		})
	}
}
