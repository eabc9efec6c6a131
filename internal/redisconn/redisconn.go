// Package redisconn holds the Redis connection settings shared by the
// redis_analytics exporter and the pg_flush extension, so both are configured
// the same way and build their go-redis clients the same way.
package redisconn

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
)

// DefaultEndpoint is the Redis address used when none is configured.
const DefaultEndpoint = "127.0.0.1:6379"

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
	// PoolSize is the maximum number of connections; 0 keeps go-redis' default
	// of 10 per GOMAXPROCS. default: 0
	PoolSize int `mapstructure:"pool_size"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// NewDefaultClientConfig returns the defaults: a plain-TCP local Redis.
func NewDefaultClientConfig() ClientConfig {
	tls := configtls.NewDefaultClientConfig()
	tls.Insecure = true
	return ClientConfig{Endpoint: DefaultEndpoint, TLS: tls}
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
	return errors.Join(errs...)
}

// NewClient builds a client from c and checks with PING that Redis answers,
// so a wrong endpoint or password fails Start with a clear error instead of
// the first write.
func (c *ClientConfig) NewClient(ctx context.Context) (*redis.Client, error) {
	tlsCfg, err := c.TLS.LoadTLSConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis tls: %w", err)
	}
	client := redis.NewClient(&redis.Options{
		Addr:      c.Endpoint,
		Username:  c.Username,
		Password:  string(c.Password),
		DB:        c.DB,
		TLSConfig: tlsCfg,
		PoolSize:  c.PoolSize,
		// The component's own context carries the deadline (exporterhelper's
		// timeout, the flush timeout): let it bound each command.
		ContextTimeoutEnabled: true,
		// Keep connection setup plain: no CLIENT SETINFO round trip, which
		// older or proxied servers reject.
		DisableIdentity: true,
	})
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis ping %s (db %d): %w", c.Endpoint, c.DB, err)
	}
	return client, nil
}
