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
	// topUsers: the query asks for the top users by events, which
	// PostgreSQL answers (topUsers) instead of every user's count.
	topUsers bool
}

// part is one family read for some of the query's metrics.
type part struct {
	src      *source
	events   bool
	visitors bool
	// key fixes the source's keyColumn: the property of a property
	// breakdown, the attribute of a sum.
	key string
	// sum is the sum metric the part answers, or "".
	sum Metric
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
	prop, err := propertyOf(q)
	if err != nil {
		return nil, err
	}
	if err := checkSums(q, attrs); err != nil {
		return nil, err
	}
	if prop != "" {
		if err := p.addPropertyPart(q, prop, attrs, needHours); err != nil {
			return nil, err
		}
	} else if q.has(Events) {
		i := slices.IndexFunc(sources, func(s *source) bool { return s.supports(attrs, needHours) })
		if i < 0 {
			return nil, hourlyConflict(q, needHours, attrs)
		}
		p.parts = append(p.parts, &part{src: sources[i], events: true})
	}
	for _, m := range q.Metrics {
		if attr, ok := m.SumAttribute(); ok {
			i := slices.IndexFunc(sumSources, func(s *source) bool { return s.supports(attrs, needHours) })
			if i < 0 {
				return nil, hourlyConflict(q, needHours, attrs)
			}
			p.parts = append(p.parts, &part{src: sumSources[i], key: attr, sum: m})
		}
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
	p.topUsers = topUsersShape(q) && len(p.parts) == 1 && p.parts[0].src == sources[len(sources)-1] &&
		p.parts[0].events && !p.parts[0].visitors && p.parts[0].sum == "" && p.parts[0].key == ""
	return p, nil
}

// propertyOf returns the property that the query's event:props dimension
// and filters name ("" for none): one at most, since the property families
// count each property on its own.
func propertyOf(q *Query) (string, *FieldError) {
	var key, first string
	check := func(a Attribute, field string) *FieldError {
		if a.Kind != EventProp {
			return nil
		}
		if key == "" {
			key, first = a.Key, a.Name()
			return nil
		}
		if a.Key != key {
			return fieldErr(field, "properties are counted one at a time: %s cannot be combined with %s in one query", a.Name(), first)
		}
		return nil
	}
	for i, d := range q.Dimensions {
		if err := check(d.Attr, fieldIndex("dimensions", i)); err != nil {
			return "", err
		}
	}
	for _, c := range q.Filters {
		if err := check(c.Attr, c.field); err != nil {
			return "", err
		}
	}
	return key, nil
}

// addPropertyPart plans a query that breaks down or filters by property
// prop: events from the property families; visitors and event:user need
// per-user data, which holds no properties.
func (p *plan) addPropertyPart(q *Query, prop string, attrs []Attribute, needHours bool) *FieldError {
	name := propsPrefix + prop
	if i := slices.Index(q.Metrics, Visitors); i >= 0 {
		return fieldErr(fieldIndex("metrics", i),
			"visitors are counted from per-user data, which holds no event properties: %s cannot be combined with visitors; use events", name)
	}
	if field, ok := userField(q); ok {
		return fieldErr(field, "per-user data holds no event properties: %s cannot be combined with event:user", name)
	}
	if !q.has(Events) {
		return nil
	}
	i := slices.IndexFunc(propertySources, func(s *source) bool { return s.supports(attrs, needHours) })
	if i < 0 {
		return hourlyConflict(q, needHours, attrs)
	}
	p.parts = append(p.parts, &part{src: propertySources[i], events: true, key: prop})
	return nil
}

// userField returns the request field of the query's first event:user
// dimension or filter.
func userField(q *Query) (string, bool) {
	if i := slices.IndexFunc(q.Dimensions, func(d Dimension) bool { return d.Attr.Kind == EventUser }); i >= 0 {
		return fieldIndex("dimensions", i), true
	}
	if i := slices.IndexFunc(q.Filters, func(c Condition) bool { return c.Attr.Kind == EventUser }); i >= 0 {
		return q.Filters[i].field, true
	}
	return "", false
}

// checkSums rejects what the sum families cannot answer: sums are kept per
// event type and time bucket only.
func checkSums(q *Query, attrs []Attribute) *FieldError {
	for i, m := range q.Metrics {
		if _, ok := m.SumAttribute(); !ok {
			continue
		}
		for _, a := range attrs {
			switch a.Kind {
			case EventUser:
				return fieldErr(fieldIndex("metrics", i), "sums are kept per event type, not per user: %s cannot be combined with event:user", m)
			case EventProp:
				return fieldErr(fieldIndex("metrics", i), "sums are kept per event type, not per property value: %s cannot be combined with %s", m, a.Name())
			}
		}
	}
	return nil
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
	if c.Family != pt.src.family || !q.Range.contains(c.Hour) || c.Attribute != pt.key {
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
	if pt.src.keyColumn != "" {
		conds = append(conds, pt.src.keyColumn+" = "+args.add(pt.key)+"::text")
	}
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
	if pt.sum != "" {
		// numeric, as text: a sum over many rows may not fit 64 bits, which
		// the merge reports instead of PostgreSQL failing the cast.
		sel = append(sel, "COALESCE(sum("+sumColumn+"), 0)::text")
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
		if pt.rollup != nil && !slices.Contains(t, pt.rollup.table) {
			t = append(t, pt.rollup.table)
		}
		if !slices.Contains(t, pt.src.table) {
			t = append(t, pt.src.table)
		}
	}
	return t
}
