package protocol

import "time"

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
