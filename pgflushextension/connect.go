package pgflushextension

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// Connecting. Start makes one attempt to reach both servers; when one is
// down or unreachable it returns nil and the loop's goroutine keeps trying,
// with a delay that doubles from reconnectInitialDelay to reconnectMaxDelay,
// before its first tick. Shutdown stops it.

const (
	reconnectInitialDelay = 100 * time.Millisecond
	reconnectMaxDelay     = 5 * time.Second
	// maxConnectTimeout bounds one attempt (both pings and the schema), and
	// "timeout" bounds it further: a server that does not answer must not
	// hold up the collector's start for a whole flush timeout.
	maxConnectTimeout = 5 * time.Second
)

// newPool builds the PostgreSQL pool, which connects only when used. It
// fails only for a DSN that does not parse; errors never contain the DSN's
// password.
func (f *flusher) newPool(ctx context.Context) error {
	// pgx masks the password in a parse error's copy of the DSN.
	poolCfg, err := pgxpool.ParseConfig(string(f.cfg.DSN))
	if err != nil {
		return fmt.Errorf(`pg_flush: parse "dsn": %w`, err)
	}
	poolCfg.MaxConns = f.cfg.MaxConns
	if p := poolCfg.ConnConfig.Password; p != "" {
		f.secrets = []string{p}
	}
	f.pgTarget = fmt.Sprintf("%s:%d/%s", poolCfg.ConnConfig.Host, poolCfg.ConnConfig.Port, poolCfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("pg_flush: postgres pool %s: %w", f.pgTarget, redactError(err, f.secrets))
	}
	f.pool = pool
	return nil
}

// connect makes one attempt to reach what is not reached yet: PostgreSQL
// (a ping, then the schema with create_schema) and Redis (NewClient's PING
// and cluster check, then the eviction warning). Both are tried, so that the
// error names every server that failed. Callers hold mu or run in the loop's
// goroutine before its first tick.
func (f *flusher) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, min(f.cfg.Timeout, maxConnectTimeout))
	defer cancel()
	var errs []error
	if !f.pgReady {
		if err := f.pool.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("postgres ping %s: %w", f.pgTarget, redactError(err, f.secrets)))
		} else if err := f.ensureSchema(ctx); err != nil {
			errs = append(errs, err)
		} else {
			f.pgReady = true
		}
	}
	if f.client == nil {
		client, err := f.cfg.Redis.NewClient(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			f.client, f.store = client, protocol.NewFlushStore(client, f.cfg.Redis.NewScriptRunner(client), f.schema)
			f.cfg.Redis.WarnIfEvicting(ctx, client, f.logger)
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	default: // one line in logs and status
		return fmt.Errorf("%w; %w", errs[0], errs[1])
	}
}

func (f *flusher) ensureSchema(ctx context.Context) error {
	if !f.cfg.CreateSchema {
		return nil
	}
	if err := createSchema(ctx, f.pool); err != nil {
		return fmt.Errorf("postgres %s: %w", f.pgTarget, redactError(err, f.secrets))
	}
	return nil
}

// connectInBackground reports the failed first attempt (a recoverable error,
// logged once at Warn) and starts the loop's goroutine, which connects
// before it ticks.
func (f *flusher) connectInBackground(ctx context.Context, firstErr error) {
	err := fmt.Errorf("pg_flush: %w", firstErr)
	f.logger.Warn("pg_flush cannot reach PostgreSQL or Redis: it starts anyway and keeps connecting in the background; "+
		"it flushes once both answer, and the counts wait in Redis meanwhile",
		zap.String("redis", f.cfg.Redis.Describe()), zap.String("postgres", f.pgTarget), zap.Error(err))
	componentstatus.ReportStatus(f.host, componentstatus.NewRecoverableErrorEvent(err))
	f.failing = true
	f.wg.Go(func() {
		if f.connectLoop(ctx) {
			f.loop(ctx)
		}
	})
}

// connectLoop retries connect with backoff. It returns true once both
// servers answered (having reported StatusOK), and false when an attempt
// meets what no retry fixes (having reported a permanent error) or when
// Shutdown stops it.
func (f *flusher) connectLoop(ctx context.Context) bool {
	delay := reconnectInitialDelay
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-f.stopCh:
			return false
		case <-timer.C:
		}
		err := f.connect(ctx)
		switch {
		case err == nil:
			f.connected = true
			f.publishBackends()
			f.failing = false
			componentstatus.ReportStatus(f.host, componentstatus.NewEvent(componentstatus.StatusOK))
			f.logger.Info("pg_flush connected to PostgreSQL and Redis; flushing starts",
				zap.String("redis", f.cfg.Redis.Describe()), zap.String("postgres", f.pgTarget),
				zap.Int("attempts", attempt))
			return true
		case ctx.Err() != nil:
			return false
		case unrecoverable(err):
			err = fmt.Errorf("pg_flush: %w", err)
			f.logger.Error("pg_flush stops connecting: a server refuses its settings; fix them and restart the collector",
				zap.Error(err))
			componentstatus.ReportStatus(f.host, componentstatus.NewPermanentErrorEvent(err))
			return false
		}
		delay = min(2*delay, reconnectMaxDelay)
		f.logger.Debug("pg_flush still cannot reach PostgreSQL or Redis", zap.Int("attempt", attempt),
			zap.Duration("next_attempt_in", delay), zap.Error(err))
		timer.Reset(delay)
	}
}

// closeConnections closes the pool and the Redis client, if any.
func (f *flusher) closeConnections() error {
	f.pool.Close()
	if f.client == nil {
		return nil
	}
	return f.client.Close()
}

// SQLSTATE classes and codes that a retry with the same settings meets
// again: the server rejects the role or its password, or has no such
// database or schema, or denies a privilege the flusher needs (class 42, as
// CREATE on the schema with create_schema), or rejects a run-time parameter
// of the DSN.
var (
	unrecoverableClasses = []string{"28", "3D", "3F", "42"}
	unrecoverableCodes   = []string{"22023"} // invalid_parameter_value
)

// unrecoverable reports whether a failed connection attempt would fail the
// same way on every retry: a PostgreSQL error of the classes above, a TLS
// misconfiguration, or what redisconn.Unrecoverable finds for Redis. The
// rest (connection refused or reset, timeouts, DNS failures, a server that
// is starting or shutting down, too many connections) is retried.
func unrecoverable(err error) bool {
	if redisconn.Unrecoverable(err) { // Redis, and TLS for both servers
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		code := pgErr.SQLState()
		for _, class := range unrecoverableClasses {
			if strings.HasPrefix(code, class) {
				return true
			}
		}
		if slices.Contains(unrecoverableCodes, code) {
			return true
		}
	}
	// sslmode=require or verify-* against a server without TLS: pgconn has
	// no type or sentinel for its answer, only this message.
	return strings.Contains(err.Error(), "server refused TLS connection")
}
