package analyticsqueryextension

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensioncapabilities"
	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/query"
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// maxAttempts bounds the reads of one query that a concurrent STAGE
// invalidates; each STAGE is followed by a PostgreSQL transaction, so
// reads that fail this often mean flushes back to back for the whole query.
const maxAttempts = 10

var errStartTwice = errors.New("analytics_query: Start called twice or after Shutdown")

// queryExtension is the analytics_query extension: an HTTP server that reads
// through a pg_flush extension's connections.
type queryExtension struct {
	cfg    *Config
	set    extension.Settings
	logger *zap.Logger
	// now is the clock of relative date ranges ("day", "7d").
	now func() time.Time

	mu      sync.Mutex
	started bool
	closed  bool
	server  *http.Server
	// addr is the address the server listens on (tests listen on port 0).
	addr string
	wg   sync.WaitGroup
}

var (
	_ extension.Extension             = (*queryExtension)(nil)
	_ extensioncapabilities.Dependent = (*queryExtension)(nil)
)

func newQueryExtension(cfg *Config, set extension.Settings) *queryExtension {
	return &queryExtension{cfg: cfg, set: set, logger: set.Logger, now: time.Now}
}

// Dependencies makes the collector start the flusher before this extension
// and stop it after.
func (e *queryExtension) Dependencies() []component.ID { return []component.ID{e.cfg.Flusher} }

// Start finds the flusher and starts the HTTP server. A flusher missing from
// service::extensions, or an extension of another kind under its name,
// fails Start; a flusher that has not reached Redis and PostgreSQL yet does
// not: queries get a 503 until it has.
func (e *queryExtension) Start(ctx context.Context, host component.Host) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.closed {
		return errStartTwice
	}
	ext, ok := host.GetExtensions()[e.cfg.Flusher]
	if !ok {
		return fmt.Errorf("analytics_query: flusher extension %q not found: add it to service::extensions", e.cfg.Flusher)
	}
	provider, ok := ext.(protocol.BackendProvider)
	if !ok {
		return fmt.Errorf("analytics_query: extension %q is not a pg_flush extension", e.cfg.Flusher)
	}
	runner := &query.Runner{Backends: provider.Backends, MaxCells: e.cfg.MaxCells, MaxAttempts: maxAttempts}
	handler := newAPI(e.cfg, runner, e.logger, e.now).routes()

	ln, err := e.cfg.ServerConfig.ToListener(ctx)
	if err != nil {
		return fmt.Errorf("analytics_query: listen on %s: %w", e.cfg.ServerConfig.NetAddr.Endpoint, err)
	}
	srv, err := e.cfg.ServerConfig.ToServer(ctx, host.GetExtensions(), e.set.TelemetrySettings, handler)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("analytics_query: create server: %w", err)
	}
	e.server = srv
	e.addr = ln.Addr().String()
	e.started = true
	e.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.logger.Error("analytics_query server failed", zap.Error(err))
			componentstatus.ReportStatus(host, componentstatus.NewFatalErrorEvent(err))
		}
	})
	e.logger.Info("analytics_query started",
		zap.String("endpoint", e.addr),
		zap.String("flusher", e.cfg.Flusher.String()))
	return nil
}

// Shutdown stops the server, letting requests in flight end within ctx. It
// is safe without Start and when called twice.
func (e *queryExtension) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	srv := e.server
	e.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	e.wg.Wait()
	if err != nil {
		return fmt.Errorf("analytics_query: stop server: %w", err)
	}
	return nil
}
