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
// guard; OverflowValue itself is never checked. A member of a set that
// fullSets knows to be full needs no guard: it is admitted when the set
// holds it, and folded here otherwise, as Redis would.
type guardSet struct {
	call   *protocol.ApplyCall
	limits CardinalityLimits
	full   *fullSets
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
	g.infos, g.sums, g.call, g.full = g.infos[:0], g.sums[:0], nil, nil
	g.localFolded = [protocol.GuardUsers + 1]int64{}
	g.localSample = guardKey{}
}

func (g *guardSet) begin(call *protocol.ApplyCall, limits CardinalityLimits, full *fullSets) {
	g.reset()
	g.call, g.limits, g.full = call, limits, full
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
	if admitted, known := g.full.admits(k); known {
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

// fullSets remembers the day's cardinality sets that Redis found full, with
// their members. A full set never takes a new member (its day's counters
// only fold), so the exporter can decide for it without asking Redis: a
// flood of new values then costs one folded counter per key, not a guard
// and a folded key per value. Shared by the exporter's pushes.
type fullSets struct {
	mu   sync.RWMutex
	sets map[capSet]map[string]struct{}
}

func newFullSets() *fullSets { return &fullSets{sets: make(map[capSet]map[string]struct{})} }

// admits reports whether k's set is known to be full (known) and, if so,
// whether it holds k's member.
func (f *fullSets) admits(k guardKey) (admitted, known bool) {
	if f == nil {
		return false, false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	members, known := f.sets[k.capSet]
	if !known {
		return false, false
	}
	_, admitted = members[k.member]
	return admitted, true
}

// learn reads the members of the sets of keys (guards Redis found full)
// and remembers those that are full under limits; it forgets the sets of
// days before oldestDay.
func (f *fullSets) learn(ctx context.Context, client redis.UniversalClient, schema protocol.Schema, keys []guardKey, limits CardinalityLimits, oldestDay int64) error {
	for _, k := range keys {
		f.mu.RLock()
		_, known := f.sets[k.capSet]
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
		f.sets[k.capSet] = set
		for s := range f.sets {
			if s.day < oldestDay {
				delete(f.sets, s)
			}
		}
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
