// Package e2e holds end-to-end tests of the built otelcol-analytics distro:
// OTLP in through the real receiver, counters in a real Redis, rows in a real
// PostgreSQL. The tests run bin/otelcol-analytics (or $OTELCOL_BIN) as a
// child process with testdata/config.yaml, so they exercise exactly what
// `make run` runs.
//
// faults_test.go adds distro-level fault tests: PostgreSQL killed and
// restarted, Redis killed and restarted, three collectors sharing one Redis
// prefix and one database, and collectors SIGKILLed under load and in the
// middle of a flush. Each ends with a final flush and compares the tables
// with exact expectations, per request (see request in faults_helpers_test.go).
package e2e
