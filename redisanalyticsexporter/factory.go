package redisanalyticsexporter

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/otelcol-analytics/otelcol-analytics/internal/keyschema"
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
		QueueConfig:         configoptional.Some(exporterhelper.NewDefaultQueueConfig()),
		RetryConfig:         configretry.NewDefaultBackOffConfig(),
		ClientConfig:        redisconn.NewDefaultClientConfig(),
		KeyPrefix:           keyschema.DefaultPrefix,
		TTL:                 defaultTTL,
		DedupWindow:         defaultDedupWindow,
		EventNameAttributes: defaultEventNameAttributes(),
		UserIDAttributes:    defaultUserIDAttributes(),
		RecordIDAttributes:  defaultRecordIDAttributes(),
	}
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
