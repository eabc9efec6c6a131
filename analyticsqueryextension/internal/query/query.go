// Package query parses, plans and runs the analytics_query extension's
// queries: a Plausible Stats API v2 shaped request becomes a Query, a Query
// a plan over the counter families (one PostgreSQL table each, and the
// counters of that family that still wait in Redis), and Run reads both
// stores consistently (read.go).
//
// Adding a dimension or a filter attribute means: an attribute kind in
// attribute.go, the column of each table that holds it and its value in a
// Redis counter (sources.go). Parsing, planning, the SQL and the merge take
// it from there. Property breakdowns (event:props:<key>) and sums
// (sum:<attribute>) read families whose rows also carry a key (the property
// or the summed attribute): a part of the plan fixes it (plan.go).
package query

import (
	"fmt"
	"slices"
	"strings"
)

// Metric is a requested metric, by its name in requests and responses.
type Metric string

const (
	// Events is the sum of the counts.
	Events Metric = "events"
	// Visitors is the number of distinct users (per-user data is daily).
	Visitors Metric = "visitors"
)

// sumPrefix starts the name of a sum metric: sum:<attribute> is the sum of
// the integer attribute's values (the sum families).
const sumPrefix = "sum:"

// metricNames are the metric names a request may use, for error messages.
var metricNames = []string{string(Events), sumPrefix + "<attribute>", string(Visitors)}

// String returns the metric's name in requests and responses.
func (m Metric) String() string { return string(m) }

// SumAttribute returns the attribute a sum metric sums, and whether m is a
// sum metric.
func (m Metric) SumAttribute() (string, bool) { return strings.CutPrefix(string(m), sumPrefix) }

// parseMetric returns the metric named name, or why there is none.
func parseMetric(name string) (Metric, string) {
	switch m := Metric(name); m {
	case Events, Visitors:
		return m, ""
	}
	if attr, ok := Metric(name).SumAttribute(); ok {
		if attr == "" {
			return "", fmt.Sprintf("metric %q names no attribute; expected sum:<attribute>, e.g. \"sum:tokens\"", name)
		}
		return Metric(name), ""
	}
	return "", fmt.Sprintf("unknown metric %q; expected one of %s", name, quoteList(metricNames))
}

// Granularity is the bucket size of a time dimension.
type Granularity uint8

const (
	// NoTime: the dimension is not a time dimension.
	NoTime Granularity = iota
	Hour
	Day
	Week
	Month
)

// Dimension is a requested dimension: a time bucket or an attribute.
type Dimension struct {
	// Name is as requested ("time:day", "event:name").
	Name string
	// Time is set for a time dimension; Attr otherwise.
	Time Granularity
	Attr Attribute
}

// IsTime reports whether d is a time dimension.
func (d Dimension) IsTime() bool { return d.Time != NoTime }

var timeDimensions = map[string]Granularity{
	"time:hour": Hour, "time:day": Day, "time:week": Week, "time:month": Month,
}

// Condition is one filter condition: the attribute is (or, Negate, is not)
// one of Values.
type Condition struct {
	Attr   Attribute
	Negate bool
	Values []string
	// field is the request field that names the attribute, for errors.
	field string
}

// matches reports whether value satisfies c.
func (c Condition) matches(value string) bool {
	return slices.Contains(c.Values, value) != c.Negate
}

// OrderTerm orders the results by a metric or a dimension.
type OrderTerm struct {
	// Metric is set (not "") when the term orders by a metric; Dimension
	// (an index into Query.Dimensions) otherwise.
	Metric    Metric
	Dimension int
	Desc      bool
}

// Query is a validated request.
type Query struct {
	Metrics    []Metric
	Dimensions []Dimension
	Range      TimeRange
	// Filters hold a conjunction of conditions.
	Filters []Condition
	// Order is the requested order, empty for the default (time ascending
	// with a time dimension, else the first metric descending).
	Order []OrderTerm
	Limit int

	// echo is the normalized request, returned with the results.
	echo echo
}

// timeDimension returns the query's time dimension, if any.
func (q *Query) timeDimension() (Dimension, bool) {
	for _, d := range q.Dimensions {
		if d.IsTime() {
			return d, true
		}
	}
	return Dimension{}, false
}

// has reports whether the query asks for metric m.
func (q *Query) has(m Metric) bool {
	return slices.Contains(q.Metrics, m)
}

// FieldError is a bad request: the request field (a JSON path such as
// "dimensions[1]") and why it is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// quoteList formats names for an error message: "a", "b" or "c".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
