package analyticsqueryextension

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

// pev is n events of typ at at, each with the property model (none for "")
// and, when hasTokens, the integer attribute tokens: the model of the
// property and sum tests.
type pev struct {
	typ       string
	model     string
	plan      string
	tokens    int64
	hasTokens bool
	at        time.Time
	n         int64
}

// counters returns the exporter's increments for e: the event counters,
// the property counters of model and plan, and the sums of tokens (n times
// the value), daily and hourly.
func (e pev) counters() map[protocol.Counter]int64 {
	h := protocol.HourOf(e.at)
	d := h / 24 * 24
	out := map[protocol.Counter]int64{
		{Family: protocol.Daily, EventType: e.typ, Hour: d}:  e.n,
		{Family: protocol.Hourly, EventType: e.typ, Hour: h}: e.n,
	}
	for prop, v := range map[string]string{"model": e.model, "plan": e.plan} {
		if v != "" {
			out[protocol.Counter{Family: protocol.PropertyDaily, EventType: e.typ, Attribute: prop, Value: v, Hour: d}] += e.n
			out[protocol.Counter{Family: protocol.PropertyHourly, EventType: e.typ, Attribute: prop, Value: v, Hour: h}] += e.n
		}
	}
	if e.hasTokens {
		out[protocol.Counter{Family: protocol.SumDaily, EventType: e.typ, Attribute: "tokens", Hour: d}] += e.n * e.tokens
		out[protocol.Counter{Family: protocol.SumHourly, EventType: e.typ, Attribute: "tokens", Hour: h}] += e.n * e.tokens
	}
	return out
}

// applyCounters writes one exporter push of counters with the real apply
// script, as the redis_analytics exporter does.
func (e *env) applyCounters(ctx context.Context, counters map[protocol.Counter]int64) {
	e.t.Helper()
	call := protocol.NewApplyCall(e.schema)
	call.AddBatch(uuid.NewString())
	for c, n := range counters {
		call.AddCounter(c, n)
	}
	call.Build(protocol.ApplyTTLs{Counter: 24 * time.Hour, BatchMarker: time.Hour, ResourceMarker: time.Hour})
	rc := redisconn.NewDefaultClientConfig()
	res, err := call.Run(ctx, rc.NewScriptRunner(e.rdb))
	require.NoError(e.t, err)
	require.Equal(e.t, protocol.Applied, res.Outcome)
}

// applyPevs writes the events of evs in one push.
func (e *env) applyPevs(ctx context.Context, evs []pev) {
	e.t.Helper()
	merged := map[protocol.Counter]int64{}
	for _, ev := range evs {
		for c, n := range ev.counters() {
			merged[c] += n
		}
	}
	e.applyCounters(ctx, merged)
}

// propQuery is what the property and sum model answers: dimensions among
// time:hour, time:day, event:name and event:props:model; metrics events and
// sum:tokens; the hours [from, to) (whole days unless hours); only the
// events that keep accepts.
type propQuery struct {
	dims     []string
	metrics  []string
	from, to time.Time
	hours    bool
	filters  string
	keep     func(pev) bool
	// byModel: the query reads the property family of model (dimension
	// or filter), which events without it are not in.
	byModel bool
}

func (pq propQuery) body() string {
	filters := pq.filters
	if filters == "" {
		filters = "[]"
	}
	var rng string
	if pq.hours {
		rng = jsonString([]string{pq.from.Format(time.RFC3339), pq.to.Add(-time.Hour).Format(time.RFC3339)})
	} else {
		rng = jsonString([]string{pq.from.Format(time.DateOnly), pq.to.AddDate(0, 0, -1).Format(time.DateOnly)})
	}
	return fmt.Sprintf(`{"metrics":%s,"dimensions":%s,"date_range":%s,"filters":%s}`,
		jsonString(pq.metrics), jsonString(nonNil(pq.dims)), rng, filters)
}

// expect returns the rows the model expects, ordered by their dimension
// values, as response.table renders them. A row exists when one of the
// metrics' families holds a counter for it.
func (pq propQuery) expect(evs []pev) []string {
	type acc struct {
		dims        []string
		events, sum int64
	}
	groups := map[string]*acc{}
	for _, e := range evs {
		if e.at.Before(pq.from) || !e.at.Before(pq.to) || (pq.keep != nil && !pq.keep(e)) {
			continue
		}
		countsEvents := slices.Contains(pq.metrics, "events") && (!pq.byModel || e.model != "")
		countsSum := slices.Contains(pq.metrics, "sum:tokens") && e.hasTokens
		if !countsEvents && !countsSum {
			continue
		}
		dims := make([]string, len(pq.dims))
		for i, d := range pq.dims {
			switch d {
			case "time:hour":
				dims[i] = e.at.UTC().Truncate(time.Hour).Format(time.RFC3339)
			case "time:day":
				dims[i] = e.at.UTC().Format(time.DateOnly)
			case "event:name":
				dims[i] = e.typ
			case "event:props:model":
				dims[i] = e.model
			}
		}
		k := strings.Join(dims, "\x00")
		g := groups[k]
		if g == nil {
			g = &acc{dims: dims}
			groups[k] = g
		}
		if countsEvents {
			g.events += e.n
		}
		if countsSum {
			g.sum += e.n * e.tokens
		}
	}
	all := make([]*acc, 0, len(groups))
	for _, g := range groups {
		all = append(all, g)
	}
	// The API's default order: by time with a time dimension (which the
	// queries put first), else by the first metric, descending; the
	// dimensions break ties.
	first := func(g *acc) int64 {
		if pq.metrics[0] == "events" {
			return g.events
		}
		return g.sum
	}
	byTime := len(pq.dims) > 0 && strings.HasPrefix(pq.dims[0], "time:")
	slices.SortFunc(all, func(a, b *acc) int {
		if !byTime && first(a) != first(b) {
			return cmp.Compare(first(b), first(a))
		}
		return slices.Compare(a.dims, b.dims)
	})
	var out []string
	for _, g := range all {
		out = append(out, strings.Join(g.dims, "|")+" -> "+pq.metricValues(g.events, g.sum))
	}
	if len(pq.dims) == 0 && len(out) == 0 {
		out = []string{" -> " + pq.metricValues(0, 0)}
	}
	return out
}

func (pq propQuery) metricValues(events, sum int64) string {
	ms := make([]string, len(pq.metrics))
	for i, m := range pq.metrics {
		if m == "events" {
			ms[i] = strconv.FormatInt(events, 10)
		} else {
			ms[i] = strconv.FormatInt(sum, 10)
		}
	}
	return strings.Join(ms, ",")
}

var (
	pday1 = time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC)
	pday2 = time.Date(2026, 12, 1, 23, 59, 0, 0, time.UTC)
)

// propsA and propsB share types, values and buckets, so the same rows are
// split between PostgreSQL and Redis once A is flushed. Sums are negative
// too; "__other__" is the value the exporter counts a property's values
// over its cardinality cap under.
var (
	propsA = []pev{
		{typ: "generation", model: "gpt-4", plan: "pro", tokens: 120, hasTokens: true, at: pday1, n: 3},
		{typ: "generation", model: "claude", tokens: 80, hasTokens: true, at: pday1.Add(time.Hour), n: 2},
		{typ: "generation", model: "gpt-4", tokens: -50, hasTokens: true, at: pday2, n: 1},
		{typ: "refund", model: "gpt-4", tokens: -400, hasTokens: true, at: pday2, n: 2},
		{typ: "page_view", plan: "free", at: pday1, n: 7},
		{typ: "generation", model: "__other__", at: pday2, n: 4},
	}
	propsB = []pev{
		{typ: "generation", model: "gpt-4", tokens: 30, hasTokens: true, at: pday1, n: 2},
		{typ: "generation", model: "claude", plan: "pro", tokens: -10, hasTokens: true, at: pday1.Add(time.Hour), n: 1},
		{typ: "refund", model: "gpt-4", tokens: -1, hasTokens: true, at: pday2, n: 5},
		{typ: "page_view", at: pday2, n: 3},
		{typ: "generation", model: "__other__", at: pday2, n: 1},
		{typ: "generation", model: "mistral", at: pday2.Add(-time.Hour), n: 6},
	}
)

// propQueries are the queries checked at each state.
func propQueries() []propQuery {
	from := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 2)
	isGeneration := func(e pev) bool { return e.typ == "generation" }
	return []propQuery{
		// Breakdowns.
		{dims: []string{"time:day", "event:props:model"}, metrics: []string{"events"}, from: from, to: to, byModel: true},
		{dims: []string{"event:name", "event:props:model"}, metrics: []string{"events"}, from: from, to: to, byModel: true},
		{
			dims: []string{"time:hour", "event:props:model"}, metrics: []string{"events"}, from: from, to: to, byModel: true,
			filters: `[["is","event:name",["generation"]],["is_not","event:props:model",["__other__"]]]`,
			keep:    func(e pev) bool { return isGeneration(e) && e.model != "__other__" },
		},
		{
			dims: []string{"time:day", "event:name"}, metrics: []string{"events"}, from: from, to: to, byModel: true,
			filters: `[["is","event:props:model",["gpt-4","claude"]]]`,
			keep:    func(e pev) bool { return e.model == "gpt-4" || e.model == "claude" },
		},
		{
			metrics: []string{"events"}, from: pday1.Truncate(time.Hour), to: pday1.Truncate(time.Hour).Add(2 * time.Hour), hours: true, byModel: true,
			filters: `[["and",[["is_not","event:props:model",["claude"]]]]]`,
			keep:    func(e pev) bool { return e.model != "claude" },
		},
		// Sums, alone and with events (rows of two tables merged).
		{dims: []string{"time:day", "event:name"}, metrics: []string{"sum:tokens"}, from: from, to: to},
		{dims: []string{"time:day", "event:name"}, metrics: []string{"events", "sum:tokens"}, from: from, to: to},
		{
			dims: []string{"time:hour"}, metrics: []string{"sum:tokens", "events"}, from: from, to: to,
			filters: `[["is_not","event:name",["refund"]]]`,
			keep:    func(e pev) bool { return e.typ != "refund" },
		},
		{metrics: []string{"sum:tokens", "events"}, from: from, to: to},
		{metrics: []string{"sum:tokens"}, from: pday2.Truncate(time.Hour), to: pday2.Truncate(time.Hour).Add(time.Hour), hours: true},
	}
}

func checkProps(t *testing.T, base string, evs []pev, state string) {
	t.Helper()
	for _, pq := range propQueries() {
		status, resp := post(t.Context(), t, base, pq.body())
		require.Equal(t, http.StatusOK, status, "%s: %s: %s", state, pq.body(), resp.Error)
		assert.Equal(t, pq.expect(evs), resp.table(), "%s: %s", state, pq.body())
	}
}

// TestPropertiesAndSumsExact: property breakdowns and sums are exact while
// the counts are only in Redis, once they are in PostgreSQL, and while the
// same rows are split between both.
func TestPropertiesAndSumsExact(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	base := e.startQuery(nil)

	e.applyPevs(ctx, propsA)
	checkProps(t, base, propsA, "before any flush")
	e.flushOnce(ctx)
	checkProps(t, base, propsA, "after a flush")
	e.applyPevs(ctx, propsB)
	all := append(slices.Clone(propsA), propsB...)
	checkProps(t, base, all, "split between PostgreSQL and Redis")
	e.flushOnce(ctx)
	checkProps(t, base, all, "after the second flush")

	// Spot checks of the model itself, by hand.
	status, resp := post(ctx, t, base, `{"metrics":["events","sum:tokens"],"date_range":["2026-11-30","2026-12-01"],"dimensions":["event:name"],"order_by":[["event:name","asc"]]}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Equal(t, []string{
		"generation -> 20,520", // 3*120 + 2*80 - 50 + 2*30 - 10
		"page_view -> 10,0",
		"refund -> 7,-805", // 2*(-400) + 5*(-1)
	}, resp.table())
	assert.Equal(t, []any{"analytics_daily", "analytics_sum_daily"}, resp.Meta["tables"])

	// A property the data never saw: no rows; a sum never seen: zero.
	status, resp = post(ctx, t, base, `{"metrics":["events"],"date_range":"all","dimensions":["event:props:country"]}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Empty(t, resp.Results)
	status, resp = post(ctx, t, base, `{"metrics":["events"],"date_range":"all","filters":[["is","event:props:country",["FR"]]]}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Equal(t, []string{" -> 0"}, resp.table())
	status, resp = post(ctx, t, base, `{"metrics":["sum:cost"],"date_range":"all"}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Equal(t, []string{" -> 0"}, resp.table())
	// The other property is counted apart and never mixed in.
	status, resp = post(ctx, t, base, `{"metrics":["events"],"date_range":"all","dimensions":["event:props:plan"]}`)
	require.Equal(t, http.StatusOK, status, resp.Error)
	assert.Equal(t, []string{"free -> 7", "pro -> 4"}, resp.table())
	assert.Equal(t, []any{"analytics_property_daily"}, resp.Meta["tables"])
}

// TestSumOverflowIsReported: a sum over many rows that leaves 64 bits is a
// 400 naming the metric, whether Redis or PostgreSQL holds the rows.
func TestSumOverflowIsReported(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	base := e.startQuery(nil)
	for _, at := range []time.Time{pday1, pday2} {
		e.applyPevs(ctx, []pev{{typ: "big", tokens: math.MaxInt64 - 1, hasTokens: true, at: at, n: 1}})
	}
	check := func(state string) {
		status, resp := post(ctx, t, base, `{"metrics":["events","sum:tokens"],"date_range":"all"}`)
		assert.Equal(t, http.StatusBadRequest, status, state)
		assert.Equal(t, "metrics[1]", resp.Field, state)
		assert.Contains(t, resp.Error, "exceeds 64 bits", state)
		status, resp = post(ctx, t, base, `{"metrics":["sum:tokens"],"date_range":"all","dimensions":["time:day"]}`)
		require.Equal(t, http.StatusOK, status, "%s: %s", state, resp.Error)
		want := strconv.FormatInt(math.MaxInt64-1, 10)
		assert.Equal(t, []string{"2026-11-30 -> " + want, "2026-12-01 -> " + want}, resp.table(), state)
	}
	check("in Redis")
	e.flushOnce(ctx)
	check("in PostgreSQL")
}

// TestPropertiesAndSumsBadRequests: each combination the tables cannot
// answer is a 400 that names the field and says why.
func TestPropertiesAndSumsBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	base := e.startQuery(nil)
	tests := []struct {
		name, body, field, reason string
	}{
		{"empty property dimension", `{"metrics":["events"],"date_range":"day","dimensions":["event:props:"]}`, "dimensions[0]", "names no property"},
		{"empty property filter", `{"metrics":["events"],"date_range":"day","filters":[["is","event:props:",["a"]]]}`, "filters[0][1]", "names no property"},
		{"empty sum attribute", `{"metrics":["sum:"],"date_range":"day"}`, "metrics[0]", "names no attribute"},
		{"sum listed twice", `{"metrics":["sum:a","events","sum:a"],"date_range":"day"}`, "metrics[2]", "twice"},
		{"visitors by property", `{"metrics":["events","visitors"],"date_range":"day","dimensions":["event:props:model"]}`, "metrics[1]", "per-user data, which holds no event properties"},
		{"visitors filtered by property", `{"metrics":["visitors"],"date_range":"day","filters":[["is","event:props:model",["a"]]]}`, "metrics[0]", "holds no event properties"},
		{"property with user", `{"metrics":["events"],"date_range":"day","dimensions":["event:props:model","event:user"]}`, "dimensions[1]", "per-user data holds no event properties"},
		{"property with user filter", `{"metrics":["events"],"date_range":"day","dimensions":["event:props:model"],"filters":[["is","event:user",["u"]]]}`, "filters[0][1]", "cannot be combined with event:user"},
		{"two properties", `{"metrics":["events"],"date_range":"day","dimensions":["event:props:model","event:props:plan"]}`, "dimensions[1]", "one at a time"},
		{"two properties in filters", `{"metrics":["events"],"date_range":"day","dimensions":["event:props:model"],"filters":[["and",[["is","event:props:plan",["pro"]]]]]}`, "filters[0][1][0][1]", "one at a time"},
		{"sum by user", `{"metrics":["sum:tokens"],"date_range":"day","dimensions":["event:user"]}`, "metrics[0]", "not per user"},
		{"sum filtered by user", `{"metrics":["events","sum:tokens"],"date_range":"day","filters":[["is_not","event:user",["u"]]]}`, "metrics[1]", "not per user"},
		{"sum by property", `{"metrics":["sum:tokens"],"date_range":"day","dimensions":["event:props:model"]}`, "metrics[0]", "not per property value"},
		{"sum filtered by property", `{"metrics":["events","sum:tokens"],"date_range":"day","filters":[["is","event:props:model",["a"]]]}`, "metrics[1]", "not per property value"},
		{"order by a sum not asked", `{"metrics":["events"],"date_range":"day","order_by":[["sum:tokens","desc"]]}`, "order_by[0][0]", "neither a metric nor a dimension"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, resp := post(t.Context(), t, base, tt.body)
			assert.Equal(t, http.StatusBadRequest, status, resp.Error)
			assert.Equal(t, tt.field, resp.Field, resp.Error)
			assert.Contains(t, resp.Error, tt.reason)
			assert.True(t, strings.HasPrefix(resp.Error, tt.field+": "), "the message starts with the field: %s", resp.Error)
		})
	}
}

// TestPropertiesAndSumsWhileFlushesRun: breakdowns and sums stay exact
// while pg_flush flushes back to back in small batches. Bounded: 4 rounds
// of at most 30 queries or 10 s each.
func TestPropertiesAndSumsWhileFlushesRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnvWith(t, map[string]any{"interval": "5ms", "batch_size": 7, "apply_workers": 2})
	base := e.startQuery(nil)
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	queries := []propQuery{
		{dims: []string{"time:day", "event:props:model"}, metrics: []string{"events"}, from: start, to: start.AddDate(0, 0, 3), byModel: true},
		{dims: []string{"event:name"}, metrics: []string{"events", "sum:tokens"}, from: start, to: start.AddDate(0, 0, 3)},
	}
	var all []pev
	sawMoves := 0
	for round := range 4 {
		var batch []pev
		for i := range 40 {
			batch = append(batch, pev{
				typ:   fmt.Sprintf("type%d", i%3),
				model: fmt.Sprintf("m%d", (i+round)%4), tokens: int64(i%9 - 4), hasTokens: i%5 != 0,
				at: start.Add(time.Duration((i*11+round*7)%(3*24)) * time.Hour),
				n:  int64(1 + i%3),
			})
		}
		e.applyPevs(ctx, batch)
		all = append(all, batch...)
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; i < 30 && time.Now().Before(deadline); i++ {
			pq := queries[i%len(queries)]
			status, resp := post(ctx, t, base, pq.body())
			if isRetryLater(status, resp) {
				continue
			}
			require.Equal(t, http.StatusOK, status, resp.Error)
			require.Equal(t, pq.expect(all), resp.table(), "round %d, query %d", round, i)
			if resp.Meta["attempts"].(float64) > 1 || resp.Meta["staging_entries"].(float64) > 0 {
				sawMoves++
			}
		}
	}
	t.Logf("answers read while flushes moved counts: %d", sawMoves)
	require.Eventually(t, func() bool {
		return e.rdb.ZCard(ctx, e.schema.PendingKey()).Val() == 0 && e.rdb.ZCard(ctx, e.schema.StagingIndexKey()).Val() == 0
	}, 10*time.Second, 10*time.Millisecond)
	for _, pq := range queries {
		status, resp := post(ctx, t, base, pq.body())
		require.Equal(t, http.StatusOK, status, resp.Error)
		assert.Equal(t, pq.expect(all), resp.table())
	}
}
