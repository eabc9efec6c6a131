package pgflushextension

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/extension"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension/internal/metadata"
)

// graceFactor: a staging entry of another flusher is recovered once it is
// older than graceFactor × timeout, i.e. its flusher is dead or stuck.
const graceFactor = 2

var errStartTwice = errors.New("pg_flush: Start called twice or after Shutdown")

// flusher is the pg_flush extension.
type flusher struct {
	cfg       *Config
	logger    *zap.Logger
	telemetry *metadata.TelemetryBuilder
	schema    protocol.Schema
	upsert    upsertFunc
	// grace is the age after which another flusher's staging entry is
	// recovered (graceFactor × timeout; tests shorten it).
	grace time.Duration
	// failpoint is nil in production; fault tests set it (see failpoint.go).
	failpoint failpointFunc
	// now is this collector's wall clock (time.Now; tests skew it). It names
	// flush ids and dates the pending counters' ages, which the exporters'
	// clocks scored. The ages of staging entries never use it: STAGE scores
	// them with Redis's clock and recovery reads that clock.
	now func() time.Time
	// tickAtStart runs the first tick as soon as the loop starts, so that a
	// restarted collector recovers what a dead flusher left staged without
	// waiting an interval. The factory sets it; tests that drive ticks by
	// hand leave it off.
	tickAtStart bool

	// Lifecycle, as in filestorage: a ticker loop stopped through stopCh,
	// and a closed flag under mu so Shutdown is idempotent.
	mu         sync.Mutex
	started    bool
	closed     bool
	stopCh     chan struct{}
	cancelLoop context.CancelFunc
	wg         sync.WaitGroup
	host       component.Host
	// failing is set after a failed tick so that the next success reports
	// StatusOK; used by the loop goroutine only.
	failing bool

	// The connections (connect.go). pool is built at Start; client and
	// store once Redis answered. connected is set once both servers
	// answered (and the schema exists); then the loop ticks.
	pool      *pgxpool.Pool
	client    redis.UniversalClient
	store     *protocol.FlushStore
	pgTarget  string   // host:port/database, for errors and logs
	secrets   []string // the DSN's password, masked in errors
	pgReady   bool
	connected bool
	// backends is set once connected and cleared when Shutdown begins:
	// what readers in the same collector use (settings.go).
	backends atomic.Pointer[protocol.Backends]

	// flushMu serializes ticks (loop, Shutdown, tests).
	flushMu sync.Mutex
	// own holds this instance's staged but unfinished flush ids: they are
	// retried first, without waiting for the grace period. Guarded by ownMu
	// (a tick's stager and applier both use it).
	ownMu sync.Mutex
	own   map[string]struct{}
}

var _ extension.Extension = (*flusher)(nil)

func newFlusher(cfg *Config, set extension.Settings) (*flusher, error) {
	schema, err := protocol.New(cfg.KeyPrefix)
	if err != nil {
		return nil, fmt.Errorf(`"key_prefix": %w`, err)
	}
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("create telemetry: %w", err)
	}
	return &flusher{
		cfg:       cfg,
		logger:    set.Logger,
		telemetry: tb,
		schema:    schema,
		upsert:    upsertUnnest,
		grace:     graceFactor * cfg.Timeout,
		now:       time.Now,
		own:       make(map[string]struct{}),
	}, nil
}

// Start connects to PostgreSQL and Redis, creates the schema if enabled, and
// starts the flush loop with its own context. What no retry fixes (an invalid
// DSN, a rejected password, a TLS misconfiguration, a missing privilege)
// fails Start. A server that is down or unreachable does not: the loop then
// connects in the background first (connect.go) and reports a recoverable
// error until it has.
func (f *flusher) Start(ctx context.Context, host component.Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.closed {
		return errStartTwice
	}
	if err := f.newPool(ctx); err != nil {
		return err
	}
	err := f.connect(ctx)
	if err != nil && unrecoverable(err) {
		_ = f.closeConnections()
		return fmt.Errorf("pg_flush: %w", err)
	}
	f.host = host
	// The loop outlives Start: keep ctx's values, never its cancellation.
	loopCtx, cancelLoop := context.WithCancel(context.WithoutCancel(ctx))
	f.cancelLoop = cancelLoop
	f.stopCh = make(chan struct{})
	f.started = true
	if err != nil {
		f.connectInBackground(loopCtx, err)
		return nil
	}
	f.connected = true
	f.publishBackends()
	f.wg.Go(func() { f.loop(loopCtx) })
	f.logger.Info("pg_flush started",
		zap.String("redis", f.cfg.Redis.Describe()),
		zap.Int("wait_replicas", f.cfg.Redis.WaitReplicas),
		zap.String("key_prefix", f.schema.Prefix()),
		zap.Duration("interval", f.cfg.Interval),
		zap.Int("batch_size", f.cfg.BatchSize))
	return nil
}

// loop runs a tick every interval (and one at once with tickAtStart) until
// stopCh is closed.
func (f *flusher) loop(ctx context.Context) {
	ticker := time.NewTicker(f.cfg.Interval)
	defer ticker.Stop()
	if f.tickAtStart {
		f.tick(ctx)
	}
	for {
		select {
		case <-f.stopCh:
			return
		case <-ticker.C:
			f.tick(ctx)
		}
	}
}

// tick runs one flush and reports its outcome as component status: a failure
// is recoverable (everything is retried next tick); the next success reports OK.
func (f *flusher) tick(ctx context.Context) {
	start := time.Now()
	st, err := f.flush(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return // Shutdown interrupted the tick; its final flush takes over.
		}
		f.logger.Error("flush failed; staged and pending counts stay in Redis and are retried next tick",
			append(st.logFields(), zap.Error(err))...)
		// Once per outage: every report restamps the status, and the health
		// check counts recovery_duration from that stamp.
		if !f.failing {
			componentstatus.ReportStatus(f.host, componentstatus.NewRecoverableErrorEvent(err))
		}
		f.failing = true
		return
	}
	if f.failing {
		f.failing = false
		componentstatus.ReportStatus(f.host, componentstatus.NewEvent(componentstatus.StatusOK))
	}
	f.logger.Debug("flush done", append(st.logFields(), zap.Duration(keyElapsed, time.Since(start)))...)
}

// Shutdown stops the loop, runs a final flush bounded by ctx and "timeout"
// (extensions stop after the pipelines, so it sees the last exported batch),
// then closes the connections. It is safe without Start and when called twice.
// A flusher that has not reached both servers yet only stops connecting.
//
// A final flush that runs out of time (ctx ends, or "timeout", in a backlog)
// is no failure: what it did not move stays in Redis, where the next flusher
// moves it, and Shutdown returns nil. It is logged at Error, though, with the
// number of counters still pending and of staging entries left, because the
// counts reach PostgreSQL only when a flusher runs again.
func (f *flusher) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	started := f.started
	f.mu.Unlock()
	f.backends.Store(nil)
	defer f.telemetry.Shutdown()
	if !started {
		return nil
	}
	close(f.stopCh)
	f.cancelLoop()
	f.wg.Wait()
	if !f.connected {
		_ = f.closeConnections()
		f.logger.Info("pg_flush stopped before it reached PostgreSQL and Redis: it flushed nothing, and the counts stay in Redis for the next flusher")
		return nil
	}

	start := time.Now()
	st, err := f.runFlush(ctx)
	switch {
	case err != nil:
		f.logger.Error("final flush failed; the counts stay in Redis and the next flusher recovers them",
			append(append(st.logFields(), f.leftInRedisFields(ctx)...), zap.Error(err))...)
		err = fmt.Errorf("pg_flush final flush: %w", err)
	case st.leftBehind():
		f.logger.Error("pg_flush stopped before its final flush moved everything: the counters still pending and the staging entries left stay in Redis, and the next flusher moves them (raise the Shutdown time or timeout, or flush more often)",
			append(append(st.logFields(), f.leftInRedisFields(ctx)...),
				zap.Duration("timeout", f.cfg.Timeout), zap.Duration(keyElapsed, time.Since(start)))...)
	default:
		f.logger.Info("pg_flush stopped after a final flush",
			append(st.logFields(), zap.Duration(keyElapsed, time.Since(start)))...)
	}
	if cerr := f.closeConnections(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("pg_flush close redis: %w", cerr))
	}
	return err
}

// leftInRedisFields returns the log fields of what a final flush left in
// Redis: the pending counters (ZCARD of the pending set) and the staging
// entries, every flusher's. They are read under ctx, which may be over by
// then: the fields then carry the read error instead.
func (f *flusher) leftInRedisFields(ctx context.Context) []zap.Field {
	pending, staging, err := f.store.LeftInRedis(ctx)
	if err != nil {
		return []zap.Field{zap.NamedError("left_in_redis_error", err)}
	}
	return []zap.Field{zap.Int64(keyPendingLeft, pending), zap.Int64(keyStagingLeft, staging)}
}

// redactedError carries an error whose message had secrets masked. Unwrap
// keeps errors.Is/As working; only Error() is what gets logged.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

const redactedMask = "xxxxx"

// redactError masks every occurrence of secrets in err's message: a server
// or a driver may echo a password pgx knows. (pgx itself masks the password
// of a DSN that does not parse.)
func redactError(err error, secrets []string) error {
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, redactedMask)
		}
	}
	return &redactedError{msg: msg, err: err}
}
