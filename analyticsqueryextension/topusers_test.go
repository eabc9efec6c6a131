package analyticsqueryextension

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// topModel returns the model's top k users by events (ties by user id,
// ascending) as response.table renders them, and how many users match.
func topModel(evs []ev, mq modelQuery, k int) ([]string, int) {
	mq.dims, mq.metrics = []string{"event:user"}, []string{"events"}
	type row struct {
		user string
		n    int64
	}
	var all []row
	for _, line := range mq.expect(evs) {
		user, n, _ := strings.Cut(line, " -> ")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			panic(err)
		}
		all = append(all, row{user, v})
	}
	slices.SortFunc(all, func(a, b row) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.user, b.user)) })
	out := make([]string, 0, k)
	for _, r := range all[:min(k, len(all))] {
		out = append(out, fmt.Sprintf("%s -> %d", r.user, r.n))
	}
	return out, len(all)
}

// TestTopUsersAboveMaxCells: the top users by events are exact although the
// range holds ten times max_cells users, with counts in PostgreSQL only, in
// Redis only and in both (users that reach the top only with their Redis
// counts, ties at the boundary, ids whose byte order differs from a
// language's collation), before and after a flush. Any other shape over as
// many users still gets the 400.
func TestTopUsersAboveMaxCells(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newEnv(t)
	base := e.startQuery(func(c *Config) { c.MaxCells, c.MaxLimit = 50, 10 })
	from, to := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

	// 500 users in PostgreSQL, with 1 to 37 events: the highest counts are
	// shared by a dozen users each.
	var stored []ev
	for i := range 500 {
		n := int64(i%37 + 1)
		stored = append(stored, ev{"page_view", fmt.Sprintf("u%03d", i), day1, n - n/3}, ev{"signup", fmt.Sprintf("u%03d", i), day2, n / 3})
	}
	stored = append(stored,
		ev{"page_view", "Zed", day1, 37}, ev{"page_view", "alpha", day2, 37},
		ev{"page_view", "Zoe", day1, 36}, ev{"page_view", "beta", day3, 36},
		ev{"page_view", "u010", from.AddDate(0, 0, -1), 500}, // outside the range
	)
	e.apply(ctx, countsOf(stored)...)
	e.flushOnce(ctx)

	pending := []ev{
		{"page_view", "u035", day3, 1},                    // 36 + 1: ties the top
		{"signup", "u100", day2, 10},                      // 27 + 10: ties the top
		{"page_view", "u001", day1, 60},                   // 2 + 60: reaches the top only with Redis
		{"page_view", "new-big", day3, 100},               // only in Redis, first
		{"page_view", "A-new", day2, 37},                  // only in Redis, ties the top
		{"signup", "new-small", day2, 1},                  // only in Redis, far from the top
		{"page_view", "u036", day3, 2},                    // 37 + 2
		{"page_view", "u499", day1.AddDate(0, 0, -3), 90}, // outside the range
	}
	e.apply(ctx, countsOf(pending)...)
	all := append(slices.Clone(stored), pending...)

	queries := []struct {
		body string
		mq   modelQuery
		k    int
	}{
		{body: `{"metrics":["events"],"dimensions":["event:user"],"order_by":[["events","desc"]],"limit":10}`, k: 10},
		{body: `{"metrics":["events"],"dimensions":["event:user"],"limit":7}`, k: 7},
		{body: `{"metrics":["events"],"dimensions":["event:user"],"order_by":[["events","desc"],["event:user","asc"]],"limit":1}`, k: 1},
		{
			body: `{"metrics":["events"],"dimensions":["event:user"],"order_by":[["events","desc"]],"limit":10,"filters":[["is","event:name",["signup"]]]}`,
			mq:   modelQuery{keep: func(e ev) bool { return e.typ == "signup" }}, k: 10,
		},
		{
			body: `{"metrics":["events"],"dimensions":["event:user"],"order_by":[["events","desc"]],"limit":10,"filters":[["is_not","event:name",["signup"]]]}`,
			mq:   modelQuery{keep: func(e ev) bool { return e.typ != "signup" }}, k: 10,
		},
	}
	check := func(state string) {
		t.Helper()
		for _, q := range queries {
			body := strings.Replace(q.body, "{", fmt.Sprintf(`{"date_range":[%q,%q],`, from.Format(time.DateOnly), to.Format(time.DateOnly)), 1)
			q.mq.from, q.mq.to = from, to
			want, total := topModel(all, q.mq, q.k)
			status, resp := post(ctx, t, base, body)
			require.Equal(t, http.StatusOK, status, "%s: %s: %s", state, body, resp.Error)
			assert.Equal(t, want, resp.table(), "%s: %s", state, body)
			assert.InDelta(t, total, resp.Meta["total_rows"], 0, "%s: %s", state, body)
			assert.Greater(t, total, 50, "the range holds more users than max_cells")
		}

		body := fmt.Sprintf(`{"metrics":["events","visitors"],"dimensions":["event:user"],"order_by":[["events","desc"]],"limit":10,"date_range":[%q,%q]}`,
			from.Format(time.DateOnly), to.Format(time.DateOnly))
		status, resp := post(ctx, t, base, body)
		assert.Equal(t, http.StatusBadRequest, status, "%s: %s", state, body)
		assert.Equal(t, "dimensions", resp.Field, state)
		assert.Contains(t, resp.Error, "max_cells", state)
	}
	check("split between PostgreSQL and Redis")
	e.flushOnce(ctx)
	check("after the flush")
}
