package analyticsqueryextension

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	t.Run("defaults", func(t *testing.T) {
		cfg := NewFactory().CreateDefaultConfig().(*Config)
		sub, err := cm.Sub(component.NewID(metadata.Type).String())
		require.NoError(t, err)
		require.NoError(t, sub.Unmarshal(cfg))
		require.NoError(t, confmap.Validate(cfg))
		assert.Equal(t, "127.0.0.1:8080", cfg.ServerConfig.NetAddr.Endpoint)
		assert.Equal(t, component.MustNewID("pg_flush"), cfg.Flusher)
		assert.Equal(t, 10_000, cfg.MaxLimit)
		assert.Equal(t, 100_000, cfg.MaxCells)
		assert.Equal(t, 10*time.Second, cfg.QueryTimeout)
		assert.False(t, cfg.ServerConfig.Auth.HasValue())
	})
	t.Run("custom", func(t *testing.T) {
		cfg := NewFactory().CreateDefaultConfig().(*Config)
		sub, err := cm.Sub(component.NewIDWithName(metadata.Type, "custom").String())
		require.NoError(t, err)
		require.NoError(t, sub.Unmarshal(cfg))
		require.NoError(t, confmap.Validate(cfg))
		assert.Equal(t, "127.0.0.1:9090", cfg.ServerConfig.NetAddr.Endpoint)
		assert.Equal(t, component.MustNewIDWithName("pg_flush", "main"), cfg.Flusher)
		assert.Equal(t, 500, cfg.MaxLimit)
		assert.Equal(t, 5000, cfg.MaxCells)
		assert.Equal(t, 3*time.Second, cfg.QueryTimeout)
		require.True(t, cfg.ServerConfig.Auth.HasValue())
		assert.Equal(t, component.MustNewID("bearertokenauth"), cfg.ServerConfig.Auth.Get().Config.AuthenticatorID)
		require.True(t, cfg.ServerConfig.CORS.HasValue())
	})
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		errMsg string
	}{
		{"no endpoint", func(c *Config) { c.ServerConfig.NetAddr.Endpoint = "" }, `"endpoint" must be set`},
		{"no flusher", func(c *Config) { c.Flusher = component.ID{} }, `"flusher" must name`},
		{"max_limit zero", func(c *Config) { c.MaxLimit = 0 }, `"max_limit" must be positive`},
		{"max_limit above max_cells", func(c *Config) { c.MaxLimit, c.MaxCells = 200, 100 }, `"max_limit" (200) must not exceed "max_cells" (100)`},
		{"max_cells zero", func(c *Config) { c.MaxCells = 0 }, `"max_cells" must be between 1 and 10000000`},
		{"max_cells huge", func(c *Config) { c.MaxCells = 20_000_000 }, `"max_cells" must be between`},
		{"no query_timeout", func(c *Config) { c.QueryTimeout = 0 }, `"query_timeout" must be positive and at most 5m0s`},
		{"long query_timeout", func(c *Config) { c.QueryTimeout = time.Hour }, `"query_timeout" must be positive and at most 5m0s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := createDefaultConfig().(*Config)
			tt.mutate(cfg)
			assert.ErrorContains(t, confmap.Validate(cfg), tt.errMsg)
		})
	}
	require.NoError(t, confmap.Validate(createDefaultConfig()))
}
