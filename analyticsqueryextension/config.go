package analyticsqueryextension

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/confmap"
)

// Defaults. createDefaultConfig is the only place they are applied.
const (
	// defaultEndpoint is loopback only: the API has no auth unless "auth"
	// names an authenticator extension.
	defaultEndpoint     = "127.0.0.1:8080"
	defaultMaxLimit     = 10_000
	defaultMaxCells     = 100_000
	defaultQueryTimeout = 10 * time.Second

	// maxMaxCells bounds "max_cells": every cell is held in memory while a
	// query merges PostgreSQL's groups with Redis'.
	maxMaxCells = 10_000_000
	// maxQueryTimeout bounds "query_timeout" far below the flush
	// generation's TTL (an hour; see internal/protocol), so a generation
	// cannot expire and come back unchanged during one query.
	maxQueryTimeout = 5 * time.Minute
)

// defaultFlusher is the pg_flush extension read through when "flusher" is
// not set.
var defaultFlusher = component.MustNewID("pg_flush")

// Config is the analytics_query extension configuration.
type Config struct {
	// ServerConfig is the HTTP server: endpoint, tls, cors, auth (any
	// authenticator extension), compression and timeouts, as for every
	// HTTP server of the collector. default endpoint: 127.0.0.1:8080
	ServerConfig confighttp.ServerConfig `mapstructure:",squash"`
	// Flusher names the pg_flush extension whose Redis and PostgreSQL
	// connections and key prefix the queries read through. It must be in
	// service::extensions. default: pg_flush
	Flusher component.ID `mapstructure:"flusher"`
	// MaxLimit is the largest "limit" a query may ask for, and the limit of
	// a query that sets none. default: 10000
	MaxLimit int `mapstructure:"max_limit"`
	// MaxCells bounds the work of one query: the number of time buckets of
	// its date_range (with a time dimension) and the number of result rows
	// before its limit. A query above it gets a 400 that says so.
	// Range 1 to 10000000. default: 100000
	MaxCells int `mapstructure:"max_cells"`
	// QueryTimeout bounds one query, its retries included. At most 5
	// minutes. default: 10 seconds
	QueryTimeout time.Duration `mapstructure:"query_timeout"`

	// prevent unkeyed literal initialization
	_ struct{}
}

func createDefaultConfig() component.Config {
	server := confighttp.NewDefaultServerConfig()
	server.NetAddr.Endpoint = defaultEndpoint
	return &Config{
		ServerConfig: server,
		Flusher:      defaultFlusher,
		MaxLimit:     defaultMaxLimit,
		MaxCells:     defaultMaxCells,
		QueryTimeout: defaultQueryTimeout,
	}
}

var _ confmap.Validator = (*Config)(nil)

// Validate checks values only (no I/O); the server settings validate
// themselves, and the flusher is looked up at Start.
func (c *Config) Validate() error {
	var errs []error
	if c.ServerConfig.NetAddr.Endpoint == "" {
		errs = append(errs, errors.New(`"endpoint" must be set`))
	}
	if c.Flusher.Type().String() == "" {
		errs = append(errs, errors.New(`"flusher" must name the pg_flush extension to read through`))
	}
	if c.MaxCells < 1 || c.MaxCells > maxMaxCells {
		errs = append(errs, fmt.Errorf(`"max_cells" must be between 1 and %d, got %d`, maxMaxCells, c.MaxCells))
	}
	if c.MaxLimit < 1 {
		errs = append(errs, fmt.Errorf(`"max_limit" must be positive, got %d`, c.MaxLimit))
	} else if c.MaxCells >= 1 && c.MaxLimit > c.MaxCells {
		errs = append(errs, fmt.Errorf(`"max_limit" (%d) must not exceed "max_cells" (%d): a query never returns more rows than cells`, c.MaxLimit, c.MaxCells))
	}
	if c.QueryTimeout <= 0 || c.QueryTimeout > maxQueryTimeout {
		errs = append(errs, fmt.Errorf(`"query_timeout" must be positive and at most %s, got %s`, maxQueryTimeout, c.QueryTimeout))
	}
	return errors.Join(errs...)
}
