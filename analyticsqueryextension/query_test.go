package analyticsqueryextension

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	day1 = time.Date(2026, 11, 30, 9, 15, 0, 0, time.UTC) // a Monday
	day2 = time.Date(2026, 12, 1, 23, 59, 0, 0, time.UTC)
	day3 = time.Date(2026, 12, 7, 0, 5, 0, 0, time.UTC)
)

// batchA and batchB overlap: same users on the same days and types, so
// visitors must count a user once whether PostgreSQL or Redis holds it.
var (
	batchA = []ev{
		{"page_view", "alice", day1, 3},
		{"page_view", "bob", day1, 1},
		{"page_view", "", day1, 5},
		{"signup", "alice", day1, 1},
		{"page_view", "alice", day2, 2},
		{"page:view", "{bob}", day2, 4},
		{"page_view", "carol", day3, 1},
	}
	batchB = []ev{
		{"page_view", "alice", day1, 2},
		{"page_view", "dave", day1.Add(time.Hour), 1},
		{"signup", "bob", day2, 1},
		{"page:view", "{bob}", day2, 1},
		{"page_view", "carol", day3, 6},
		{"page_view", "", day3, 2},
	}
)

// modelQueries are the queries checked at each state; the time dimension
// comes first, so the API's default order is the model's.
func modelQueries() []struct {
	mq      modelQuery
	filters string
} {
	from, to := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	return []struct {
		mq      modelQuery
		filters string
	}{
		{mq: modelQuery{dims: []string{"time:day", "event:name"}, metrics: []string{"events", "visitors"}, from: from, to: to}},
		{mq: modelQuery{metrics: []string{"visitors", "events"}, from: from, to: to}},
		{mq: modelQuery{
			dims: []string{"time:hour"}, metrics: []string{"events"}, from: from, to: to,
			keep: func(e ev) bool { return e.typ == "page_view" },
		}, filters: `[["is","event:name",["page_view"]]]`},
		{mq: modelQuery{dims: []string{"time:week", "event:user"}, metrics: []string{"events", "visitors"}, from: from, to: to}},
		{
			mq: modelQuery{
				dims: []string{"time:month"}, metrics: []string{"visitors"}, from: from, to: to,
				keep: func(e ev) bool { return e.user != "alice" && e.typ != "signup" }, userFilter: true,
			},
			filters: `[["and",[["is_not","event:user",["alice"]],["is_not","event:name",["signup"]]]]]`,
		},
		{mq: modelQuery{dims: []string{"time:day"}, metrics: []string{"events"}, from: from.AddDate(0, 0, 1), to: from.AddDate(0, 0, 1)}},
		// Daily visitors come from the rollups: of any type, of each type,
		// of each of some types; filtered by type without grouping by it
		// they are counted from the per-user rows.
		{mq: modelQuery{dims: []string{"time:day"}, metrics: []string{"visitors"}, from: from, to: to}},
		{mq: modelQuery{dims: []string{"time:day", "event:name"}, metrics: []string{"visitors"}, from: from, to: to}},
		{
			mq: modelQuery{
				dims: []string{"time:day", "event:name"}, metrics: []string{"visitors", "events"}, from: from, to: to,
				keep: func(e ev) bool { return e.typ != "signup" },
			},
			filters: `[["is_not","event:name",["signup"]]]`,
		},
		{
			mq: modelQuery{
				dims: []string{"time:day"}, metrics: []string{"visitors"}, from: from, to: to,
				keep: func(e ev) bool { return e.typ == "page_view" || e.typ == "signup" },
			},
			filters: `[["is","event:name",["page_view","signup"]]]`,
		},
	}
}

// checkModel runs every model query and compares it with the model.
func checkModel(t *testing.T, base string, evs []ev, state string) {
	t.Helper()
	for _, tc := range modelQueries() {
		status, resp := post(t.Context(), t, base, tc.mq.body(tc.filters))
		require.Equal(t, http.StatusOK, status, "%s: %s: %s", state, tc.mq.body(tc.filters), resp.Error)
		assert.Equal(t, tc.mq.expect(evs), resp.table(), "%s: %s", state, tc.mq.body(tc.filters))
	}
}

// TestQueryExactBeforeAndAfterFlush: the numbers are exact while the counts
// are only in Redis, once they are in PostgreSQL, and while they are split
// between both (the same users and buckets on both sides).
func TestQueryExactBeforeAndAfterFlush(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	base := e.startQuery(nil)

	assert.Empty(t, getEventNames(ctx, t, base))
	e.apply(ctx, countsOf(batchA)...)
	checkModel(t, base, batchA, "before any flush")
	assert.Equal(t, []string{"page:view", "page_view", "signup"}, getEventNames(ctx, t, base))

	e.flushOnce(ctx)
	checkModel(t, base, batchA, "after a flush")

	e.apply(ctx, countsOf(batchB)...)
	all := append(append([]ev{}, batchA...), batchB...)
	checkModel(t, base, all, "split between PostgreSQL and Redis")

	e.flushOnce(ctx)
	checkModel(t, base, all, "after the second flush")

	// Which tables answered: daily visitors from a rollup, coarser buckets
	// and type filters without a type dimension from the per-user rows.
	for _, tc := range []struct {
		mq      modelQuery
		filters string
		tables  []any
	}{
		{modelQuery{dims: []string{"time:day"}, metrics: []string{"visitors"}}, "", []any{"analytics_visitors_daily", "analytics_user_daily"}},
		{
			modelQuery{dims: []string{"time:day", "event:name"}, metrics: []string{"events", "visitors"}},
			"",
			[]any{"analytics_daily", "analytics_type_visitors_daily", "analytics_user_daily"},
		},
		{modelQuery{dims: []string{"time:week"}, metrics: []string{"visitors"}}, "", []any{"analytics_user_daily"}},
		{modelQuery{dims: []string{"time:day"}, metrics: []string{"visitors"}}, `[["is","event:name",["signup"]]]`, []any{"analytics_user_daily"}},
	} {
		tc.mq.from, tc.mq.to = day1, day3
		status, resp := post(ctx, t, base, tc.mq.body(tc.filters))
		require.Equal(t, http.StatusOK, status, resp.Error)
		assert.Equal(t, tc.tables, resp.Meta["tables"], tc.mq.body(tc.filters))
	}

	assert.Equal(t, []string{"page:view", "page_view", "signup"}, getEventNames(ctx, t, base))
}
