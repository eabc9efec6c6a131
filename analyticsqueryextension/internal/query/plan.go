package query

import (
	"slices"
	"strconv"
	"strings"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// plan says which counter family answers each metric of a query, and
// builds the SQL and the Redis-side filter and grouping of each.
type plan struct {
	q     *Query
	parts []*part
}

// part is one family read for some of the query's metrics.
type part struct {
	src      *source
	events   bool
	visitors bool
	// rollup, when set, is the table that holds PostgreSQL's distinct
	// users of src per group (visitors only): aggregateSQL reads it instead
	// of counting src's rows. src still gives the Redis counters and the
	// lookup of the users PostgreSQL holds.
	rollup *source
}

// newPlan chooses the families: events from the smallest table that holds
// every attribute the query groups or filters by at the resolution it
// needs, visitors from the per-user family (daily only).
func newPlan(q *Query) (*plan, error) {
	var attrs []Attribute
	for _, d := range q.Dimensions {
		if !d.IsTime() {
			attrs = append(attrs, d.Attr)
		}
	}
	for _, c := range q.Filters {
		attrs = append(attrs, c.Attr)
	}
	td, hasTime := q.timeDimension()
	needHours := (hasTime && td.Time == Hour) || !q.Range.DayAligned()
	p := &plan{q: q}
	if q.has(Events) {
		i := slices.IndexFunc(sources, func(s *source) bool { return s.supports(attrs, needHours) })
		if i < 0 {
			return nil, hourlyConflict(q, needHours, attrs)
		}
		p.parts = append(p.parts, &part{src: sources[i], events: true})
	}
	if q.has(Visitors) {
		if needHours {
			return nil, fieldErr(fieldIndex("metrics", slices.Index(q.Metrics, Visitors)),
				"visitors are counted from per-user data, which is daily: use time:day, time:week or time:month (or no time dimension) and a date_range of whole days")
		}
		users := sources[len(sources)-1]
		if len(p.parts) == 1 && p.parts[0].src == users {
			p.parts[0].visitors = true
		} else {
			p.parts = append(p.parts, &part{src: users, visitors: true, rollup: visitorsRollup(q)})
		}
	}
	return p, nil
}

// hourlyConflict explains why no family answers: an attribute that only a
// daily family holds, asked at hourly resolution.
func hourlyConflict(q *Query, needHours bool, attrs []Attribute) *FieldError {
	field := "date_range"
	if i := slices.IndexFunc(q.Dimensions, func(d Dimension) bool { return d.Time == Hour }); i >= 0 {
		field = fieldIndex("dimensions", i)
	}
	names := make([]string, 0, len(attrs))
	for _, a := range attrs {
		if !slices.Contains(names, a.Name()) {
			names = append(names, a.Name())
		}
	}
	if needHours {
		return fieldErr(field, "per-user data is daily: %s cannot be combined with time:hour or a date_range that does not cover whole days", strings.Join(names, ", "))
	}
	return fieldErr("dimensions", "no table holds %s together", strings.Join(names, ", "))
}

// keep reports whether the Redis counter c counts for part pt: its family,
// within the range, passing every filter.
func (pt *part) keep(q *Query, c protocol.Counter) bool {
	if c.Family != pt.src.family || !q.Range.contains(c.Hour) {
		return false
	}
	for _, cond := range q.Filters {
		v, ok := cond.Attr.valueOf(c)
		if !ok || !cond.matches(v) {
			return false
		}
	}
	return true
}

// partOf returns the part that counter c counts for, or nil.
func (p *plan) partOf(c protocol.Counter) *part {
	for _, pt := range p.parts {
		if pt.keep(p.q, c) {
			return pt
		}
	}
	return nil
}

// groupOf returns the dimension values of counter c, as the API renders
// them.
func (p *plan) groupOf(c protocol.Counter) []string {
	vals := make([]string, len(p.q.Dimensions))
	for i, d := range p.q.Dimensions {
		if d.IsTime() {
			vals[i] = formatBucket(d.Time, bucketStart(d.Time, c.Hour))
		} else {
			vals[i], _ = d.Attr.valueOf(c)
		}
	}
	return vals
}

// sqlArgs collects the parameters of one statement.
type sqlArgs []any

// add appends v and returns its placeholder.
func (a *sqlArgs) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// where returns the WHERE clause of pt: the range and the filters.
func (pt *part) where(q *Query, args *sqlArgs) string {
	conds := []string{pt.src.rangeSQL(q.Range, args)}
	for _, c := range q.Filters {
		col := pt.src.columns[c.Attr.Kind]
		expr := col + " = ANY(" + args.add(c.Values) + "::text[])"
		if c.Negate {
			expr = "NOT (" + expr + ")"
		}
		conds = append(conds, expr)
	}
	return strings.Join(conds, " AND ")
}

// dimensionSQL returns the select expressions of the query's dimensions on
// pt's table: the bucket start in hours (int8) or the attribute's column
// (text).
func (pt *part) dimensionSQL(q *Query) []string {
	exprs := make([]string, len(q.Dimensions))
	for i, d := range q.Dimensions {
		if d.IsTime() {
			exprs[i] = pt.src.bucketExpr(d.Time)
		} else {
			exprs[i] = pt.src.columns[d.Attr.Kind]
		}
	}
	return exprs
}

// aggregateSQL is the statement that computes pt's metrics per group from
// PostgreSQL, at most maxRows+1 groups (one more than allowed reveals a
// query over the bound).
func (pt *part) aggregateSQL(q *Query, maxRows int) (string, []any) {
	var args sqlArgs
	dims := pt.dimensionSQL(q)
	sel := slices.Clone(dims)
	if pt.events {
		sel = append(sel, "COALESCE(sum(count), 0)::int8")
	}
	if pt.visitors {
		sel = append(sel, "count(DISTINCT "+userColumn+")::int8")
	}
	table := pt.src.table
	if pt.rollup != nil {
		// One row per group and day, and only daily groups: its count.
		sel = append(slices.Clone(dims), "COALESCE(sum(visitors), 0)::int8")
		table = pt.rollup.table
	}
	var b strings.Builder
	b.WriteString("SELECT " + strings.Join(sel, ", ") + " FROM " + table + " WHERE " + pt.where(q, &args))
	if len(dims) > 0 {
		b.WriteString(" GROUP BY " + groupByOrdinals(len(dims)))
	}
	b.WriteString(" LIMIT " + args.add(int64(maxRows)+1))
	return b.String(), args
}

// usersSQL is the statement that finds which of users PostgreSQL holds in
// each group of pt: their (group, user) pairs.
func (pt *part) usersSQL(q *Query, users []string) (string, []any) {
	var args sqlArgs
	dims := pt.dimensionSQL(q)
	sel := append(slices.Clone(dims), userColumn)
	sql := "SELECT DISTINCT " + strings.Join(sel, ", ") + " FROM " + pt.src.table + " WHERE " + pt.where(q, &args) +
		" AND " + userColumn + " = ANY(" + args.add(users) + "::text[])"
	return sql, args
}

func groupByOrdinals(n int) string {
	ords := make([]string, n)
	for i := range n {
		ords[i] = strconv.Itoa(i + 1)
	}
	return strings.Join(ords, ", ")
}

// tables lists the tables the plan reads, for the response's meta.
func (p *plan) tables() []string {
	t := make([]string, 0, len(p.parts)+1)
	for _, pt := range p.parts {
		if pt.rollup != nil {
			t = append(t, pt.rollup.table)
		}
		t = append(t, pt.src.table)
	}
	return t
}
