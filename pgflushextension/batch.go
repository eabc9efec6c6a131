package pgflushextension

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// families lists the counter families in the order they are upserted. A fixed
// order (and rows sorted by primary key inside each family) makes concurrent
// flushers lock rows in the same order, so they do not deadlock.
var families = [...]protocol.Family{protocol.Daily, protocol.Hourly, protocol.UserDaily}

// Keys that rows are aggregated by (the tables' primary keys). Day is days
// and hour is hours since the Unix epoch, UTC.
type (
	dayKey struct {
		eventType string
		day       int32
	}
	hourKey struct {
		eventType string
		hour      int64
	}
	userDayKey struct {
		userID    string
		eventType string
		day       int32
	}
)

// familyRows holds one family's rows as columns, sorted by primary key, ready
// to be sent as arrays. userIDs is set for the user_daily family only; days
// for daily and user_daily, hours for hourly.
type familyRows struct {
	family     protocol.Family
	userIDs    []string
	eventTypes []string
	days       []int32
	hours      []int64
	counts     []int64
}

func (r *familyRows) len() int { return len(r.counts) }

// parsedBatch is the content of one staging entry, aggregated by primary key.
type parsedBatch struct {
	// counters is the number of staged fields that go to PostgreSQL.
	counters   int
	daily      map[dayKey]int64
	hourly     map[hourKey]int64
	userDaily  map[userDayKey]int64
	quarantine []protocol.QuarantineOp
	// quarantineSample holds a few quarantined keys with the reason, for the log.
	quarantineSample []string
}

// maxQuarantineSample bounds the keys listed in the quarantine log line.
const maxQuarantineSample = 10

// parseBatch parses the staged fields of one flush and sums their counts by
// primary key. A field that cannot be stored is never dropped: it becomes a
// quarantine write (HINCRBY of its count under the raw key, or HSET of the raw
// value when it is not an integer).
func parseBatch(schema protocol.Schema, fields []protocol.StagedField) *parsedBatch {
	b := &parsedBatch{
		daily:  make(map[dayKey]int64),
		hourly: make(map[hourKey]int64),
		// Most counters of a batch are per user: sized once, not grown.
		userDaily: make(map[userDayKey]int64, len(fields)),
	}
	for _, f := range fields {
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if err != nil {
			b.addQuarantine(protocol.QuarantineOp{Field: f.Key, Value: f.Value}, "value is not an integer")
			continue
		}
		c, err := schema.Parse(f.Key)
		if err != nil {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, err.Error())
			continue
		}
		if !storableText(c.EventType) || !storableText(c.UserID) {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, "not valid UTF-8 text for PostgreSQL")
			continue
		}
		b.counters++
		switch c.Family {
		case protocol.Daily:
			b.daily[dayKey{c.EventType, int32(c.Day())}] += n //nolint:gosec // key schema years are 0000-9999: days fit in int32
		case protocol.Hourly:
			b.hourly[hourKey{c.EventType, c.Hour}] += n
		case protocol.UserDaily:
			b.userDaily[userDayKey{c.UserID, c.EventType, int32(c.Day())}] += n //nolint:gosec // key schema years are 0000-9999: days fit in int32
		}
	}
	return b
}

// storableText reports whether s can be stored in a PostgreSQL text column
// (UTF-8 without NUL); key schema keys may carry any bytes.
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func (b *parsedBatch) addQuarantine(op protocol.QuarantineOp, reason string) {
	b.quarantine = append(b.quarantine, op)
	if len(b.quarantineSample) < maxQuarantineSample {
		b.quarantineSample = append(b.quarantineSample, strconv.Quote(op.Field)+": "+reason)
	}
}

// rows returns the family's rows sorted by primary key.
func (b *parsedBatch) rows(f protocol.Family) *familyRows {
	r := &familyRows{family: f}
	switch f {
	case protocol.Daily:
		rows := sortedRows(b.daily, dayKey.compare)
		r.eventTypes, r.days, r.counts = make([]string, len(rows)), make([]int32, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.eventTypes[i], r.days[i], r.counts[i] = row.key.eventType, row.key.day, row.count
		}
	case protocol.Hourly:
		rows := sortedRows(b.hourly, hourKey.compare)
		r.eventTypes, r.hours, r.counts = make([]string, len(rows)), make([]int64, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.eventTypes[i], r.hours[i], r.counts[i] = row.key.eventType, row.key.hour, row.count
		}
	case protocol.UserDaily:
		rows := sortedRows(b.userDaily, userDayKey.compare)
		r.userIDs, r.eventTypes, r.days, r.counts = make([]string, len(rows)), make([]string, len(rows)), make([]int32, len(rows)), make([]int64, len(rows))
		for i, row := range rows {
			r.userIDs[i], r.eventTypes[i], r.days[i], r.counts[i] = row.key.userID, row.key.eventType, row.key.day, row.count
		}
	}
	return r
}

// keyCount is one aggregated row: a primary key and its count.
type keyCount[K comparable] struct {
	key   K
	count int64
}

// Primary key orders. Each returns at the first column that differs (cmp.Or
// would compare every column).
func (k dayKey) compare(o dayKey) int {
	if n := strings.Compare(k.eventType, o.eventType); n != 0 {
		return n
	}
	return cmp.Compare(k.day, o.day)
}

func (k hourKey) compare(o hourKey) int {
	if n := strings.Compare(k.eventType, o.eventType); n != 0 {
		return n
	}
	return cmp.Compare(k.hour, o.hour)
}

func (k userDayKey) compare(o userDayKey) int {
	if n := strings.Compare(k.userID, o.userID); n != 0 {
		return n
	}
	return dayKey{k.eventType, k.day}.compare(dayKey{o.eventType, o.day})
}

// sortedRows returns m's entries sorted by key with compare.
func sortedRows[K comparable](m map[K]int64, compare func(a, b K) int) []keyCount[K] {
	rows := make([]keyCount[K], 0, len(m))
	for k, n := range m {
		rows = append(rows, keyCount[K]{k, n})
	}
	slices.SortFunc(rows, func(a, b keyCount[K]) int { return compare(a.key, b.key) })
	return rows
}
