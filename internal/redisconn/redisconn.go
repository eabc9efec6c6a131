// Package redisconn holds the Redis connection settings shared by the
// redis_analytics exporter and the pg_flush extension, so both are configured
// the same way and build their go-redis clients the same way.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
)

// DefaultEndpoint is the Redis address used when none is configured.
const DefaultEndpoint = "127.0.0.1:6379"

// DefaultWaitTimeout bounds a WAIT for replicas when none is configured.
const DefaultWaitTimeout = time.Second

// ClientConfig is the Redis connection part of a component's config.
type ClientConfig struct {
	// Endpoint is the Redis address as host:port. default: 127.0.0.1:6379
	Endpoint string `mapstructure:"endpoint"`
	// Username for Redis ACL authentication (Redis 6+). default: none
	Username string `mapstructure:"username"`
	// Password for AUTH. default: none
	Password configopaque.String `mapstructure:"password"`
	// DB is the logical database number. default: 0
	DB int `mapstructure:"db"`
	// TLS settings; plain TCP when tls::insecure is true. default: insecure
	TLS configtls.ClientConfig `mapstructure:"tls"`
	// PoolSize is the maximum number of connections (per node in a cluster);
	// 0 keeps go-redis' default of 10 per GOMAXPROCS. default: 0
	PoolSize int `mapstructure:"pool_size"`
	// Cluster makes Endpoint a seed node of a Redis Cluster: the client
	// discovers the other nodes and follows MOVED and ASK redirections. The
	// components' key_prefix must then hold a hash tag. default: false
	Cluster bool `mapstructure:"cluster"`
	// Sentinel finds the master through Redis Sentinel, and follows it
	// across failovers; Endpoint is then not used. default: off
	Sentinel SentinelConfig `mapstructure:"sentinel"`
	// WaitReplicas makes every write of the component (the exporter's
	// counter script, the flusher's STAGE) count as done only once this many
	// replicas acknowledged it: the script is followed by WAIT on the same
	// connection, in the same round trip. Redis replication is asynchronous,
	// so without it a failover to a replica can lose the last acknowledged
	// writes. 0 (no wait) fits a Redis without replicas. default: 0
	WaitReplicas int `mapstructure:"wait_replicas"`
	// WaitTimeout bounds each WAIT. A write that fewer than wait_replicas
	// replicas acknowledged within it fails with a retryable error (it is
	// applied on the master; its retry is a no-op that waits again). Keep it
	// well below the component's own timeout. default: 1s
	WaitTimeout time.Duration `mapstructure:"wait_timeout"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// SentinelConfig locates the master through Redis Sentinel.
type SentinelConfig struct {
	// MasterName is the name under which the sentinels monitor the master
	// (`sentinel monitor <name> …`); setting it turns Sentinel on.
	// default: none
	MasterName string `mapstructure:"master_name"`
	// Endpoints are the sentinels' host:port addresses; the client asks
	// them for the master and subscribes to their failover announcements.
	Endpoints []string `mapstructure:"endpoints"`
	// Username and Password authenticate to the sentinels, when they
	// require it (the master's are the client's own username and password).
	Username string              `mapstructure:"username"`
	Password configopaque.String `mapstructure:"password"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// enabled reports whether Sentinel is configured.
func (s *SentinelConfig) enabled() bool { return s.MasterName != "" }

// NewDefaultClientConfig returns the defaults: a plain-TCP local Redis.
func NewDefaultClientConfig() ClientConfig {
	tls := configtls.NewDefaultClientConfig()
	tls.Insecure = true
	return ClientConfig{Endpoint: DefaultEndpoint, TLS: tls, WaitTimeout: DefaultWaitTimeout}
}

var _ confmap.Validator = (*ClientConfig)(nil)

// Validate checks values only; connectivity is checked when the component starts.
func (c *ClientConfig) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New(`"endpoint" must be set`))
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf(`"db" must not be negative, got %d`, c.DB))
	}
	if c.PoolSize < 0 {
		errs = append(errs, fmt.Errorf(`"pool_size" must not be negative, got %d`, c.PoolSize))
	}
	if c.Sentinel.enabled() {
		if len(c.Sentinel.Endpoints) == 0 {
			errs = append(errs, errors.New(`"sentinel::endpoints" must list at least one sentinel with "sentinel::master_name"`))
		}
		for i, ep := range c.Sentinel.Endpoints {
			if ep == "" {
				errs = append(errs, fmt.Errorf(`"sentinel::endpoints[%d]" must not be empty`, i))
			}
		}
		if c.Cluster {
			errs = append(errs, errors.New(`"sentinel" and "cluster" exclude each other: a Redis Cluster fails over by itself`))
		}
	}
	if c.WaitReplicas < 0 {
		errs = append(errs, fmt.Errorf(`"wait_replicas" must not be negative, got %d`, c.WaitReplicas))
	}
	if c.WaitReplicas > 0 && c.WaitTimeout < time.Millisecond {
		// WAIT with a timeout of 0 blocks until enough replicas answer, forever.
		errs = append(errs, fmt.Errorf(`"wait_timeout" must be at least 1ms with "wait_replicas", got %s`, c.WaitTimeout))
	}
	if c.Cluster && c.DB != 0 {
		errs = append(errs, fmt.Errorf(`"db" must be 0 with "cluster" (a Redis Cluster has only database 0), got %d`, c.DB))
	}
	return errors.Join(errs...)
}

// NewClient builds a client from c (a cluster client with Cluster) and
// checks with PING that Redis answers, so a wrong endpoint or password fails
// Start with a clear error instead of the first write. Unrecoverable tells
// the errors that a later attempt would meet again (a rejected password, a
// TLS or cluster misconfiguration) from those of a server that is down.
func (c *ClientConfig) NewClient(ctx context.Context) (redis.UniversalClient, error) {
	tlsCfg, err := c.TLS.LoadTLSConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis tls: %w", &settingError{err})
	}
	addrs := []string{c.Endpoint}
	if c.Sentinel.enabled() {
		addrs = c.Sentinel.Endpoints
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:            addrs,
		MasterName:       c.Sentinel.MasterName,
		SentinelUsername: c.Sentinel.Username,
		SentinelPassword: string(c.Sentinel.Password),
		IsClusterMode:    c.Cluster,
		Username:         c.Username,
		Password:         string(c.Password),
		DB:               c.DB,
		TLSConfig:        tlsCfg,
		PoolSize:         c.PoolSize,
		ReadTimeout:      c.readTimeout(),
		// The component's own context carries the deadline (exporterhelper's
		// timeout, the flush timeout): let it bound each command.
		ContextTimeoutEnabled: true,
		// Keep connection setup plain: no CLIENT SETINFO round trip, which
		// older or proxied servers reject.
		DisableIdentity: true,
	})
	// In a cluster, the first command loads the slot map from the seed: a
	// node without cluster support fails here.
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		err = fmt.Errorf("redis ping %s: %w", c.Describe(), err)
		return nil, checkTLSMismatch(ctx, addrs[0], tlsCfg != nil, err)
	}
	if !c.Cluster && isClusterNode(ctx, client) {
		_ = client.Close()
		return nil, &settingError{fmt.Errorf(`redis %s is a Redis Cluster node: set "cluster: true" and a key_prefix with a hash tag such as "{analytics}"`, c.Describe())}
	}
	return client, nil
}

// readTimeout is go-redis' default (3s), raised so that a WAIT of
// wait_timeout is not cut short by the read deadline of its pipeline.
func (c *ClientConfig) readTimeout() time.Duration {
	const goRedisDefault = 3 * time.Second
	if c.WaitReplicas == 0 {
		return goRedisDefault
	}
	return max(goRedisDefault, c.WaitTimeout+time.Second)
}

// isClusterNode reports whether INFO says the server runs in cluster mode;
// a single-node client would then get MOVED for most keys. A server that
// refuses INFO (a proxy, a renamed command) is taken at its word.
func isClusterNode(ctx context.Context, client redis.UniversalClient) bool {
	info, err := client.Info(ctx, "cluster").Result()
	return err == nil && strings.Contains(info, "cluster_enabled:1")
}

// Describe names the deployment, for errors and logs: the endpoint and db,
// the cluster seed, or the Sentinel master and its sentinels.
func (c *ClientConfig) Describe() string {
	if c.Sentinel.enabled() {
		return fmt.Sprintf("master %q via sentinels %s (db %d)", c.Sentinel.MasterName, strings.Join(c.Sentinel.Endpoints, ","), c.DB)
	}
	if c.Cluster {
		return "cluster seed " + c.Endpoint
	}
	return fmt.Sprintf("%s (db %d)", c.Endpoint, c.DB)
}
