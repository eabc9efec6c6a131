package redisconn

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configtls"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestNewClientTLS connects to the TLS port of real redis-servers: the
// server's certificate is verified against the configured CA, a client
// certificate is presented when configured, and every failure is an error
// that names the cause.
func TestNewClientTLS(t *testing.T) {
	t.Parallel()
	pki := testservers.NewTestPKI(t)
	otherPKI := testservers.NewTestPKI(t)
	// redis-server's default: clients of the TLS port need a certificate.
	mutual := testservers.StartRedisTLS(t, pki)
	serverOnly := testservers.StartRedisTLS(t, pki, "--tls-auth-clients", "no")

	verified := tlsSettings(pki.CAFile, "", "")
	withCert := tlsSettings(pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile)
	otherCA := tlsSettings(otherPKI.CAFile, "", "")
	otherName := tlsSettings(pki.CAFile, "", "")
	otherName.ServerName = "redis.example.com"
	plain := NewDefaultClientConfig().TLS
	for _, tt := range []struct {
		name    string
		addr    string
		tls     configtls.ClientConfig
		wantErr string
	}{
		{name: "server certificate verified", addr: serverOnly.TLSAddr, tls: verified},
		{name: "client certificate", addr: mutual.TLSAddr, tls: withCert},
		{name: "client certificate missing", addr: mutual.TLSAddr, tls: verified, wantErr: "redis ping " + mutual.TLSAddr},
		{name: "server certificate of an unknown CA", addr: serverOnly.TLSAddr, tls: otherCA, wantErr: "certificate signed by unknown authority"},
		{name: "server name mismatch", addr: serverOnly.TLSAddr, tls: otherName, wantErr: "certificate is valid for localhost, not redis.example.com"},
		{name: "plain text to the TLS port", addr: serverOnly.TLSAddr, tls: plain, wantErr: "redis ping " + serverOnly.TLSAddr},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cfg := NewDefaultClientConfig()
			cfg.Endpoint, cfg.TLS = tt.addr, tt.tls
			require.NoError(t, cfg.Validate())
			client, err := cfg.NewClient(ctx)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			defer client.Close()
			key := testservers.UniqueName("tls")
			require.NoError(t, client.Set(ctx, key, "1", 0).Err())
			assert.Equal(t, "1", client.Get(ctx, key).Val())
		})
	}
}

// TestNewClientTLSThroughSentinel runs Sentinel over TLS: the client asks the
// sentinel's TLS port for the master and reaches the master's TLS port, with
// the same settings, and keeps counting after a failover to the replica.
func TestNewClientTLSThroughSentinel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pki := testservers.NewTestPKI(t)
	master := testservers.StartRedisTLS(t, pki)
	replica := testservers.StartRedisReplicaTLS(t, master, pki)
	sentinel := testservers.StartRedisSentinelTLS(t, master, "m", 1, pki)

	cfg := NewDefaultClientConfig()
	cfg.Endpoint = "127.0.0.1:1" // not used with a sentinel
	cfg.Sentinel.MasterName, cfg.Sentinel.Endpoints = "m", []string{sentinel.TLSAddr}
	cfg.TLS = tlsSettings(pki.CAFile, pki.ClientCertFile, pki.ClientKeyFile)
	require.NoError(t, cfg.Validate())
	client, err := cfg.NewClient(ctx)
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.IncrBy(ctx, "tls-sentinel", 1).Err())
	assert.Equal(t, "1", master.Client(t).Get(ctx, "tls-sentinel").Val())

	// After a failover the client writes to the promoted replica's TLS port.
	master.WaitReplicasAcked(t)
	sentinelClient := sentinel.Client(t)
	require.NoError(t, sentinelClient.Failover(ctx, "m").Err())
	promoted := replica.Client(t)
	require.Eventually(t, func() bool {
		hostPort, err := sentinelClient.GetMasterAddrByName(ctx, "m").Result()
		return err == nil && len(hostPort) == 2 && hostPort[0]+":"+hostPort[1] == replica.TLSAddr &&
			strings.Contains(promoted.Info(ctx, "replication").Val(), "role:master")
	}, 30*time.Second, 20*time.Millisecond, "sentinel promotes %s", replica.TLSAddr)
	require.Eventually(t, func() bool {
		// A SET the demoted master refuses (READONLY) is retried; one that
		// the promoted replica holds went to its TLS port.
		return client.Set(ctx, "after-failover", "1", 0).Err() == nil &&
			promoted.Get(ctx, "after-failover").Val() == "1"
	}, 30*time.Second, 20*time.Millisecond, "the client follows the failover to %s", replica.TLSAddr)
	assert.Equal(t, "1", promoted.Get(ctx, "tls-sentinel").Val())
}

// tlsSettings returns the TLS settings a user writes in YAML: a CA, and a
// client certificate when cert is set.
func tlsSettings(ca, cert, key string) configtls.ClientConfig {
	c := configtls.NewDefaultClientConfig()
	c.CAFile, c.CertFile, c.KeyFile = ca, cert, key
	return c
}
