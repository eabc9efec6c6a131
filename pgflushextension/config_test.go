package pgflushextension

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

func TestCreateDefaultConfig(t *testing.T) {
	t.Parallel()
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	assert.Equal(t, redisconn.NewDefaultClientConfig(), cfg.Redis)
	assert.Equal(t, "analytics", cfg.KeyPrefix)
	assert.Empty(t, cfg.DSN)
	assert.Equal(t, 5*time.Minute, cfg.Interval)
	assert.Equal(t, time.Minute, cfg.Timeout)
	assert.Equal(t, 10_000, cfg.BatchSize)
	assert.True(t, cfg.CreateSchema)
	assert.Equal(t, 168*time.Hour, cfg.CounterTTL)
	assert.Equal(t, 168*time.Hour, cfg.LedgerRetention)
	assert.Equal(t, int32(4), cfg.MaxConns)
	assert.Equal(t, 2, cfg.ApplyWorkers)
	// The only required setting is the DSN.
	require.ErrorContains(t, confmap.Validate(cfg), `"dsn" must be set`)
	cfg.DSN = "postgres://127.0.0.1/analytics"
	require.NoError(t, confmap.Validate(cfg))
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	minimal := createDefaultConfig().(*Config)
	minimal.DSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

	full := createDefaultConfig().(*Config)
	full.Redis.Endpoint = "redis.internal:6380"
	full.Redis.Username = "flusher"
	full.Redis.Password = "redis-secret"
	full.Redis.DB = 2
	full.Redis.PoolSize = 8
	full.KeyPrefix = "{analytics}"
	full.DSN = "postgres://flusher:pg-secret@db.internal:5432/analytics?sslmode=disable"
	full.Interval = time.Minute
	full.Timeout = 20 * time.Second
	full.BatchSize = 5000
	full.CreateSchema = false
	full.CounterTTL = 72 * time.Hour
	full.LedgerRetention = 336 * time.Hour
	full.MaxConns = 8
	full.ApplyWorkers = 3

	tests := []struct {
		id   component.ID
		want *Config
	}{
		{id: component.NewID(metadata.Type), want: minimal},
		{id: component.NewIDWithName(metadata.Type, "full"), want: full},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			t.Parallel()
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			require.NoError(t, confmap.Validate(cfg))
			assert.Equal(t, tt.want, cfg)
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{name: "missing dsn", mutate: func(c *Config) { c.DSN = "" }, want: []string{`"dsn" must be set`}},
		{name: "empty prefix", mutate: func(c *Config) { c.KeyPrefix = "" }, want: []string{`"key_prefix": prefix must not be empty`}},
		{name: "prefix with space", mutate: func(c *Config) { c.KeyPrefix = "a b" }, want: []string{`"key_prefix"`, "spaces or control bytes"}},
		{name: "zero interval", mutate: func(c *Config) { c.Interval = 0 }, want: []string{`"interval" must be positive`}},
		{name: "negative timeout", mutate: func(c *Config) { c.Timeout = -time.Second }, want: []string{`"timeout" must be positive`}},
		{name: "wait longer than timeout", mutate: func(c *Config) { c.Redis.WaitReplicas, c.Redis.WaitTimeout = 1, time.Minute }, want: []string{`"redis::wait_timeout" (1m0s) must be below "timeout" (1m0s)`}},
		{name: "batch size zero", mutate: func(c *Config) { c.BatchSize = 0 }, want: []string{`"batch_size" must be between 1 and 100000, got 0`}},
		{name: "batch size too big", mutate: func(c *Config) { c.BatchSize = 100_001 }, want: []string{`"batch_size" must be between 1 and 100000, got 100001`}},
		{name: "negative counter ttl", mutate: func(c *Config) { c.CounterTTL = -time.Hour }, want: []string{`"counter_ttl" must not be negative`}},
		{name: "max conns zero", mutate: func(c *Config) { c.MaxConns = 0 }, want: []string{`"max_conns" must be positive, got 0`}},
		{name: "apply workers zero", mutate: func(c *Config) { c.ApplyWorkers = 0 }, want: []string{`"apply_workers" must be between 1 and "max_conns" (4), got 0`}},
		{name: "apply workers above max conns", mutate: func(c *Config) { c.ApplyWorkers = 5 }, want: []string{`"apply_workers" must be between 1 and "max_conns" (4), got 5`}},
		{
			name:   "ledger retention too short",
			mutate: func(c *Config) { c.LedgerRetention = 30 * time.Minute },
			want:   []string{`"ledger_retention" must be at least 10 times "interval" + "timeout" (1h0m0s), got 30m0s`},
		},
		{
			name:   "ledger retention zero with bad interval",
			mutate: func(c *Config) { c.Interval, c.LedgerRetention = 0, 0 },
			want:   []string{`"interval" must be positive`, `"ledger_retention" must be positive`},
		},
		{name: "nested redis endpoint", mutate: func(c *Config) { c.Redis.Endpoint = "" }, want: []string{`redis: "endpoint" must be set`}},
		{name: "nested redis db", mutate: func(c *Config) { c.Redis.DB = -1 }, want: []string{`redis: "db" must not be negative`}},
		{
			name:   "cluster prefix without hash tag",
			mutate: func(c *Config) { c.Redis.Cluster = true },
			want:   []string{`"key_prefix" "analytics" must hold a hash tag such as "{analytics}" with "cluster"`},
		},
		{name: "cluster with db", mutate: func(c *Config) { c.Redis.Cluster, c.KeyPrefix, c.Redis.DB = true, "{analytics}", 3 }, want: []string{`redis: "db" must be 0 with "cluster"`}},
		{
			name: "every error at once",
			mutate: func(c *Config) {
				c.DSN, c.BatchSize, c.MaxConns = "", -1, -1
			},
			want: []string{`"dsn" must be set`, `"batch_size"`, `"max_conns"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := createDefaultConfig().(*Config)
			cfg.DSN = "postgres://127.0.0.1/analytics"
			tt.mutate(cfg)
			err := confmap.Validate(cfg)
			require.Error(t, err)
			for _, w := range tt.want {
				assert.ErrorContains(t, err, w)
			}
		})
	}
}

func TestConfigRedactsSecrets(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	cfg.DSN = configopaque.String("postgres://flusher:pg-secret@db.internal:5432/analytics")
	cfg.Redis.Password = "redis-secret"
	for _, format := range []string{"%v", "%+v", "%s", "%#v"} {
		out := fmt.Sprintf(format, cfg)
		assert.NotContains(t, out, "pg-secret", format)
		assert.NotContains(t, out, "redis-secret", format)
	}
	text, err := cfg.DSN.MarshalText()
	require.NoError(t, err)
	assert.Equal(t, "[REDACTED]", string(text))
}
