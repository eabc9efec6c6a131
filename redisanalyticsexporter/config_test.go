package redisanalyticsexporter

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

func TestCreateDefaultConfig(t *testing.T) {
	t.Parallel()
	cfg, ok := NewFactory().CreateDefaultConfig().(*Config)
	require.True(t, ok)
	assert.Equal(t, exporterhelper.NewDefaultTimeoutConfig(), cfg.TimeoutConfig)
	// The defaults are the durable, low-latency mode: acknowledged after
	// Redis, no linger (the committer batches), requests never too large.
	require.True(t, cfg.QueueConfig.HasValue())
	queue := cfg.QueueConfig.Get()
	assert.True(t, queue.WaitForResult)
	assert.False(t, queue.Batch.HasValue(), "no exporterhelper batching: it lingers while the client waits")
	assert.Equal(t, exporterhelper.RequestSizerTypeRequests, queue.Sizer)
	assert.Empty(t, queue.StorageID)
	assert.Equal(t, 100*time.Millisecond, cfg.RetryConfig.InitialInterval)
	assert.Equal(t, 30*time.Second, cfg.RetryConfig.MaxElapsedTime)
	assert.True(t, cfg.RetryConfig.Enabled)
	assert.Equal(t, []string{"log.record.uid"}, cfg.RecordIDAttributes)
	assert.True(t, cfg.CountSpans)
	assert.True(t, cfg.CountSpanEvents)
	assert.Equal(t, redisconn.NewDefaultClientConfig(), cfg.Redis)
	assert.Equal(t, protocol.DefaultPrefix, cfg.KeyPrefix)
	assert.Equal(t, 7*24*time.Hour, cfg.TTL)
	assert.Equal(t, 10*time.Minute, cfg.DedupWindow)
	assert.False(t, cfg.ReleaseRecords)
	assert.Equal(t, []string{"event.name"}, cfg.EventNameAttributes)
	assert.Equal(t, []string{"user.id", "enduser.id"}, cfg.UserIDAttributes)
	assert.Empty(t, cfg.EventTypes)
	require.NoError(t, confmap.Validate(cfg))

	// Defaults are fresh per config: changing one must not change the next.
	cfg.UserIDAttributes[0] = "changed"
	assert.Equal(t, []string{"user.id", "enduser.id"}, createDefaultConfig().(*Config).UserIDAttributes)
}

func TestUnmarshalConfig(t *testing.T) {
	t.Parallel()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	full := createDefaultConfig().(*Config)
	full.Redis.Endpoint = "redis.internal:6380"
	full.Redis.Username = "analytics"
	full.Redis.Password = configopaque.String("s3cret")
	full.Redis.DB = 2
	full.Redis.PoolSize = 20
	full.Redis.TLS.Insecure = false
	full.Redis.TLS.CAFile = "/etc/ssl/redis-ca.pem"
	full.KeyPrefix = "{shop}"
	full.TTL = 48 * time.Hour
	full.DedupWindow = 15 * time.Minute
	full.ReleaseRecords = true
	full.EventNameAttributes = []string{"event.name", "analytics.event"}
	full.UserIDAttributes = []string{"app.user_id"}
	full.EventTypes = []string{"page_view", "signup"}
	full.CountSpans = false
	full.TimeoutConfig.Timeout = 3 * time.Second
	full.RetryConfig.InitialInterval = time.Second
	full.RetryConfig.MaxInterval = 10 * time.Second
	full.RetryConfig.MaxElapsedTime = 2 * time.Minute
	queue := defaultQueueConfig()
	queue.NumConsumers = 4
	queue.QueueSize = 500
	batch := exporterhelper.NewDefaultBatchConfig()
	batch.FlushTimeout = 500 * time.Millisecond
	batch.MinSize = 4096
	queue.Batch = configoptional.Some(batch)
	full.QueueConfig = configoptional.Some(queue)

	cluster := createDefaultConfig().(*Config)
	cluster.Redis.Endpoint = "redis-cluster.internal:6379"
	cluster.Redis.Cluster = true
	cluster.KeyPrefix = "{analytics}"

	tests := []struct {
		id       component.ID
		expected *Config
	}{
		{id: component.NewID(metadata.Type), expected: createDefaultConfig().(*Config)},
		{id: component.NewIDWithName(metadata.Type, "full"), expected: full},
		{id: component.NewIDWithName(metadata.Type, "cluster"), expected: cluster},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			t.Parallel()
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			require.NoError(t, confmap.Validate(cfg))
			assert.Equal(t, tt.expected, cfg)
		})
	}
}

func TestInvalidConfigs(t *testing.T) {
	t.Parallel()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "invalid_configs.yaml"))
	require.NoError(t, err)
	tests := []struct {
		name    string
		wantErr []string
	}{
		{"empty_endpoint", []string{`"endpoint" must be set`}},
		{"negative_db", []string{`"db" must not be negative`}},
		{"negative_pool_size", []string{`"pool_size" must not be negative`}},
		{"empty_key_prefix", []string{`"key_prefix": prefix must not be empty`}},
		{"key_prefix_with_space", []string{`"key_prefix": prefix "my app" must not contain spaces`}},
		{"zero_ttl", []string{`"ttl" must be at least 1s, got 0s`}},
		{"sub_second_ttl", []string{`"ttl" must be at least 1s, got 500ms`}},
		{"short_dedup_window", []string{`"dedup_window" must be at least 1m0s, got 30s`}},
		{"empty_event_name_attribute", []string{`"event_name_attributes[1]" must not be empty`}},
		{"duplicate_user_id_attribute", []string{`"user_id_attributes[1]" duplicates "user_id_attributes[0]" ("user.id")`}},
		{"empty_event_type", []string{`"event_types[1]" must not be empty`}},
		{"duplicate_event_type", []string{`"event_types[2]" duplicates "event_types[0]" ("page_view")`}},
		{"event_type_with_nul", []string{`"event_types[0]" must be valid UTF-8 without NUL bytes`}},
		{"bad_queue", []string{"sending_queue", "`queue_size` must be positive"}},
		{"negative_timeout", []string{"timeout"}},
		{"cluster_prefix_without_hash_tag", []string{`"key_prefix" "analytics" must hold a hash tag such as "{analytics}" with "cluster"`}},
		{"cluster_with_db", []string{`"db" must be 0 with "cluster"`}},
		{"negative_wait_replicas", []string{`"wait_replicas" must not be negative`}},
		{"wait_forever", []string{`"wait_timeout" must be at least 1ms with "wait_replicas"`}},
		{"wait_longer_than_timeout", []string{`"wait_timeout" (5s) must be below "timeout" (5s)`}},
		{"several_errors", []string{`"key_prefix"`, `"ttl"`}},
		{"count_nothing", []string{`"count_spans" and "count_span_events" are both false`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.name)
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			err = confmap.Validate(cfg)
			require.Error(t, err)
			for _, want := range tt.wantErr {
				assert.ErrorContains(t, err, want)
			}
		})
	}
}

func TestBatchMarkerTTL(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	// default: 30s max elapsed + 2×5s timeout + 1 minute
	assert.Equal(t, 100*time.Second, cfg.batchMarkerTTL())

	cfg.RetryConfig.Enabled = false
	assert.Equal(t, 70*time.Second, cfg.batchMarkerTTL())

	cfg.TimeoutConfig.Timeout = 0
	assert.Equal(t, time.Minute, cfg.batchMarkerTTL(), "sane minimum without retries and timeout")

	cfg.RetryConfig.Enabled = true
	cfg.RetryConfig.MaxElapsedTime = 0 // retry forever
	// one hour of outage + the longest backoff (1.5 × 5s max_interval) + 1 minute
	assert.Equal(t, time.Hour+7500*time.Millisecond+time.Minute, cfg.batchMarkerTTL())

	// Durability mode (b), testdata/bench/persistent-queue.yaml: the retry
	// after a one-hour outage (at most 1.5 × 5s after Redis is back, plus two
	// 5s timeouts) still finds the marker.
	cfg.TimeoutConfig.Timeout = 5 * time.Second
	cfg.RetryConfig.InitialInterval = 100 * time.Millisecond
	cfg.RetryConfig.MaxInterval = 5 * time.Second
	assert.Equal(t, time.Hour+7500*time.Millisecond+10*time.Second+time.Minute, cfg.batchMarkerTTL())

	cfg.RetryConfig.InitialInterval = time.Minute // longer than max_interval: the first delay
	assert.Equal(t, time.Hour+90*time.Second+10*time.Second+time.Minute, cfg.batchMarkerTTL())
}

// TestSampleExporterConfig reads the sample config's exporter settings as the
// queued push benchmarks do, so that a new ${env:...} setting in the file
// cannot break `make bench` unnoticed.
func TestSampleExporterConfig(t *testing.T) {
	t.Parallel()
	cfg := sampleExporterConfig(t)
	require.NoError(t, cfg.Validate())
	assert.True(t, cfg.ReleaseRecords)
	assert.Zero(t, cfg.Redis.WaitReplicas)
	assert.Empty(t, cfg.Redis.Sentinel.MasterName)
	assert.Empty(t, cfg.Redis.Username)
	assert.Empty(t, string(cfg.Redis.Password))
}
