// Package sdkload drives a collector the way real applications do: several
// independent OpenTelemetry Go SDK LoggerProviders, each with the batch
// processor at its default settings (queue 2048, exports of up to 512
// records, 1 s interval, one export in flight) and an OTLP exporter, emitting
// a steady rate of event records.
//
// At those defaults the collector's latency per export request caps each
// instance at about 512 / latency records/s, and the SDK drops the rest
// silently inside the application. Run measures that: the records emitted,
// the records the SDK handed to its exporter, the latency of each export
// call, and the counts the collector should end up with.
package sdkload
