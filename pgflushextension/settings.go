package pgflushextension

import "github.com/otelcol-analytics/otelcol-analytics/internal/protocol"

var (
	_ protocol.Flusher         = (*flusher)(nil)
	_ protocol.BackendProvider = (*flusher)(nil)
)

// FlusherSettings lets a redis_analytics exporter in the same collector check
// its key prefix and TTL against this flusher's settings.
func (f *flusher) FlusherSettings() protocol.FlusherSettings {
	return protocol.FlusherSettings{KeyPrefix: f.cfg.KeyPrefix, Interval: f.cfg.Interval}
}

// Backends lets a reader in the same collector (analytics_query) read
// through this flusher's connections once it has reached both servers.
func (f *flusher) Backends() (protocol.Backends, error) {
	b := f.backends.Load()
	if b == nil {
		return protocol.Backends{}, protocol.ErrFlusherNotConnected
	}
	return *b, nil
}

// publishBackends makes the connections available to readers; called once
// both servers answered.
func (f *flusher) publishBackends() {
	f.backends.Store(&protocol.Backends{Redis: f.client, Postgres: f.pool, Schema: f.schema})
}
