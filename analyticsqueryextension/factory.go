package analyticsqueryextension

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/metadata"
)

// NewFactory returns the factory of the analytics_query extension.
func NewFactory() extension.Factory {
	return extension.NewFactory(metadata.Type, createDefaultConfig, createExtension, metadata.ExtensionStability)
}

func createExtension(_ context.Context, set extension.Settings, cfg component.Config) (extension.Extension, error) {
	return newQueryExtension(cfg.(*Config), set), nil
}
