package sdkload

import (
	"errors"
	"strings"
	"time"
)

// dayLayout is how Expected writes a UTC day.
const dayLayout = "2006-01-02"

// EventDay identifies one row of analytics_daily.
type EventDay struct {
	EventType string
	Day       string // UTC, 2006-01-02
}

// daySeparator joins Day and EventType in the text form of an EventDay; a
// day never contains it.
const daySeparator = "|"

var errEventDayText = errors.New(`event day must be "2006-01-02|event type"`)

// MarshalText writes "2006-01-02|event type" (a JSON object key).
func (k EventDay) MarshalText() ([]byte, error) {
	return []byte(k.Day + daySeparator + k.EventType), nil
}

// UnmarshalText reads what MarshalText writes.
func (k *EventDay) UnmarshalText(text []byte) error {
	day, eventType, ok := strings.Cut(string(text), daySeparator)
	if !ok || len(day) != len(dayLayout) {
		return errEventDayText
	}
	k.Day, k.EventType = day, eventType
	return nil
}

// Expected is the number of records emitted per event type and UTC day of
// their timestamp: what the collector must count when it receives all of
// them.
type Expected map[EventDay]int64

// utcDay is the UTC day of ts as Expected writes it.
func utcDay(ts time.Time) string { return ts.UTC().Format(dayLayout) }

func (e Expected) merge(o Expected) {
	for k, n := range o {
		e[k] += n
	}
}

// Total is the number of records e counts.
func (e Expected) Total() int64 {
	var n int64
	for _, v := range e {
		n += v
	}
	return n
}
