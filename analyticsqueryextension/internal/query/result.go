package query

import (
	"cmp"
	"slices"
	"strings"
)

// rows orders the groups as the query asks and applies its limit; it also
// returns the number of rows before the limit. Without order_by, rows go by
// time with a time dimension, else by the first metric, descending; the
// dimensions, in order, break ties, so the order is always the same.
func rows(q *Query, groups map[string]*group) ([]Row, int) {
	all := make([]*group, 0, len(groups))
	for _, g := range groups {
		all = append(all, g)
	}
	order := q.Order
	if len(order) == 0 {
		if i := slices.IndexFunc(q.Dimensions, Dimension.IsTime); i >= 0 {
			order = []OrderTerm{{Dimension: i}}
		} else {
			order = []OrderTerm{{Metric: q.Metrics[0], Desc: true}}
		}
	}
	slices.SortFunc(all, func(a, b *group) int {
		for _, t := range order {
			var c int
			if t.Metric != "" {
				c = cmp.Compare(a.metric(t.Metric), b.metric(t.Metric))
			} else {
				c = strings.Compare(a.dims[t.Dimension], b.dims[t.Dimension])
			}
			if t.Desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return slices.Compare(a.dims, b.dims)
	})
	total := len(all)
	all = all[:min(len(all), q.Limit)]
	out := make([]Row, len(all))
	for i, g := range all {
		m := make([]int64, len(q.Metrics))
		for j, metric := range q.Metrics {
			m[j] = g.metric(metric)
		}
		out[i] = Row{Dimensions: g.dims, Metrics: m}
	}
	return out, total
}

func (g *group) metric(m Metric) int64 {
	if m == Visitors {
		return g.visitors
	}
	if _, ok := m.SumAttribute(); ok {
		return g.sums[m]
	}
	return g.events
}
