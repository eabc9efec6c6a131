package query

import (
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// source is one counter family: its PostgreSQL table (pgflushextension's
// schema) and, in Redis, its counters that still wait for a flush.
type source struct {
	family protocol.Family
	table  string
	// hourly: the table's time column is "hour" (timestamptz, one row per
	// hour); otherwise "date" (date, one row per day).
	hourly bool
	// columns holds the column of each attribute the family carries.
	columns map[AttrKind]string
	// keyColumn is the column of the property (property families) or the
	// summed attribute (sum families), which a part fixes; "" for the
	// other families.
	keyColumn string
}

// sources in order of preference: the first that can answer a metric is
// used (the smallest table).
var sources = []*source{
	{family: protocol.Daily, table: "analytics_daily", columns: map[AttrKind]string{EventName: "event_type"}},
	{family: protocol.Hourly, table: "analytics_hourly", hourly: true, columns: map[AttrKind]string{EventName: "event_type"}},
	{family: protocol.UserDaily, table: "analytics_user_daily", columns: map[AttrKind]string{EventName: "event_type", EventUser: "user_id"}},
}

// propertySources answer events broken down or filtered by a property
// (event:props:<key>), daily first.
var propertySources = []*source{
	{
		family: protocol.PropertyDaily, table: "analytics_property_daily", keyColumn: "property",
		columns: map[AttrKind]string{EventName: "event_type", EventProp: "value"},
	},
	{
		family: protocol.PropertyHourly, table: "analytics_property_hourly", hourly: true, keyColumn: "property",
		columns: map[AttrKind]string{EventName: "event_type", EventProp: "value"},
	},
}

// sumSources answer the sum metrics (sum:<attribute>), daily first.
var sumSources = []*source{
	{family: protocol.SumDaily, table: "analytics_sum_daily", keyColumn: "attribute", columns: map[AttrKind]string{EventName: "event_type"}},
	{family: protocol.SumHourly, table: "analytics_sum_hourly", hourly: true, keyColumn: "attribute", columns: map[AttrKind]string{EventName: "event_type"}},
}

// sumColumn is the sum families' value column, which sum metrics add up.
const sumColumn = `"sum"`

// The visitors rollups (pgflushextension's rollup.go), kept by the flush in
// the transaction that upserts analytics_user_daily: the distinct users of
// each day, and of each event type and day. Distinct users do not add up
// across days or types, so they answer only groups of one day and, with
// event:name filters, one type (visitorsRollup).
var (
	visitorsDaily     = &source{family: protocol.UserDaily, table: "analytics_visitors_daily", columns: map[AttrKind]string{}}
	typeVisitorsDaily = &source{family: protocol.UserDaily, table: "analytics_type_visitors_daily", columns: map[AttrKind]string{EventName: "event_type"}}
)

// visitorsRollup returns the rollup that holds PostgreSQL's visitors of
// each group of q, or nil when the groups need a distinct count over the
// per-user rows: q's groups must be days (a time:day dimension) and, when q
// groups or filters by event name, single event types (an event:name
// dimension); no other attribute may appear.
func visitorsRollup(q *Query) *source {
	td, ok := q.timeDimension()
	if !ok || td.Time != Day {
		return nil
	}
	byName := false
	for _, d := range q.Dimensions {
		switch {
		case d.IsTime():
		case d.Attr.Kind == EventName:
			byName = true
		default:
			return nil
		}
	}
	for _, c := range q.Filters {
		if c.Attr.Kind != EventName || !byName {
			return nil
		}
	}
	if byName {
		return typeVisitorsDaily
	}
	return visitorsDaily
}

// userColumn is the per-user family's user column, which visitors counts.
const userColumn = "user_id"

// supports reports whether s can answer for attributes attrs at hourly
// resolution (needHours) or daily.
func (s *source) supports(attrs []Attribute, needHours bool) bool {
	if needHours && !s.hourly {
		return false
	}
	for _, a := range attrs {
		if _, ok := s.columns[a.Kind]; !ok {
			return false
		}
	}
	return true
}

// dateExpr is the source's day as a SQL date (UTC).
func (s *source) dateExpr() string {
	if s.hourly {
		return "(hour AT TIME ZONE 'UTC')::date"
	}
	return "date"
}

// bucketExpr is the SQL of the start of g's bucket, in hours since the
// Unix epoch (int8), the unit the Go side computes from Redis counters with
// bucketStart.
func (s *source) bucketExpr(g Granularity) string {
	if g == Hour {
		return "(extract(epoch FROM hour)::int8 / 3600)"
	}
	d := s.dateExpr()
	switch g {
	case Week:
		d = "date_trunc('week', " + d + "::timestamp)::date"
	case Month:
		d = "date_trunc('month', " + d + "::timestamp)::date"
	}
	return "((" + d + " - DATE '1970-01-01')::int8 * 24)"
}

// rangeSQL returns the WHERE condition of range r, adding its parameters to
// args: it compares the time column itself, so an index on it is used.
func (s *source) rangeSQL(r TimeRange, args *sqlArgs) string {
	if r.All {
		return "TRUE"
	}
	if s.hourly {
		return "hour >= to_timestamp(" + args.add(r.From*3600) + "::int8) AND hour < to_timestamp(" + args.add(r.To*3600) + "::int8)"
	}
	// Days since the epoch, sent as int8: parseDateRange keeps them within
	// the years 0001 to 9999, which PostgreSQL's int4 cast takes.
	return "date >= DATE '1970-01-01' + " + args.add(floorDiv(r.From, 24)) + "::int4 AND date < DATE '1970-01-01' + " +
		args.add(floorDiv(r.To, 24)) + "::int4"
}
