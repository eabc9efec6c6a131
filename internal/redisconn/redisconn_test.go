package redisconn

import (
	"strconv"
	"testing"
	"time"

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
		require.ErrorContains(t, err, want)
	}

	cluster := NewDefaultClientConfig()
	cluster.Cluster = true
	require.NoError(t, cluster.Validate())
	cluster.DB = 2
	require.ErrorContains(t, cluster.Validate(), `"db" must be 0 with "cluster"`)

	for _, tt := range []struct {
		name     string
		replicas int
		timeout  time.Duration
		sentinel SentinelConfig
		cluster  bool
		wantErr  string
	}{
		{name: "no wait", replicas: 0, timeout: 0},
		{name: "wait", replicas: 2, timeout: 500 * time.Millisecond},
		{name: "negative replicas", replicas: -1, timeout: time.Second, wantErr: `"wait_replicas" must not be negative`},
		{name: "wait forever", replicas: 1, timeout: 0, wantErr: `"wait_timeout" must be at least 1ms`},
		{name: "sub-millisecond", replicas: 1, timeout: time.Microsecond, wantErr: `"wait_timeout" must be at least 1ms`},
		{name: "sentinel", sentinel: SentinelConfig{MasterName: "m", Endpoints: []string{"h1:26379", "h2:26379"}}},
		{name: "sentinel without endpoints", sentinel: SentinelConfig{MasterName: "m"}, wantErr: `"sentinel::endpoints" must list at least one sentinel`},
		{name: "sentinel with an empty endpoint", sentinel: SentinelConfig{MasterName: "m", Endpoints: []string{"h1:26379", ""}}, wantErr: `"sentinel::endpoints[1]" must not be empty`},
		{name: "sentinel and cluster", sentinel: SentinelConfig{MasterName: "m", Endpoints: []string{"h:1"}}, cluster: true, wantErr: `"sentinel" and "cluster" exclude each other`},
		{name: "endpoints without a master name are unused", sentinel: SentinelConfig{Endpoints: []string{""}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := NewDefaultClientConfig()
			cfg.WaitReplicas, cfg.WaitTimeout = tt.replicas, tt.timeout
			cfg.Sentinel, cfg.Cluster = tt.sentinel, tt.cluster
			if tt.wantErr == "" {
				require.NoError(t, cfg.Validate())
				return
			}
			require.ErrorContains(t, cfg.Validate(), tt.wantErr)
		})
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

// TestNewClientChecksClusterMode: each mode refuses the other kind of server
// at start, with an error that says what to set.
func TestNewClientChecksClusterMode(t *testing.T) {
	t.Parallel()
	clusterNode := testservers.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-port", strconv.Itoa(testservers.FreePort(t)), "--appendonly", "no")
	standalone := NewDefaultClientConfig()
	standalone.Endpoint = clusterNode.Addr
	_, err := standalone.NewClient(t.Context())
	require.ErrorContains(t, err, `is a Redis Cluster node: set "cluster: true"`)

	cluster := NewDefaultClientConfig()
	cluster.Endpoint, cluster.Cluster = testservers.RedisEndpoint(), true
	_, err = cluster.NewClient(t.Context())
	require.ErrorContains(t, err, "redis ping cluster seed "+cluster.Endpoint)
	assert.ErrorContains(t, err, "cluster support disabled")
}
