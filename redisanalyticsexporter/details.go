package redisanalyticsexporter

import (
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// Properties and sums: what an event adds beyond its count. A configured
// property counts the event once more under (type, property, value, hour); a
// configured sum adds the attribute's integer value under (type, attribute,
// hour). Both follow their record through the same entries, markers and
// pushes as its count, so they are exactly-once where the count is.

// valueDropReason says why a property or sum value was not counted (its
// event still is); its String is the "reason" of the values_dropped metric.
type valueDropReason uint8

const (
	// valueInvalid: a property value longer than 512 bytes, not valid UTF-8
	// or holding a NUL byte.
	valueInvalid valueDropReason = iota
	// valueNotInteger: a sum attribute that is not an integer (a string, a
	// bool, a fractional or out-of-range double...).
	valueNotInteger
	// valueSumOverflow: adding the value would overflow the sum's 64 bits.
	valueSumOverflow
	numValueDropReasons
)

func (r valueDropReason) String() string {
	switch r {
	case valueInvalid:
		return "invalid_value"
	case valueNotInteger:
		return "not_integer"
	case valueSumOverflow:
		return "sum_overflow"
	default:
		return "unknown"
	}
}

// propBucket is a property counter of one hour; its strings point into the
// pdata or the config.
type propBucket struct {
	typ, prop, value string
	hour             int64
}

// sumBucket is a sum counter of one hour.
type sumBucket struct {
	typ, attr string
	hour      int64
}

// sumAmount is a sum and the number of values it adds up.
type sumAmount struct {
	sum, n int64
}

// add adds o to a; false (a unchanged) when the sum would overflow.
func (a *sumAmount) add(o sumAmount) bool {
	s, ok := addInt64(a.sum, o.sum)
	if !ok {
		return false
	}
	a.sum, a.n = s, a.n+o.n
	return true
}

// addInt64 returns a+b, and false when it overflows. math.MinInt64 counts
// as an overflow too: Redis could not undo an increment by it (DECRBY of
// -2^63 overflows), so the apply script would not be all or nothing.
func addInt64(a, b int64) (int64, bool) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) || s == math.MinInt64 {
		return 0, false
	}
	return s, true
}

type (
	propCount struct {
		propBucket
		n int64
	}
	sumCount struct {
		sumBucket
		sumAmount
	}
)

// detailCounter gathers the property counts and sums of one resource
// entry's records (identified or anonymous, like pairCounter).
type detailCounter struct {
	props      map[propBucket]int64
	sums       map[sumBucket]sumAmount
	valueDrops [numValueDropReasons]int64
}

func (d *detailCounter) reset() {
	clear(d.props)
	clear(d.sums)
	d.valueDrops = [numValueDropReasons]int64{}
}

func (d *detailCounter) reusable() bool {
	return len(d.props) <= maxPooledEntries && len(d.sums) <= maxPooledEntries
}

// take moves the counts into en and empties d.
func (d *detailCounter) take(en *entryCounts) {
	if len(d.props) > 0 {
		en.props = make([]propCount, 0, len(d.props))
		for b, n := range d.props {
			en.props = append(en.props, propCount{propBucket: b, n: n})
		}
	}
	if len(d.sums) > 0 {
		en.sums = make([]sumCount, 0, len(d.sums))
		for b, a := range d.sums {
			en.sums = append(en.sums, sumCount{sumBucket: b, sumAmount: a})
		}
	}
	en.valueDrops = d.valueDrops
	d.reset()
}

// hasDetails reports whether events have properties or sums to count.
func (m *mapper) hasDetails() bool { return len(m.props) > 0 || len(m.sums) > 0 }

// details counts ev's properties and sums, looked up in attrs in order (the
// record's, its span's, its resource's).
func (m *mapper) details(d *detailCounter, ev event, attrs ...pcommon.Map) {
	for i := range m.props {
		p := &m.props[i]
		value, found := propertyValue(p.Attribute, attrs)
		switch {
		case !found || value == "":
			if p.Default == "" {
				continue
			}
			value = p.Default
		case !validValue(value):
			d.valueDrops[valueInvalid]++
			continue
		}
		if d.props == nil {
			d.props = make(map[propBucket]int64)
		}
		d.props[propBucket{typ: ev.typ, prop: p.Attribute, value: value, hour: ev.hour}]++
	}
	for i := range m.sums {
		attr := m.sums[i].Attribute
		v, found := lookup(attr, attrs)
		if !found {
			continue
		}
		n, ok := integerValue(v)
		if !ok {
			d.valueDrops[valueNotInteger]++
			continue
		}
		if d.sums == nil {
			d.sums = make(map[sumBucket]sumAmount)
		}
		b := sumBucket{typ: ev.typ, attr: attr, hour: ev.hour}
		a := d.sums[b]
		if !a.add(sumAmount{sum: n, n: 1}) {
			d.valueDrops[valueSumOverflow]++
			continue
		}
		d.sums[b] = a
	}
}

// lookup returns the first value of key among attrs.
func lookup(key string, attrs []pcommon.Map) (pcommon.Value, bool) {
	for _, m := range attrs {
		if m.Len() == 0 {
			continue
		}
		if v, ok := m.Get(key); ok {
			return v, true
		}
	}
	return pcommon.Value{}, false
}

// propertyValue returns the canonical string form of key's value
// (pcommon.Value.AsString: strings as they are, integers in decimal, doubles
// in their shortest form, booleans as true/false, bytes in base64, maps and
// slices as JSON).
func propertyValue(key string, attrs []pcommon.Map) (string, bool) {
	v, ok := lookup(key, attrs)
	if !ok {
		return "", false
	}
	if v.Type() == pcommon.ValueTypeStr {
		return v.Str(), true
	}
	return v.AsString(), true
}

// integerValue returns v as an int64: an int, or a double with an integral
// value inside int64's range (some SDKs send every number as a double).
func integerValue(v pcommon.Value) (int64, bool) {
	switch v.Type() {
	case pcommon.ValueTypeInt:
		return v.Int(), true
	case pcommon.ValueTypeDouble:
		f := v.Double()
		if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
			return 0, false // fractional, NaN, ±Inf or out of range
		}
		return int64(f), true
	default:
		return 0, false
	}
}

// foldDetails adds an entry's details to the aggregator.
func (a *aggregator) foldDetails(en *entryCounts) {
	for i := range en.valueDrops {
		a.valueDrops[i] += en.valueDrops[i]
	}
	for _, p := range en.props {
		a.props[p.propBucket] += p.n
	}
	for _, s := range en.sums {
		cur := a.sums[s.sumBucket]
		if !cur.add(s.sumAmount) {
			a.valueDrops[valueSumOverflow] += s.n
			continue
		}
		a.sums[s.sumBucket] = cur
	}
}

// finalizeDetails drops the details of event types that are not counted
// (invalid or not allowed, as their events), and sums up the days.
func (a *aggregator) finalizeDetails(m *mapper) {
	for b, n := range a.props {
		if !a.countsType(b.typ, m) {
			delete(a.props, b)
			continue
		}
		day := b
		day.hour = dayOf(b.hour)
		a.propsDaily[day] += n
	}
	for b, s := range a.sums {
		if !a.countsType(b.typ, m) {
			delete(a.sums, b)
			continue
		}
		day := b
		day.hour = dayOf(b.hour)
		cur := a.sumsDaily[day]
		if !cur.add(s) {
			// The hours fit, their day does not: the day leaves them out.
			a.valueDrops[valueSumOverflow] += s.n
			continue
		}
		a.sumsDaily[day] = cur
	}
}

// countsType reports whether typ's events are counted (see admit).
func (a *aggregator) countsType(typ string, m *mapper) bool {
	ok, seen := a.typeAllowed[typ]
	if !seen {
		ok = validValue(typ) && m.allows(typ)
		a.typeAllowed[typ] = ok
	}
	return ok
}
