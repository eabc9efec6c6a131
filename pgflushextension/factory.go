package pgflushextension

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"

	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

// NewFactory returns the factory of the pg_flush extension.
func NewFactory() extension.Factory {
	return extension.NewFactory(metadata.Type, createDefaultConfig, createExtension, metadata.ExtensionStability)
}

func createExtension(_ context.Context, set extension.Settings, cfg component.Config) (extension.Extension, error) {
	f, err := newFlusher(cfg.(*Config), set)
	if err != nil {
		return nil, err
	}
	f.tickAtStart = true
	return f, nil
}
