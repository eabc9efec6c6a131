package redisanalyticsexporter

import "github.com/otelcol-analytics/otelcol-analytics/internal/protocol"

// guardKey identifies one cardinality check: a member of a day's set.
type guardKey struct {
	kind   protocol.GuardKind
	attr   string // the property, for GuardPropertyValues
	member string
	day    int64 // the day's first hour
}

// guardInfo is what a guard covers, for the overflow metric and log.
type guardInfo struct {
	key guardKey
	// events is the number of events whose counters the guard folds when
	// its set is full.
	events int64
}

// sumInfo is the number of values a sum counter of the call adds up.
type sumInfo struct {
	counter int
	values  int64
}

// guardSet adds each distinct guard of a call once (protocol.ApplyCall
// positions) and remembers what it covers. With a limit of 0 a kind has no
// guard; OverflowValue itself is never checked.
type guardSet struct {
	call   *protocol.ApplyCall
	limits CardinalityLimits
	index  map[guardKey]int
	infos  []guardInfo
	sums   []sumInfo
}

func newGuardSet() guardSet { return guardSet{index: make(map[guardKey]int)} }

func (g *guardSet) reset() {
	clear(g.index)
	clear(g.infos)
	g.infos, g.sums, g.call = g.infos[:0], g.sums[:0], nil
}

func (g *guardSet) begin(call *protocol.ApplyCall, limits CardinalityLimits) {
	g.reset()
	g.call, g.limits = call, limits
}

// eventType returns the guard of typ on the day of hour; events are the
// events it covers that the caller has not reported for it yet.
func (g *guardSet) eventType(typ string, hour, events int64) int {
	return g.add(guardKey{kind: protocol.GuardEventTypes, member: typ, day: dayOf(hour)}, g.limits.EventTypesPerDay, events)
}

// value returns the guard of a property's value on the day of hour.
func (g *guardSet) value(prop, value string, hour, events int64) int {
	return g.add(guardKey{kind: protocol.GuardPropertyValues, attr: prop, member: value, day: dayOf(hour)}, g.limits.ValuesPerPropertyPerDay, events)
}

// user returns the guard of a user on the day of hour.
func (g *guardSet) user(user string, hour, events int64) int {
	return g.add(guardKey{kind: protocol.GuardUsers, member: user, day: dayOf(hour)}, g.limits.UsersPerDay, events)
}

// sum records that counter (its 0-based position) adds up values.
func (g *guardSet) sum(counter int, values int64) {
	g.sums = append(g.sums, sumInfo{counter: counter, values: values})
}

func (g *guardSet) add(k guardKey, limit, events int64) int {
	if limit <= 0 || k.member == protocol.OverflowValue {
		return 0
	}
	pos, ok := g.index[k]
	if !ok {
		pos = g.call.AddGuard(protocol.Guard{Kind: k.kind, Attribute: k.attr, Member: k.member, Day: k.day, Limit: limit})
		g.index[k] = pos
		g.infos = append(g.infos, guardInfo{key: k})
	}
	g.infos[pos-1].events += events
	return pos
}

// sumValues returns the number of values of the sum counter at position.
func (g *guardSet) sumValues(position int) int64 {
	for _, s := range g.sums {
		if s.counter == position {
			return s.values
		}
	}
	return 0
}
