package pgflushextension

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// Defaults. createDefaultConfig is the only place they are applied.
const (
	defaultInterval        = 5 * time.Minute
	defaultTimeout         = time.Minute
	defaultBatchSize       = 10_000
	defaultCreateSchema    = true
	defaultCounterTTL      = 7 * 24 * time.Hour
	defaultLedgerRetention = 7 * 24 * time.Hour
	defaultMaxConns        = 4
	defaultApplyWorkers    = 2

	// maxBatchSize bounds one STAGE script: it runs inside Redis and blocks
	// the server for its duration (measured with Redis 7.0 on a 2-core host:
	// about 15 ms per 10000 counters, 0.2 s at 100000).
	maxBatchSize = 100_000
	// ledgerRetentionFactor: "ledger_retention" must cover this many ticks
	// (interval + timeout). Pruning never deletes the ledger row of a flush
	// id still in the staging index, so no staging entry outlives its row
	// however long it waits (an outage of PostgreSQL, say). What the
	// retention must still cover is the time during which a staging entry
	// can come back to a flusher after its CLEANUP (see pruneLedger in
	// upsert.go): its row is kept for ledger_retention after the entry's
	// last apply. That is at most two ticks' "timeout" for a flusher that
	// read the staging index before the CLEANUP, and the time Redis takes
	// to lose an acknowledged CLEANUP (a failover to a replica that missed
	// it: seconds, about a minute with Sentinel's defaults). Ten ticks is a
	// wide margin for the first; the second does not shrink with the tick,
	// so a retention of minutes (allowed with very short ticks) narrows it:
	// the default, 7 days, leaves it wide.
	ledgerRetentionFactor = 10
)

// Config is the pg_flush extension configuration.
type Config struct {
	// Redis is the connection to the Redis that the redis_analytics exporter
	// writes to; same settings as the exporter's. default: plain TCP to 127.0.0.1:6379
	Redis redisconn.ClientConfig `mapstructure:"redis"`
	// KeyPrefix is the key prefix shared with the exporter (see
	// internal/protocol). default: "analytics"
	KeyPrefix string `mapstructure:"key_prefix"`
	// DSN is the PostgreSQL connection string (URL or keyword/value form),
	// e.g. postgres://user:secret@127.0.0.1:5432/analytics?sslmode=disable.
	// Redacted when the configuration is printed. Required; no default.
	DSN configopaque.String `mapstructure:"dsn"`
	// Interval is the time between two flush ticks. default: 5 minutes
	Interval time.Duration `mapstructure:"interval"`
	// Timeout bounds one flush tick (recovery, every batch, ledger pruning) and
	// the connection checks in Start. A tick starts new work (a recovery or a
	// STAGE) only during the first 3/4 of it and leaves the rest to apply what
	// it staged, so a tick that runs out of time in a backlog ends with a
	// warning, not a failure. A staging entry of another flusher is recovered
	// once it is older than twice this value. default: 1 minute
	Timeout time.Duration `mapstructure:"timeout"`
	// BatchSize is the number of pending counters moved per STAGE/APPLY/CLEANUP
	// batch; it bounds the flusher's memory and the time one Redis script
	// blocks the server. Range 1 to 100000. default: 10000
	BatchSize int `mapstructure:"batch_size"`
	// CreateSchema creates the tables and indexes at Start if they do not
	// exist (serialized with an advisory lock). default: true
	CreateSchema bool `mapstructure:"create_schema"`
	// CounterTTL is the TTL the exporter sets on its counters: set it to the
	// exporter's ttl. When a pending counter is older than half of it the
	// flusher warns and reports it in otelcol_pg_flush_pending_at_risk.
	// 0 disables the report. default: 168 hours (7 days)
	CounterTTL time.Duration `mapstructure:"counter_ttl"`
	// LedgerRetention is how long a flush id is kept in
	// analytics_flush_ledger after it was last applied, or found applied, by
	// a flusher; a flush id still in the staging index is never pruned,
	// however old. At least 10 times interval + timeout.
	// default: 168 hours (7 days)
	LedgerRetention time.Duration `mapstructure:"ledger_retention"`
	// MaxConns is the maximum size of the PostgreSQL connection pool. default: 4
	MaxConns int32 `mapstructure:"max_conns"`
	// ApplyWorkers is how many batches of one tick are applied to PostgreSQL
	// at once, each in its own transaction and connection (the upserts are
	// PostgreSQL-bound: a second one uses another core of the server). Each
	// holds one batch in memory. At most max_conns. default: 2
	ApplyWorkers int `mapstructure:"apply_workers"`

	// prevent unkeyed literal initialization
	_ struct{}
}

func createDefaultConfig() component.Config {
	return &Config{
		Redis:           redisconn.NewDefaultClientConfig(),
		KeyPrefix:       protocol.DefaultPrefix,
		Interval:        defaultInterval,
		Timeout:         defaultTimeout,
		BatchSize:       defaultBatchSize,
		CreateSchema:    defaultCreateSchema,
		CounterTTL:      defaultCounterTTL,
		LedgerRetention: defaultLedgerRetention,
		MaxConns:        defaultMaxConns,
		ApplyWorkers:    defaultApplyWorkers,
	}
}

var _ confmap.Validator = (*Config)(nil)

// Validate checks values only (no I/O): the DSN is parsed and both servers
// are reached in Start. The nested "redis" block validates itself.
func (c *Config) Validate() error {
	var errs []error
	if err := protocol.ValidatePrefix(c.KeyPrefix); err != nil {
		errs = append(errs, fmt.Errorf(`"key_prefix": %w`, err))
	}
	if err := protocol.ValidatePrefixFor(c.KeyPrefix, c.Redis.Cluster); err != nil {
		errs = append(errs, err)
	}
	if c.DSN == "" {
		errs = append(errs, errors.New(`"dsn" must be set`))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf(`"interval" must be positive, got %s`, c.Interval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf(`"timeout" must be positive, got %s`, c.Timeout))
	} else if w := c.Redis.WaitTimeout; c.Redis.WaitReplicas > 0 && w >= c.Timeout {
		errs = append(errs, fmt.Errorf(`"redis::wait_timeout" (%s) must be below "timeout" (%s): a flush waits for its replicas within its timeout`, w, c.Timeout))
	}
	if c.BatchSize < 1 || c.BatchSize > maxBatchSize {
		errs = append(errs, fmt.Errorf(`"batch_size" must be between 1 and %d, got %d`, maxBatchSize, c.BatchSize))
	}
	if c.CounterTTL < 0 {
		errs = append(errs, fmt.Errorf(`"counter_ttl" must not be negative, got %s`, c.CounterTTL))
	}
	if c.MaxConns < 1 {
		errs = append(errs, fmt.Errorf(`"max_conns" must be positive, got %d`, c.MaxConns))
	}
	if c.ApplyWorkers < 1 || (c.MaxConns >= 1 && c.ApplyWorkers > int(c.MaxConns)) {
		errs = append(errs, fmt.Errorf(`"apply_workers" must be between 1 and "max_conns" (%d), got %d`, c.MaxConns, c.ApplyWorkers))
	}
	if c.Interval > 0 && c.Timeout > 0 {
		if minimum := ledgerRetentionFactor * (c.Interval + c.Timeout); c.LedgerRetention < minimum {
			errs = append(errs, fmt.Errorf(`"ledger_retention" must be at least %d times "interval" + "timeout" (%s), got %s`,
				ledgerRetentionFactor, minimum, c.LedgerRetention))
		}
	} else if c.LedgerRetention <= 0 {
		errs = append(errs, fmt.Errorf(`"ledger_retention" must be positive, got %s`, c.LedgerRetention))
	}
	return errors.Join(errs...)
}
