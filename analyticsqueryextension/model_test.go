package analyticsqueryextension

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ev is n events of typ by user ("" for none) at at: the test's model of
// what was sent, from which it computes the expected answers independently
// of the implementation.
type ev struct {
	typ, user string
	at        time.Time
	n         int64
}

// counts returns the exporter's increments for the events.
func countsOf(evs []ev) [][]count {
	out := make([][]count, len(evs))
	for i, e := range evs {
		out[i] = events(e.typ, e.user, e.at, e.n)
	}
	return out
}

// modelQuery is what the model answers: dimensions among time:day,
// time:hour, time:week, time:month, event:name, event:user; metrics events
// and visitors; the days [from, to]; only events that keep accepts.
type modelQuery struct {
	dims     []string
	metrics  []string
	from, to time.Time // whole days, both included
	keep     func(ev) bool
	// userFilter: keep tests the user (the query filters on event:user).
	userFilter bool
}

// expect returns the rows the model expects, as response.table renders
// them, ordered by their dimension values (the API's order when the time
// dimension comes first).
func (mq modelQuery) expect(evs []ev) []string {
	type acc struct {
		dims   []string
		events int64
		users  map[string]bool
	}
	groups := map[string]*acc{}
	// Events grouped or filtered by user come from per-user data, which
	// events without a user are not in.
	usesUserData := slices.Contains(mq.dims, "event:user") || mq.userFilter
	for _, e := range evs {
		day := time.Date(e.at.Year(), e.at.Month(), e.at.Day(), 0, 0, 0, 0, time.UTC)
		if day.Before(mq.from) || day.After(mq.to) {
			continue
		}
		if mq.keep != nil && !mq.keep(e) {
			continue
		}
		if usesUserData && e.user == "" {
			continue
		}
		dims := make([]string, len(mq.dims))
		for i, d := range mq.dims {
			switch d {
			case "time:hour":
				dims[i] = e.at.UTC().Truncate(time.Hour).Format(time.RFC3339)
			case "time:day":
				dims[i] = day.Format(time.DateOnly)
			case "time:week":
				dims[i] = day.AddDate(0, 0, -((int(day.Weekday()) + 6) % 7)).Format(time.DateOnly)
			case "time:month":
				dims[i] = time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
			case "event:name":
				dims[i] = e.typ
			case "event:user":
				dims[i] = e.user
			}
		}
		k := strings.Join(dims, "\x00")
		g := groups[k]
		if g == nil {
			g = &acc{dims: dims, users: map[string]bool{}}
			groups[k] = g
		}
		g.events += e.n
		if e.user != "" {
			g.users[e.user] = true
		}
	}
	all := make([]*acc, 0, len(groups))
	for _, g := range groups {
		all = append(all, g)
	}
	slices.SortFunc(all, func(a, b *acc) int { return slices.Compare(a.dims, b.dims) })
	var out []string
	for _, g := range all {
		ms := make([]string, len(mq.metrics))
		for i, m := range mq.metrics {
			if m == "visitors" {
				ms[i] = strconv.Itoa(len(g.users))
			} else {
				ms[i] = strconv.FormatInt(g.events, 10)
			}
		}
		out = append(out, strings.Join(g.dims, "|")+" -> "+strings.Join(ms, ","))
	}
	if len(mq.dims) == 0 && len(out) == 0 {
		zeros := make([]string, len(mq.metrics))
		for i := range zeros {
			zeros[i] = "0"
		}
		out = []string{" -> " + strings.Join(zeros, ",")}
	}
	return out
}

// body renders the query as the API's JSON, with filters given as JSON.
func (mq modelQuery) body(filters string) string {
	if filters == "" {
		filters = "[]"
	}
	return fmt.Sprintf(`{"metrics":%s,"dimensions":%s,"date_range":[%q,%q],"filters":%s}`,
		jsonString(mq.metrics), jsonString(nonNil(mq.dims)), mq.from.Format(time.DateOnly), mq.to.Format(time.DateOnly), filters)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
