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
var families = [...]protocol.Family{
	protocol.Daily, protocol.Hourly, protocol.UserDaily,
	protocol.PropertyDaily, protocol.PropertyHourly, protocol.SumDaily, protocol.SumHourly,
}

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
	propDayKey struct {
		eventType string
		property  string
		value     string
		day       int32
	}
	propHourKey struct {
		eventType string
		property  string
		value     string
		hour      int64
	}
	sumDayKey struct {
		eventType string
		attribute string
		day       int32
	}
	sumHourKey struct {
		eventType string
		attribute string
		hour      int64
	}
)

// familyRows holds one family's rows as columns, sorted by primary key, ready
// to be sent as arrays. userIDs is set for the user_daily family only;
// attributes (the property, or the summed attribute) for the property and sum
// families; values (the property value) for the property families; days for
// the daily families, hours for the hourly ones. counts holds the counts, or
// the sums of the sum families.
type familyRows struct {
	family     protocol.Family
	userIDs    []string
	eventTypes []string
	attributes []string
	values     []string
	days       []int32
	hours      []int64
	counts     []int64
}

func (r *familyRows) len() int { return len(r.counts) }

// parsedBatch is the content of one staging entry, aggregated by primary key.
type parsedBatch struct {
	// counters is the number of staged fields that go to PostgreSQL.
	counters  int
	daily     map[dayKey]int64
	hourly    map[hourKey]int64
	userDaily map[userDayKey]int64
	// The property and sum families, made on their first row.
	propDaily  map[propDayKey]int64
	propHourly map[propHourKey]int64
	sumDaily   map[sumDayKey]int64
	sumHourly  map[sumHourKey]int64
	quarantine []protocol.QuarantineOp
	// quarantineSample holds a few quarantined keys with the reason, for the log.
	quarantineSample []string
}

// maxQuarantineSample bounds the keys listed in the quarantine log line.
const maxQuarantineSample = 10

// Quarantine reasons (the log sample's text).
const (
	reasonNotInteger  = "value is not an integer"
	reasonNotText     = "not valid UTF-8 text for PostgreSQL"
	reasonNotPositive = "count is not positive"
	reasonOverflow    = "adding it to the batch's row overflows int64"
)

// parseBatch parses the staged fields of one flush and sums their counts by
// primary key. A field that cannot be stored is never dropped: it becomes a
// quarantine write (HINCRBY of its count under the raw key, or HSET of the raw
// value when it is not an integer). A property count must be positive; a sum
// may be any int64, 0 and negative included.
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
			b.addQuarantine(protocol.QuarantineOp{Field: f.Key, Value: f.Value}, reasonNotInteger)
			continue
		}
		c, err := schema.Parse(f.Key)
		if err != nil {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, err.Error())
			continue
		}
		if reason := b.add(c, n); reason != "" {
			b.addQuarantine(protocol.QuarantineOp{Incr: true, Field: f.Key, Value: f.Value}, reason)
			continue
		}
		b.counters++
	}
	return b
}

// add adds n to the row of c, or returns why it cannot.
func (b *parsedBatch) add(c protocol.Counter, n int64) string {
	if !storableText(c.EventType) || !storableText(c.UserID) || !storableText(c.Attribute) || !storableText(c.Value) {
		return reasonNotText
	}
	day := int32(c.Day()) //nolint:gosec // key schema years are 0000-9999: days fit in int32
	ok := true
	switch c.Family {
	case protocol.Daily:
		ok = addTo(b.daily, dayKey{c.EventType, day}, n)
	case protocol.Hourly:
		ok = addTo(b.hourly, hourKey{c.EventType, c.Hour}, n)
	case protocol.UserDaily:
		ok = addTo(b.userDaily, userDayKey{c.UserID, c.EventType, day}, n)
	case protocol.PropertyDaily:
		if n <= 0 {
			return reasonNotPositive
		}
		b.propDaily = makeIfNil(b.propDaily)
		ok = addTo(b.propDaily, propDayKey{c.EventType, c.Attribute, c.Value, day}, n)
	case protocol.PropertyHourly:
		if n <= 0 {
			return reasonNotPositive
		}
		b.propHourly = makeIfNil(b.propHourly)
		ok = addTo(b.propHourly, propHourKey{c.EventType, c.Attribute, c.Value, c.Hour}, n)
	case protocol.SumDaily:
		b.sumDaily = makeIfNil(b.sumDaily)
		ok = addTo(b.sumDaily, sumDayKey{c.EventType, c.Attribute, day}, n)
	case protocol.SumHourly:
		b.sumHourly = makeIfNil(b.sumHourly)
		ok = addTo(b.sumHourly, sumHourKey{c.EventType, c.Attribute, c.Hour}, n)
	default:
		return "unknown counter family " + c.Family.String()
	}
	if !ok {
		return reasonOverflow
	}
	return ""
}

func makeIfNil[K comparable](m map[K]int64) map[K]int64 {
	if m == nil {
		return make(map[K]int64)
	}
	return m
}

// addTo adds n to m[k] unless the sum would overflow int64 (which needs the
// same primary key twice in one batch: distinct keys of one staging entry
// name distinct rows, so it never happens with the exporter's keys).
func addTo[K comparable](m map[K]int64, k K, n int64) bool {
	old, found := m[k]
	if !found {
		m[k] = n
		return true
	}
	sum := old + n
	if (n > 0 && sum < old) || (n < 0 && sum > old) {
		return false
	}
	m[k] = sum
	return true
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
	case protocol.PropertyDaily:
		rows := sortedRows(b.propDaily, propDayKey.compare)
		r.makeColumns(len(rows), true, false)
		for i, row := range rows {
			r.eventTypes[i], r.attributes[i], r.values[i], r.days[i], r.counts[i] = row.key.eventType, row.key.property, row.key.value, row.key.day, row.count
		}
	case protocol.PropertyHourly:
		rows := sortedRows(b.propHourly, propHourKey.compare)
		r.makeColumns(len(rows), true, true)
		for i, row := range rows {
			r.eventTypes[i], r.attributes[i], r.values[i], r.hours[i], r.counts[i] = row.key.eventType, row.key.property, row.key.value, row.key.hour, row.count
		}
	case protocol.SumDaily:
		rows := sortedRows(b.sumDaily, sumDayKey.compare)
		r.makeColumns(len(rows), false, false)
		for i, row := range rows {
			r.eventTypes[i], r.attributes[i], r.days[i], r.counts[i] = row.key.eventType, row.key.attribute, row.key.day, row.count
		}
	case protocol.SumHourly:
		rows := sortedRows(b.sumHourly, sumHourKey.compare)
		r.makeColumns(len(rows), false, true)
		for i, row := range rows {
			r.eventTypes[i], r.attributes[i], r.hours[i], r.counts[i] = row.key.eventType, row.key.attribute, row.key.hour, row.count
		}
	}
	return r
}

// makeColumns allocates the columns of n rows of a property or sum family:
// eventTypes, attributes and counts, values when asked, and hours or days.
func (r *familyRows) makeColumns(n int, values, hourly bool) {
	r.eventTypes, r.attributes, r.counts = make([]string, n), make([]string, n), make([]int64, n)
	if values {
		r.values = make([]string, n)
	}
	if hourly {
		r.hours = make([]int64, n)
	} else {
		r.days = make([]int32, n)
	}
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

func (k propDayKey) compare(o propDayKey) int {
	if n := compareLabels(k.eventType, o.eventType, k.property, o.property, k.value, o.value); n != 0 {
		return n
	}
	return cmp.Compare(k.day, o.day)
}

func (k propHourKey) compare(o propHourKey) int {
	if n := compareLabels(k.eventType, o.eventType, k.property, o.property, k.value, o.value); n != 0 {
		return n
	}
	return cmp.Compare(k.hour, o.hour)
}

func (k sumDayKey) compare(o sumDayKey) int {
	if n := compareLabels(k.eventType, o.eventType, k.attribute, o.attribute, "", ""); n != 0 {
		return n
	}
	return cmp.Compare(k.day, o.day)
}

func (k sumHourKey) compare(o sumHourKey) int {
	if n := compareLabels(k.eventType, o.eventType, k.attribute, o.attribute, "", ""); n != 0 {
		return n
	}
	return cmp.Compare(k.hour, o.hour)
}

// compareLabels compares (a1, a2, a3) with (b1, b2, b3) in order.
func compareLabels(a1, b1, a2, b2, a3, b3 string) int {
	if n := strings.Compare(a1, b1); n != 0 {
		return n
	}
	if n := strings.Compare(a2, b2); n != 0 {
		return n
	}
	return strings.Compare(a3, b3)
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
