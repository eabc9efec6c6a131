// Package e2e holds end-to-end tests of the built otelcol-analytics distro:
// OTLP in through the real receiver, counters in a real Redis, rows in a real
// PostgreSQL. The tests run bin/otelcol-analytics (or $OTELCOL_BIN) as a
// child process with testdata/config.yaml, so they exercise exactly what
// `make run` runs.
package e2e
