package analyticsqueryextension

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/metadata"
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/pgflushextension"
)

// flusherID is the pg_flush extension's ID in the tests' hosts.
var flusherID = component.MustNewID("pg_flush")

// testHost is a collector host holding the given extensions.
type testHost struct {
	exts map[component.ID]component.Component
}

func (h *testHost) GetExtensions() map[component.ID]component.Component { return h.exts }

// env is one test's Redis prefix and PostgreSQL database, with a started
// pg_flush extension on them.
type env struct {
	t       testing.TB
	rdb     *redis.Client
	schema  protocol.Schema
	flusher extension.Extension
	// flusherCfg is the flusher's config, for flushOnce.
	flusherCfg component.Config
	host       *testHost
}

// newEnv starts a pg_flush extension (the real one, from its factory) on
// a fresh key prefix and database; it flushes once an hour (so only the
// tick at its start and the final one at Shutdown run) and is shut down at
// cleanup. It waits until the flusher has connected.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, map[string]any{"interval": "1h"})
}

// newEnvWith is newEnv with pg_flush settings (YAML keys) on top.
func newEnvWith(t testing.TB, settings map[string]any) *env {
	t.Helper()
	rdb, prefix := testservers.SharedRedis(t)
	schema, err := protocol.New(prefix)
	require.NoError(t, err)
	f := pgflushextension.NewFactory()
	cfg := f.CreateDefaultConfig()
	m := map[string]any{
		"redis":            map[string]any{"endpoint": testservers.RedisEndpoint()},
		"key_prefix":       prefix,
		"dsn":              testservers.FreshDatabase(t),
		"timeout":          "10s",
		"ledger_retention": "1000h",
	}
	maps.Copy(m, settings)
	require.NoError(t, confmap.NewFromStringMap(m).Unmarshal(cfg))
	require.NoError(t, confmap.Validate(cfg))
	set := extensiontest.NewNopSettings(f.Type())
	ext, err := f.Create(context.Background(), set, cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(context.Background(), &testHost{}))
	t.Cleanup(func() { assert.NoError(t, ext.Shutdown(context.Background())) })
	provider := ext.(protocol.BackendProvider)
	require.Eventually(t, func() bool { _, err := provider.Backends(); return err == nil }, 10*time.Second, 10*time.Millisecond)
	return &env{
		t: t, rdb: rdb, schema: schema, flusher: ext, flusherCfg: cfg,
		host: &testHost{exts: map[component.ID]component.Component{flusherID: ext}},
	}
}

// flushOnce moves everything pending in Redis to PostgreSQL with the real
// pg_flush flow: a second flusher on the same prefix and database, which
// flushes when it starts and once more when it stops.
func (e *env) flushOnce(ctx context.Context) {
	e.t.Helper()
	f := pgflushextension.NewFactory()
	// A loaded host can leave a staging entry to the next start (the final
	// flush out of time): flush again, a bounded number of times.
	for range 5 {
		ext, err := f.Create(ctx, extensiontest.NewNopSettings(f.Type()), e.flusherCfg)
		require.NoError(e.t, err)
		require.NoError(e.t, ext.Start(ctx, &testHost{}))
		require.NoError(e.t, ext.Shutdown(ctx))
		if e.rdb.ZCard(ctx, e.schema.PendingKey()).Val() == 0 && e.rdb.ZCard(ctx, e.schema.StagingIndexKey()).Val() == 0 {
			return
		}
	}
	e.t.Fatal("five flushes left counters in Redis")
}

// startQuery starts an analytics_query extension on a free loopback port,
// reading through the env's flusher; mutate adjusts its config. It returns
// the server's base URL.
func (e *env) startQuery(mutate func(*Config)) string {
	e.t.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.ServerConfig.NetAddr.Endpoint = "127.0.0.1:0"
	cfg.Flusher = flusherID
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(e.t, confmap.Validate(cfg))
	ext := newQueryExtension(cfg, extensiontest.NewNopSettings(metadata.Type))
	require.NoError(e.t, ext.Start(context.Background(), e.host))
	e.t.Cleanup(func() { assert.NoError(e.t, ext.Shutdown(context.Background())) })
	return "http://" + ext.addr
}

// count is one counter increment.
type count struct {
	family protocol.Family
	typ    string
	user   string
	at     time.Time
	n      int64
}

// counter returns the protocol counter of c.
func (c count) counter() protocol.Counter {
	h := protocol.HourOf(c.at)
	if c.family != protocol.Hourly {
		h = h / 24 * 24
	}
	return protocol.Counter{Family: c.family, EventType: c.typ, UserID: c.user, Hour: h}
}

// events returns the increments the exporter writes for n events of typ by
// user (none for "") at at: the daily, hourly and (with a user) per-user
// counters.
func events(typ, user string, at time.Time, n int64) []count {
	out := []count{{protocol.Daily, typ, "", at, n}, {protocol.Hourly, typ, "", at, n}}
	if user != "" {
		out = append(out, count{protocol.UserDaily, typ, user, at, n})
	}
	return out
}

// apply writes one exporter push with the real apply script
// (protocol.ApplyCall), as the redis_analytics exporter does.
func (e *env) apply(ctx context.Context, counts ...[]count) {
	e.t.Helper()
	merged := map[protocol.Counter]int64{}
	for _, cs := range counts {
		for _, c := range cs {
			merged[c.counter()] += c.n
		}
	}
	call := protocol.NewApplyCall(e.schema)
	call.AddBatch(uuid.NewString())
	for c, n := range merged {
		call.AddCounter(c, n)
	}
	call.Build(protocol.ApplyTTLs{Counter: 24 * time.Hour, BatchMarker: time.Hour, ResourceMarker: time.Hour})
	rc := redisconn.NewDefaultClientConfig()
	runner := rc.NewScriptRunner(e.rdb)
	res, err := call.Run(ctx, runner)
	require.NoError(e.t, err)
	require.Equal(e.t, protocol.Applied, res.Outcome)
}

// response is a decoded query response.
type response struct {
	Results []struct {
		Dimensions []string `json:"dimensions"`
		Metrics    []int64  `json:"metrics"`
	} `json:"results"`
	Meta  map[string]any `json:"meta"`
	Query map[string]any `json:"query"`
	Error string         `json:"error"`
	Field string         `json:"field"`
}

// table renders the results as "dim1|dim2 -> m1,m2" lines, for comparisons.
func (r response) table() []string {
	var out []string
	for _, row := range r.Results {
		ms := make([]string, len(row.Metrics))
		for i, m := range row.Metrics {
			ms[i] = jsonString(m)
		}
		out = append(out, strings.Join(row.Dimensions, "|")+" -> "+strings.Join(ms, ","))
	}
	return out
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// post sends a query and decodes the response.
func post(ctx context.Context, t testing.TB, base, body string, header ...string) (int, response) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v2/query", bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req)
}

func get(ctx context.Context, t testing.TB, base, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, http.NoBody)
	require.NoError(t, err)
	return doRaw(t, req)
}

// getEventNames fetches GET /api/v2/event-names.
func getEventNames(ctx context.Context, t testing.TB, base string) []string {
	t.Helper()
	status, body := get(ctx, t, base, "/api/v2/event-names")
	require.Equal(t, http.StatusOK, status, string(body))
	var r struct {
		Results []string `json:"results"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	return r.Results
}

func do(t testing.TB, req *http.Request) (int, response) {
	t.Helper()
	status, body := doRaw(t, req)
	var r response
	if len(body) > 0 && body[0] == '{' {
		require.NoError(t, json.Unmarshal(body, &r), string(body))
	}
	return status, r
}

func doRaw(t testing.TB, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}
