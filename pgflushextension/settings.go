package pgflushextension

import "github.com/otelcol-analytics/otelcol-analytics/internal/keyschema"

var _ keyschema.Flusher = (*flusher)(nil)

// FlusherSettings lets a redis_analytics exporter in the same collector check
// its key prefix and TTL against this flusher's settings.
func (f *flusher) FlusherSettings() keyschema.FlusherSettings {
	return keyschema.FlusherSettings{KeyPrefix: f.cfg.KeyPrefix, Interval: f.cfg.Interval}
}
