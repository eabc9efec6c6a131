package redisanalyticsexporter

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// guardKey identifies one cardinality check: a member of a day's set.
type guardKey struct {
	capSet
	member string
}

// capSet identifies a day's cardinality set.
type capSet struct {
	kind protocol.GuardKind
	attr string // the property, for GuardPropertyValues
	day  int64  // the day's first hour
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
// guard; OverflowValue itself is never checked. A member that knownSets
// knows needs no guard: one Redis admitted before is admitted, and one of
// a set known to be full is folded here, as Redis would.
type guardSet struct {
	call   *protocol.ApplyCall
	limits CardinalityLimits
	known  *knownSets
	index  map[guardKey]int
	infos  []guardInfo
	sums   []sumInfo
	// localFolded counts the events folded here, by kind, and one of them
	// for the warning.
	localFolded [protocol.GuardUsers + 1]int64
	localSample guardKey
}

func newGuardSet() guardSet { return guardSet{index: make(map[guardKey]int)} }

func (g *guardSet) reset() {
	clear(g.index)
	clear(g.infos)
	g.infos, g.sums, g.call, g.known = g.infos[:0], g.sums[:0], nil, nil
	g.localFolded = [protocol.GuardUsers + 1]int64{}
	g.localSample = guardKey{}
}

func (g *guardSet) begin(call *protocol.ApplyCall, limits CardinalityLimits, known *knownSets) {
	g.reset()
	g.call, g.limits, g.known = call, limits, known
}

// guardResult is how a counter's label is checked: by the guard at a
// position of the call (pos > 0), folded here (fold), or not at all.
type guardResult struct {
	pos  int
	fold bool
}

// eventType checks typ on the day of hour; events are the events it covers
// that the caller has not reported for it yet.
func (g *guardSet) eventType(typ string, hour, events int64) guardResult {
	return g.add(guardKey{capSet{kind: protocol.GuardEventTypes, day: dayOf(hour)}, typ}, g.limits.EventTypesPerDay, events)
}

// value checks a property's value on the day of hour.
func (g *guardSet) value(prop, value string, hour, events int64) guardResult {
	return g.add(guardKey{capSet{kind: protocol.GuardPropertyValues, attr: prop, day: dayOf(hour)}, value}, g.limits.ValuesPerPropertyPerDay, events)
}

// user checks a user on the day of hour.
func (g *guardSet) user(user string, hour, events int64) guardResult {
	return g.add(guardKey{capSet{kind: protocol.GuardUsers, day: dayOf(hour)}, user}, g.limits.UsersPerDay, events)
}

// sum records that counter (its 0-based position) adds up values.
func (g *guardSet) sum(counter int, values int64) {
	g.sums = append(g.sums, sumInfo{counter: counter, values: values})
}

func (g *guardSet) add(k guardKey, limit, events int64) guardResult {
	if limit <= 0 || k.member == protocol.OverflowValue {
		return guardResult{}
	}
	if admitted, known := g.known.admits(k); known {
		if admitted {
			return guardResult{}
		}
		if g.localFolded[k.kind] == 0 {
			g.localSample = k
		}
		g.localFolded[k.kind] += events
		return guardResult{fold: true}
	}
	pos, ok := g.index[k]
	if !ok {
		pos = g.call.AddGuard(protocol.Guard{Kind: k.kind, Attribute: k.attr, Member: k.member, Day: k.day, Limit: limit})
		g.index[k] = pos
		g.infos = append(g.infos, guardInfo{key: k})
	}
	g.infos[pos-1].events += events
	return guardResult{pos: pos}
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

// knownSets is what the exporter knows of the day's cardinality sets, so
// that it needs no guard for most values: the members Redis admitted (a
// member stays in its set while its day takes events), and the sets Redis
// found full, with all their members (a full set never takes a new
// member, so the exporter folds the values it does not hold before the
// call: a flood costs one folded counter per key, not a guard and a folded
// key per value). Shared by the exporter's pushes; bounded by the caps.
type knownSets struct {
	mu       sync.RWMutex
	full     map[capSet]map[string]struct{}
	admitted map[capSet]map[string]struct{}
}

func newKnownSets() *knownSets {
	return &knownSets{full: make(map[capSet]map[string]struct{}), admitted: make(map[capSet]map[string]struct{})}
}

// maxKnownPerSet bounds the admitted members remembered per set (a users
// cap may be large); past it, members are checked in Redis.
const maxKnownPerSet = 100_000

// admits reports whether k's member is known (known) and, if so, whether
// its set admits it.
func (f *knownSets) admits(k guardKey) (admitted, known bool) {
	if f == nil {
		return false, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if members, full := f.full[k.capSet]; full {
		_, admitted = members[k.member]
		return admitted, true
	}
	if _, admitted = f.admitted[k.capSet][k.member]; admitted {
		return true, true
	}
	return false, false
}

// remember records members that Redis admitted, and forgets the sets of
// days before oldestDay.
func (f *knownSets) remember(keys []guardKey, oldestDay int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		set, ok := f.admitted[k.capSet]
		if !ok {
			set = make(map[string]struct{})
			f.admitted[k.capSet] = set
			f.forget(oldestDay)
		}
		if len(set) < maxKnownPerSet {
			set[k.member] = struct{}{}
		}
	}
}

// forget drops the sets of days before oldestDay; f.mu is held.
func (f *knownSets) forget(oldestDay int64) {
	for s := range f.full {
		if s.day < oldestDay {
			delete(f.full, s)
		}
	}
	for s := range f.admitted {
		if s.day < oldestDay {
			delete(f.admitted, s)
		}
	}
}

// learn reads the members of the sets of keys (guards Redis found full)
// and remembers those that are full under limits; it forgets the sets of
// days before oldestDay.
func (f *knownSets) learn(ctx context.Context, client redis.UniversalClient, schema protocol.Schema, keys []guardKey, limits CardinalityLimits, oldestDay int64) error {
	for _, k := range keys {
		f.mu.RLock()
		_, known := f.full[k.capSet]
		f.mu.RUnlock()
		if known {
			continue
		}
		g := protocol.Guard{Kind: k.kind, Attribute: k.attr, Day: k.day}
		members, err := client.SMembers(ctx, schema.GuardKey(g)).Result()
		if err != nil {
			return fmt.Errorf("redis read cardinality set: %w", err)
		}
		if int64(len(members)) < limitOf(k.kind, limits) {
			continue // room again (a call that aborted took its members back)
		}
		set := make(map[string]struct{}, len(members))
		for _, m := range members {
			set[m] = struct{}{}
		}
		f.mu.Lock()
		f.full[k.capSet] = set
		delete(f.admitted, k.capSet)
		f.forget(oldestDay)
		f.mu.Unlock()
	}
	return nil
}

func limitOf(kind protocol.GuardKind, l CardinalityLimits) int64 {
	switch kind {
	case protocol.GuardEventTypes:
		return l.EventTypesPerDay
	case protocol.GuardPropertyValues:
		return l.ValuesPerPropertyPerDay
	default:
		return l.UsersPerDay
	}
}

// learnTimeout bounds the reads of full sets after a call that folded.
const learnTimeout = 5 * time.Second
