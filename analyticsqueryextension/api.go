package analyticsqueryextension

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/dashboard"
	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/query"
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// maxBodyBytes bounds a query's JSON body.
const maxBodyBytes = 1 << 20

// api serves the query API.
type api struct {
	runner  *query.Runner
	limits  query.Limits
	timeout time.Duration
	logger  *zap.Logger
	now     func() time.Time
}

func newAPI(cfg *Config, runner *query.Runner, logger *zap.Logger, now func() time.Time) *api {
	return &api{
		runner:  runner,
		limits:  query.Limits{MaxLimit: cfg.MaxLimit, MaxCells: cfg.MaxCells},
		timeout: cfg.QueryTimeout,
		logger:  logger,
		now:     now,
	}
}

// routes returns the handler of every path the server answers.
func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v2/query", only(http.MethodPost, a.handleQuery))
	mux.HandleFunc("/api/v2/event-names", only(http.MethodGet, a.handleEventNames))
	mux.HandleFunc("/healthz", only(http.MethodGet, a.handleHealth))
	// The built-in dashboard: its page and its assets, embedded.
	dash := dashboard.Handler()
	mux.Handle("/{$}", dash)
	mux.Handle(dashboard.AssetsPrefix, dash)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "path", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// only answers other methods than method with a 405 and a JSON error.
func only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "method", fmt.Sprintf("%s %s is not allowed; use %s", r.Method, r.URL.Path, method))
			return
		}
		h(w, r)
	}
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
	// Field names the request field at fault (400 only).
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	writeJSON(w, status, errorBody{Error: msg, Field: field})
}

func (a *api) handleQuery(w http.ResponseWriter, r *http.Request) {
	q, err := query.Parse(http.MaxBytesReader(w, r.Body, maxBodyBytes), a.now(), a.limits)
	if err != nil {
		a.fail(w, err)
		return
	}
	a.run(w, r, q, func(res *query.Result) any { return res })
}

// eventNames is the response of GET /api/v2/event-names.
type eventNames struct {
	Results []string   `json:"results"`
	Meta    query.Meta `json:"meta"`
}

// handleEventNames lists the event types ever counted: a query for the
// events by event:name over all time, exact like every query.
func (a *api) handleEventNames(w http.ResponseWriter, r *http.Request) {
	q, err := query.Parse(strings.NewReader(`{"metrics":["events"],"dimensions":["event:name"],"date_range":"all","order_by":[["event:name","asc"]]}`),
		a.now(), query.Limits{MaxLimit: a.limits.MaxCells, MaxCells: a.limits.MaxCells})
	if err != nil {
		a.fail(w, err)
		return
	}
	a.run(w, r, q, func(res *query.Result) any {
		names := make([]string, len(res.Results))
		for i, row := range res.Results {
			names[i] = row.Dimensions[0]
		}
		return eventNames{Results: names, Meta: res.Meta}
	})
}

// run runs q under the query timeout and writes what render makes of the
// result.
func (a *api) run(w http.ResponseWriter, r *http.Request, q *query.Query, render func(*query.Result) any) {
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	res, err := a.runner.Run(ctx, q)
	if err != nil {
		if ctx.Err() != nil && r.Context().Err() == nil {
			err = fmt.Errorf("%w (query_timeout %s): %w", errQueryTimeout, a.timeout, err)
		}
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, render(res))
}

var errQueryTimeout = errors.New("the query timed out")

// fail writes the response of a failed request: 400 for a bad request, 503
// when the stores cannot answer now (the flusher is not connected, flushes
// kept moving counts, the query timed out), 500 otherwise.
func (a *api) fail(w http.ResponseWriter, err error) {
	var maxBytes *http.MaxBytesError
	switch fe, ok := errors.AsType[*query.FieldError](err); {
	case ok:
		writeError(w, http.StatusBadRequest, fe.Field, fe.Error())
	case errors.As(err, &maxBytes):
		writeError(w, http.StatusRequestEntityTooLarge, "body", fmt.Sprintf("body: larger than %d bytes", maxBodyBytes))
	case errors.Is(err, protocol.ErrFlusherNotConnected), errors.Is(err, query.ErrUnstable), errors.Is(err, errQueryTimeout):
		a.logger.Warn("query not answered", zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
	default:
		a.logger.Error("query failed", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "", err.Error())
	}
}

// health is the response of GET /healthz.
type health struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// handleHealth answers 200 once the flusher has reached Redis and
// PostgreSQL, 503 before.
func (a *api) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if _, err := a.runner.Backends(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, health{Status: "unavailable", Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, health{Status: "ok"})
}
