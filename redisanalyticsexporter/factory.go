package redisanalyticsexporter

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

const (
	signalLogs   = "logs"
	signalTraces = "traces"
)

// NewFactory returns the factory of the redis_analytics exporter.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(metadata.Type, createDefaultConfig,
		exporter.WithLogs(createLogs, metadata.LogsStability),
		exporter.WithTraces(createTraces, metadata.TracesStability))
}

func createDefaultConfig() component.Config {
	return &Config{
		TimeoutConfig:       exporterhelper.NewDefaultTimeoutConfig(),
		QueueConfig:         configoptional.Some(defaultQueueConfig()),
		RetryConfig:         defaultRetryConfig(),
		Redis:               redisconn.NewDefaultClientConfig(),
		KeyPrefix:           protocol.DefaultPrefix,
		TTL:                 defaultTTL,
		DedupWindow:         defaultDedupWindow,
		EventNameAttributes: defaultEventNameAttributes(),
		UserIDAttributes:    defaultUserIDAttributes(),
		RecordIDAttributes:  defaultRecordIDAttributes(),
		CountSpans:          true,
		CountSpanEvents:     true,
		CardinalityLimits: CardinalityLimits{
			EventTypesPerDay:        defaultEventTypesPerDay,
			ValuesPerPropertyPerDay: defaultValuesPerProperty,
		},
		MaxEventAge:  defaultMaxEventAge,
		MaxClockSkew: defaultMaxClockSkew,
	}
}

const (
	// defaultNumConsumers is how many pushes may wait for the committer at
	// once: every one of them can join the next group (committer.go), so it
	// is sized for concurrent clients, not for Redis connections.
	defaultNumConsumers = 64
	// Retry defaults: a client waits for its request while it is retried,
	// so the first retry comes soon and the whole stays below an OTLP
	// client's own timeout plus its retries.
	defaultRetryInitialInterval = 100 * time.Millisecond
	defaultRetryMaxInterval     = 5 * time.Second
	defaultRetryMaxElapsedTime  = 30 * time.Second
)

// defaultQueueConfig acknowledges a request once its counts are in Redis
// (wait_for_result) and leaves batching to the committer: exporterhelper's
// batcher would hold each request until a batch fills or flush_timeout
// passes, and the client waits all that time.
func defaultQueueConfig() exporterhelper.QueueBatchConfig {
	q := exporterhelper.NewDefaultQueueConfig()
	q.WaitForResult = true
	q.Sizer = exporterhelper.RequestSizerTypeRequests
	q.NumConsumers = defaultNumConsumers
	q.BlockOnOverflow = true
	// Off unless the config has a batch section (then with its defaults),
	// whatever the queueBatchEnabled feature gate says.
	q.Batch = configoptional.Default(exporterhelper.NewDefaultBatchConfig())
	return q
}

func defaultRetryConfig() configretry.BackOffConfig {
	r := configretry.NewDefaultBackOffConfig()
	r.InitialInterval = defaultRetryInitialInterval
	r.MaxInterval = defaultRetryMaxInterval
	r.MaxElapsedTime = defaultRetryMaxElapsedTime
	return r
}

func createLogs(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	c := cfg.(*Config)
	e, err := newRedisAnalyticsExporter(c, set, signalLogs)
	if err != nil {
		return nil, err
	}
	return xexporterhelper.NewLogsRequest(ctx, set, e.convertLogs, e.push, e.helperOptions()...)
}

func createTraces(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	c := cfg.(*Config)
	e, err := newRedisAnalyticsExporter(c, set, signalTraces)
	if err != nil {
		return nil, err
	}
	return xexporterhelper.NewTracesRequest(ctx, set, e.convertTraces, e.push, e.helperOptions()...)
}

// helperOptions wires the exporter into exporterhelper, which owns the
// timeout, the retries and the sending queue.
func (e *redisAnalyticsExporter) helperOptions() []exporterhelper.Option {
	return []exporterhelper.Option{
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
		exporterhelper.WithCapabilities(consumer.Capabilities{MutatesData: e.cfg.ReleaseRecords}),
		exporterhelper.WithTimeout(e.cfg.TimeoutConfig),
		exporterhelper.WithRetry(e.cfg.RetryConfig),
		// The queue holds countsRequests (request.go); a persistent queue
		// stores them with encoding.go's format.
		xexporterhelper.WithQueueBatch(e.cfg.QueueConfig, xexporterhelper.QueueBatchSettings{Encoding: countsEncoding{}}),
	}
}
