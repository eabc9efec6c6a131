package redisconn

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	def := NewDefaultClientConfig()
	require.NoError(t, def.Validate())
	assert.Equal(t, DefaultEndpoint, def.Endpoint)
	assert.True(t, def.TLS.Insecure)

	bad := NewDefaultClientConfig()
	bad.Endpoint, bad.DB, bad.PoolSize = "", -1, -2
	err := bad.Validate()
	require.Error(t, err)
	for _, want := range []string{`"endpoint" must be set`, `"db" must not be negative`, `"pool_size" must not be negative`} {
		assert.ErrorContains(t, err, want)
	}
}

func TestNewClientPings(t *testing.T) {
	t.Parallel()
	cfg := NewDefaultClientConfig()
	cfg.Endpoint = testservers.RedisEndpoint()
	client, err := cfg.NewClient(t.Context())
	require.NoError(t, err)
	require.NoError(t, client.Close())

	down := NewDefaultClientConfig()
	down.Endpoint = "127.0.0.1:" + strconv.Itoa(testservers.FreePort(t))
	_, err = down.NewClient(t.Context())
	require.ErrorContains(t, err, "redis ping "+down.Endpoint)

	badTLS := NewDefaultClientConfig()
	badTLS.TLS.Insecure = false
	badTLS.TLS.CAFile = "/nonexistent/ca.pem"
	_, err = badTLS.NewClient(t.Context())
	require.ErrorContains(t, err, "redis tls")
}
