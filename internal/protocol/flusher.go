package protocol

import (
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// FlusherSettings are the settings of a flusher (the pg_flush extension) that
// an exporter running in the same collector checks its own against: counters
// are only moved when both use the same key prefix, and only before they
// expire when the exporter's TTL is well above the flush interval.
type FlusherSettings struct {
	KeyPrefix string
	Interval  time.Duration
}

// Flusher is implemented by the pg_flush extension. The components never
// import each other; an exporter finds a flusher among the collector's
// extensions through this interface.
type Flusher interface {
	FlusherSettings() FlusherSettings
}

// Backends are a flusher's connections and key schema, which a reader in
// the same collector (the analytics_query extension) reads through, so that
// the Redis and PostgreSQL settings and the key prefix are written once.
// The reader must not close them: the flusher does, at its Shutdown.
type Backends struct {
	Redis    redis.UniversalClient
	Postgres *pgxpool.Pool
	Schema   Schema
}

// BackendProvider is implemented by the pg_flush extension. Backends
// returns ErrFlusherNotConnected until the flusher has reached both servers
// (it connects in the background) and after its Shutdown began.
type BackendProvider interface {
	Backends() (Backends, error)
}
