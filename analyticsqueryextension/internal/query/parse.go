package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits bound what a query may ask for.
type Limits struct {
	// MaxLimit is the largest "limit", and the limit of a query without one.
	MaxLimit int
	// MaxCells bounds the time buckets of a query's range and its result
	// rows before the limit.
	MaxCells int
}

// request is the JSON body of POST /api/v2/query.
type request struct {
	Metrics    []string          `json:"metrics"`
	DateRange  json.RawMessage   `json:"date_range"`
	Dimensions []string          `json:"dimensions"`
	Filters    []json.RawMessage `json:"filters"`
	OrderBy    []json.RawMessage `json:"order_by"`
	Limit      *int              `json:"limit"`
}

// echo is the normalized query returned with the results.
type echo struct {
	Metrics    []string    `json:"metrics"`
	DateRange  any         `json:"date_range"`
	Dimensions []string    `json:"dimensions"`
	Filters    []any       `json:"filters"`
	OrderBy    [][2]string `json:"order_by"`
	Limit      int         `json:"limit"`
}

// Parse reads and validates a query. now is the clock of relative ranges
// ("day", "7d"). Every error is a *FieldError that names the field.
func Parse(body io.Reader, now time.Time, lim Limits) (*Query, error) {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, decodeError(err)
	}
	if dec.More() {
		return nil, fieldErr("body", "must hold one JSON object")
	}
	return parseRequest(&req, now, lim)
}

// decodeError turns a JSON decoding error into a FieldError.
func decodeError(err error) *FieldError {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return fieldErr(field, "must be %s, got a JSON %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		name, _ = strconv.Unquote(name)
		return fieldErr(name, "unknown field; expected metrics, date_range, dimensions, filters, order_by or limit")
	case errors.Is(err, io.EOF):
		return fieldErr("body", "is empty; expected a JSON object")
	default:
		return fieldErr("body", "is not valid JSON: %v", err)
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice":
		return "an array"
	case "string":
		return "a string"
	case "int":
		return "an integer"
	default:
		return "a " + goKind
	}
}

func parseRequest(req *request, now time.Time, lim Limits) (*Query, error) {
	q := &Query{}
	if err := q.parseMetrics(req.Metrics); err != nil {
		return nil, err
	}
	if err := q.parseDimensions(req.Dimensions); err != nil {
		return nil, err
	}
	r, ferr := parseDateRange(req.DateRange, now)
	if ferr != nil {
		return nil, ferr
	}
	q.Range = r
	q.echo.DateRange = echoRange(r)
	if err := q.parseFilters(req.Filters); err != nil {
		return nil, err
	}
	if err := q.parseOrder(req.OrderBy); err != nil {
		return nil, err
	}
	q.Limit = lim.MaxLimit
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > lim.MaxLimit {
			return nil, fieldErr("limit", "must be between 1 and %d, got %d", lim.MaxLimit, *req.Limit)
		}
		q.Limit = *req.Limit
	}
	q.echo.Limit = q.Limit
	if d, ok := q.timeDimension(); ok {
		if n := q.Range.buckets(d.Time, lim.MaxCells); n > lim.MaxCells {
			return nil, fieldErr("date_range", "spans more than %d buckets of %s (max_cells); narrow it or use a coarser time dimension", lim.MaxCells, d.Name)
		}
	}
	if _, err := newPlan(q); err != nil {
		return nil, err
	}
	return q, nil
}

// echoRange renders the resolved range as Plausible does: the first and the
// last second it covers, or "all".
func echoRange(r TimeRange) any {
	if r.All {
		return "all"
	}
	return [2]string{
		time.Unix(r.From*3600, 0).UTC().Format(time.RFC3339),
		time.Unix(r.To*3600-1, 0).UTC().Format(time.RFC3339),
	}
}

func (q *Query) parseMetrics(names []string) error {
	if len(names) == 0 {
		return fieldErr("metrics", "must list at least one of %s", quoteList(metricNames))
	}
	for i, n := range names {
		m, why := parseMetric(n)
		if why != "" {
			return fieldErr(fieldIndex("metrics", i), "%s", why)
		}
		if q.has(m) {
			return fieldErr(fieldIndex("metrics", i), "metric %q is listed twice", n)
		}
		q.Metrics = append(q.Metrics, m)
	}
	q.echo.Metrics = slices.Clone(names)
	return nil
}

func (q *Query) parseDimensions(names []string) error {
	for i, n := range names {
		field := fieldIndex("dimensions", i)
		var d Dimension
		if g, ok := timeDimensions[n]; ok {
			if _, dup := q.timeDimension(); dup {
				return fieldErr(field, "only one time dimension may be given")
			}
			d = Dimension{Name: n, Time: g}
		} else if a, ok := parseAttribute(n); ok {
			d = Dimension{Name: n, Attr: a}
		} else {
			return attributeError(field, "unknown dimension", n, slices.Sorted(maps.Keys(timeDimensions))...)
		}
		for _, prev := range q.Dimensions {
			if prev.Name == n {
				return fieldErr(field, "dimension %q is listed twice", n)
			}
		}
		q.Dimensions = append(q.Dimensions, d)
	}
	q.echo.Dimensions = slices.Clone(names)
	if q.echo.Dimensions == nil {
		q.echo.Dimensions = []string{}
	}
	return nil
}

// maxFilterValues bounds the values of one condition.
const maxFilterValues = 1000

func (q *Query) parseFilters(raw []json.RawMessage) error {
	for i, f := range raw {
		if err := q.parseFilter(f, fieldIndex("filters", i), 0); err != nil {
			return err
		}
	}
	q.echo.Filters = make([]any, len(raw))
	for i, f := range raw {
		q.echo.Filters[i] = f
	}
	return nil
}

// maxFilterDepth bounds nested "and" filters.
const maxFilterDepth = 8

// parseFilter reads ["is"|"is_not", attribute, [values]] or ["and",
// [filters]] into q.Filters, a conjunction.
func (q *Query) parseFilter(raw json.RawMessage, field string, depth int) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) == 0 {
		return fieldErr(field, `must be ["is", "event:name", ["a", "b"]], ["is_not", ...] or ["and", [filter, ...]]`)
	}
	var op string
	if err := json.Unmarshal(parts[0], &op); err != nil {
		return fieldErr(field+"[0]", "the operator must be a string")
	}
	switch op {
	case "and":
		if depth >= maxFilterDepth {
			return fieldErr(field, "filters nest deeper than %d levels", maxFilterDepth)
		}
		var subs []json.RawMessage
		if len(parts) != 2 || json.Unmarshal(parts[1], &subs) != nil || len(subs) == 0 {
			return fieldErr(field, `"and" takes one non-empty array of filters: ["and", [filter, ...]]`)
		}
		for j, s := range subs {
			if err := q.parseFilter(s, fmt.Sprintf("%s[1][%d]", field, j), depth+1); err != nil {
				return err
			}
		}
		return nil
	case "is", "is_not":
		if len(parts) != 3 {
			return fieldErr(field, "%q takes an attribute and an array of values: [%q, \"event:name\", [\"a\"]]", op, op)
		}
		var name string
		if err := json.Unmarshal(parts[1], &name); err != nil {
			return fieldErr(field+"[1]", "the attribute must be a string")
		}
		a, ok := parseAttribute(name)
		if !ok {
			return attributeError(field+"[1]", "cannot filter on", name)
		}
		var values []string
		if err := json.Unmarshal(parts[2], &values); err != nil || len(values) == 0 {
			return fieldErr(field+"[2]", "must be a non-empty array of strings")
		}
		if len(values) > maxFilterValues {
			return fieldErr(field+"[2]", "holds %d values; at most %d", len(values), maxFilterValues)
		}
		q.Filters = append(q.Filters, Condition{Attr: a, Negate: op == "is_not", Values: values, field: field + "[1]"})
		return nil
	default:
		return fieldErr(field+"[0]", "unknown filter operator %q; expected \"is\", \"is_not\" or \"and\"", op)
	}
}

func (q *Query) parseOrder(raw []json.RawMessage) error {
	q.echo.OrderBy = [][2]string{}
	for i, o := range raw {
		field := fieldIndex("order_by", i)
		var pair []string
		if err := json.Unmarshal(o, &pair); err != nil || len(pair) != 2 {
			return fieldErr(field, `must be a pair such as ["events", "desc"]`)
		}
		var term OrderTerm
		switch pair[1] {
		case "asc":
		case "desc":
			term.Desc = true
		default:
			return fieldErr(field+"[1]", "direction %q must be \"asc\" or \"desc\"", pair[1])
		}
		if m, why := parseMetric(pair[0]); why == "" && q.has(m) {
			term.Metric = m
		} else {
			term.Dimension = slices.IndexFunc(q.Dimensions, func(d Dimension) bool { return d.Name == pair[0] })
			if term.Dimension < 0 {
				return fieldErr(field+"[0]", "%q is neither a metric nor a dimension of this query", pair[0])
			}
		}
		q.Order = append(q.Order, term)
		q.echo.OrderBy = append(q.echo.OrderBy, [2]string{pair[0], pair[1]})
	}
	return nil
}

func fieldIndex(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }
