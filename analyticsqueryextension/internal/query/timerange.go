package query

import (
	"encoding/json"
	"time"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// TimeRange is the hours a query covers: [From, To) in whole hours since the
// Unix epoch (UTC), or everything when All is set.
type TimeRange struct {
	From, To int64
	All      bool
}

// DayAligned reports whether the range covers whole UTC days, which the
// daily families need.
func (r TimeRange) DayAligned() bool {
	return r.All || (floorMod(r.From, 24) == 0 && floorMod(r.To, 24) == 0)
}

// contains reports whether the bucket that starts at hour lies in the range.
func (r TimeRange) contains(hour int64) bool {
	return r.All || (hour >= r.From && hour < r.To)
}

// Earliest and latest hours a range may name: the key format has four-digit
// years.
var (
	minRangeHour = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 3600
	maxRangeHour = time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).Unix() / 3600
)

// parseDateRange reads "date_range": a pair of ISO dates (both days
// included) or of RFC 3339 times (the hours from the one holding the first
// to the one holding the second, both included), or "day" (today, UTC),
// "7d" and "30d" (the last 7 or 30 days, today included) or "all".
func parseDateRange(raw json.RawMessage, now time.Time) (TimeRange, *FieldError) {
	const field = "date_range"
	if len(raw) == 0 || string(raw) == "null" {
		return TimeRange{}, fieldErr(field, `is required: a pair of dates ["2026-12-01", "2026-12-07"] or of RFC 3339 times, or "day", "7d", "30d" or "all"`)
	}
	today := floorDiv(now.Unix(), 86400) * 24
	var name string
	if err := json.Unmarshal(raw, &name); err == nil {
		switch name {
		case "day":
			return TimeRange{From: today, To: today + 24}, nil
		case "7d":
			return TimeRange{From: today - 6*24, To: today + 24}, nil
		case "30d":
			return TimeRange{From: today - 29*24, To: today + 24}, nil
		case "all":
			return TimeRange{All: true}, nil
		default:
			return TimeRange{}, fieldErr(field, `unknown range %q; expected "day", "7d", "30d", "all" or a pair of dates or times`, name)
		}
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return TimeRange{}, fieldErr(field, `must be "day", "7d", "30d", "all" or a pair of ISO dates or RFC 3339 times`)
	}
	var (
		r      TimeRange
		isDate [2]bool
		hours  [2]int64
	)
	for i, s := range pair {
		if d, err := time.Parse(time.DateOnly, s); err == nil {
			isDate[i] = true
			hours[i] = protocol.HourOf(d)
			continue
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return TimeRange{}, fieldErr(fieldIndex(field, i), "%q is neither an ISO date (2026-12-01) nor an RFC 3339 time (2026-12-01T10:00:00Z)", s)
		}
		hours[i] = protocol.HourOf(t)
	}
	if isDate[0] != isDate[1] {
		return TimeRange{}, fieldErr(field, "must be two dates or two times, not one of each")
	}
	r.From = hours[0]
	if isDate[1] {
		r.To = hours[1] + 24
	} else {
		r.To = hours[1] + 1
	}
	if r.From >= r.To {
		return TimeRange{}, fieldErr(field, "the start %q is after the end %q", pair[0], pair[1])
	}
	if r.From < minRangeHour || r.To-1 > maxRangeHour {
		return TimeRange{}, fieldErr(field, "must lie within the years 0001 to 9999")
	}
	return r, nil
}

// buckets returns how many buckets of g the range spans (at most limit+1,
// so that a huge range costs nothing); 0 for an unbounded range.
func (r TimeRange) buckets(g Granularity, limit int) int {
	if r.All {
		return 0
	}
	switch g {
	case Hour:
		return int(min(r.To-r.From, int64(limit)+1))
	case Day:
		return int(min((r.To-r.From+23)/24, int64(limit)+1))
	}
	n := 0
	for b := bucketStart(g, r.From); b < r.To && n <= limit; b = nextBucket(g, b) {
		n++
	}
	return n
}

// bucketStart returns the start (in hours since the epoch) of the bucket of
// granularity g that holds hour. Weeks start on Monday (ISO 8601), as
// PostgreSQL's date_trunc('week', ...) does; everything is UTC.
func bucketStart(g Granularity, hour int64) int64 {
	day := floorDiv(hour, 24)
	switch g {
	case Hour:
		return hour
	case Week:
		// 1970-01-01 was a Thursday: three days after a Monday.
		return (day - floorMod(day+3, 7)) * 24
	case Month:
		t := time.Unix(day*86400, 0).UTC()
		return protocol.HourOf(time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC))
	default:
		return day * 24
	}
}

// nextBucket returns the start of the bucket after the one starting at b.
func nextBucket(g Granularity, b int64) int64 {
	switch g {
	case Hour:
		return b + 1
	case Week:
		return b + 7*24
	case Month:
		t := time.Unix(b*3600, 0).UTC()
		return protocol.HourOf(t.AddDate(0, 1, 0))
	default:
		return b + 24
	}
}

// formatBucket renders a bucket start as the API returns it: an ISO date
// for days and coarser, an RFC 3339 UTC time for hours.
func formatBucket(g Granularity, hour int64) string {
	t := time.Unix(hour*3600, 0).UTC()
	if g == Hour {
		return t.Format(time.RFC3339)
	}
	return t.Format(time.DateOnly)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }
