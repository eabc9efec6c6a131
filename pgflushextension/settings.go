package pgflushextension

import "github.com/otelcol-analytics/otelcol-analytics/internal/protocol"

var _ protocol.Flusher = (*flusher)(nil)

// FlusherSettings lets a redis_analytics exporter in the same collector check
// its key prefix and TTL against this flusher's settings.
func (f *flusher) FlusherSettings() protocol.FlusherSettings {
	return protocol.FlusherSettings{KeyPrefix: f.cfg.KeyPrefix, Interval: f.cfg.Interval}
}
