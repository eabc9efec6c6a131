// Package redisanalyticsexporter implements the redis_analytics exporter: it
// turns log records and spans into product-analytics counters (events per type
// per day and per hour, and per user and type per day) and applies each push to
// Redis in one atomic, idempotent script call, for the pg_flush extension to
// move into PostgreSQL.
//
//go:generate go tool -modfile=../internal/tools/mdatagen/go.mod mdatagen metadata.yaml
package redisanalyticsexporter
