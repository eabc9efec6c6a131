package redisanalyticsexporter

import (
	"strconv"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

const (
	// maxPooledEntries bounds the maps an aggregator keeps between pushes:
	// maps never shrink, so one huge push must not pin its memory for the
	// exporter's life.
	maxPooledEntries = 1 << 16
	// maxPairHours is how many distinct hours a (type, user) pair keeps in
	// its own list; further hours (a backfill) go to aggregator.overflow.
	maxPairHours = 32
)

// pairKey is an event type with a user id, both as the pdata holds them.
type pairKey struct {
	typ  string
	user userRef
}

// hourCount is a number of events in one hour (or day) bucket.
type hourCount struct {
	hour int64
	n    int64
}

// pair aggregates the events of one (type, user) pair by hour.
type pair struct {
	key pairKey
	// hours holds up to maxPairHours distinct hours, in order of appearance.
	hours []hourCount
	// overflowN counts the events whose hour went to aggregator.overflow.
	overflowN int64
	// anonymousN counts the events of entries without a fingerprint (no
	// identity, dedup.go): they are counted at least once.
	anonymousN int64
	// hash is hashPair(key), the pair's map key.
	hash uint64
	// Set by finalize.
	dropped bool
	typeIdx int32
	userID  string
}

// pairHour is an overflow bucket: a pair's events in one hour.
type pairHour struct {
	pair int32
	hour int64
}

// typeHour identifies an hourly or daily counter by the index of its event
// type in aggregator.types, so that deriving it hashes no string.
type typeHour struct {
	typ  int32
	hour int64
}

// userBucket identifies a daily counter of one user and event type.
type userBucket struct {
	typ  string
	user string
	day  int64 // first hour of the day
}

// recentPairs is how many recently counted pairs count checks before the map.
const recentPairs = 2

// pairCounter counts events per (type, user) pair and hour. The per-event
// path looks the pair up by its hash (hashPair) in a map keyed by that uint64, checks the key,
// and scans the pair's few hours; events of one of the last few pairs skip
// the map. A uint64 key hashes and compares in a few instructions, where a
// (type, user) key hashes both strings again. The map stays small (types ×
// active users). Measured against a plain map[pairKey]int32 (benchstat, 6
// runs each): BenchmarkConvert/traces 1.7× slower (2× with a one-pair cache
// instead of two), /logs 3–12% slower, BenchmarkAggregate/users=1000 14%.
type pairCounter struct {
	// byHash indexes pairs by hashPair; a pair whose hash another pair
	// already holds (a 64-bit collision) goes to collided.
	byHash   map[uint64]int32
	collided map[pairKey]int32
	pairs    []pair // pairs[:len] are in use; the rest keep their memory
	overflow map[pairHour]int64
	// total is the number of events counted by add.
	total int64
	// The last pairs counted, replaced round robin (see count).
	recent     [recentPairs]recentPair
	recentLen  int
	recentNext int
}

type recentPair struct {
	key pairKey
	idx int32
}

func newPairCounter() pairCounter {
	return pairCounter{byHash: make(map[uint64]int32), collided: make(map[pairKey]int32), overflow: make(map[pairHour]int64)}
}

// reset empties the counter, keeping its memory but no reference to the
// previous strings.
func (pc *pairCounter) reset() {
	clear(pc.byHash)
	clear(pc.collided)
	pc.recent = [recentPairs]recentPair{}
	pc.recentLen, pc.recentNext = 0, 0
	for i := range pc.pairs {
		pc.pairs[i] = pair{hours: pc.pairs[i].hours[:0]}
	}
	pc.pairs = pc.pairs[:0]
	clear(pc.overflow)
	pc.total = 0
}

// add counts one event.
func (pc *pairCounter) add(ev event) {
	pc.count(pairKey{typ: ev.typ, user: ev.user}, ev.hour, 1)
	pc.total++
}

// reusable reports whether the counter is small enough to keep pooled.
func (pc *pairCounter) reusable() bool {
	return len(pc.pairs) <= maxPooledEntries && len(pc.overflow) <= maxPooledEntries
}

// count adds n events of pair k in hour and returns the pair's index.
func (pc *pairCounter) count(k pairKey, hour, n int64) int32 {
	// Nearby events usually share their type and user (one request comes
	// from one service, often one session; a trace alternates between a few
	// span names): comparing with the last few pairs costs less than even
	// hashing them.
	for i := range pc.recentLen {
		if r := &pc.recent[i]; r.key == k {
			pc.countPairHour(r.idx, hour, n)
			return r.idx
		}
	}
	idx := pc.pairIndex(k, hashPair(k))
	pc.recent[pc.recentNext] = recentPair{key: k, idx: idx}
	pc.recentNext = (pc.recentNext + 1) % recentPairs
	pc.recentLen = min(pc.recentLen+1, recentPairs)
	pc.countPairHour(idx, hour, n)
	return idx
}

// pairIndex returns the index of pair k, whose hashPair is h, adding it when
// new.
func (pc *pairCounter) pairIndex(k pairKey, h uint64) int32 {
	idx, ok := pc.byHash[h]
	if ok && pc.pairs[idx].key == k {
		return idx
	}
	if ok { // another pair has this hash
		if exact, found := pc.collided[k]; found {
			return exact
		}
	}
	idx = int32(len(pc.pairs)) //nolint:gosec // bounded by the records of one request
	if len(pc.pairs) < cap(pc.pairs) {
		pc.pairs = pc.pairs[:idx+1] // reset left it empty with its hours memory
	} else {
		pc.pairs = append(pc.pairs, pair{})
	}
	pc.pairs[idx].key, pc.pairs[idx].hash = k, h
	if ok {
		pc.collided[k] = idx
	} else {
		pc.byHash[h] = idx
	}
	return idx
}

// countPairHour counts n events of pair idx in hour.
func (pc *pairCounter) countPairHour(idx int32, hour, n int64) {
	p := &pc.pairs[idx]
	for i := range p.hours {
		if p.hours[i].hour == hour {
			p.hours[i].n += n
			return
		}
	}
	if len(p.hours) < maxPairHours {
		p.hours = append(p.hours, hourCount{hour: hour, n: n})
		return
	}
	p.overflowN += n
	pc.overflow[pairHour{pair: idx, hour: hour}] += n
}

// aggregator folds the counts of one push (a countsRequest) into counter
// keys and increments. It is reused across pushes (see
// redisAnalyticsExporter.aggregators); one push uses it from one goroutine.
// Validation, the allowlist and the derivation of the three counter families
// run once per (type, user) pair, not per event.
type aggregator struct {
	pairCounter

	// dropped counts records per drop reason.
	dropped [numDropReasons]int64
	// counted is the number of records that reach a counter; anonymous
	// those of them without a resend marker (dedup.go).
	counted   int64
	anonymous int64

	// Resource-entry deduplication (dedup.go). res holds the entries of
	// every request folded, in order; refs says where each one comes from.
	res  []resEntry
	refs []entryRef
	// entryPairs maps the pairs of the entry being folded to a.pairs.
	entryPairs []int32
	markerRes  []int32 // resource index of each marker in KEYS order
	seenFP     map[resFP]struct{}

	// Derived by finalize.
	typeIdx   map[string]int32
	types     []string
	hourly    map[typeHour]int64
	daily     map[typeHour]int64
	userDaily map[userBucket]int64
	days      []hourCount // scratch: one pair's events per day

	// Details (details.go): folded from the entries, then checked and
	// summed up per day by finalize.
	props       map[propBucket]int64
	sums        map[sumBucket]sumAmount
	propsDaily  map[propBucket]int64
	sumsDaily   map[sumBucket]sumAmount
	valueDrops  [numValueDropReasons]int64
	typeAllowed map[string]bool

	// guards are the cardinality checks of the call (guard.go); folds the
	// counters folded without asking Redis (a full set).
	guards guardSet
	folds  map[protocol.Counter]*foldedCounter

	// call holds the script arguments built by encode, reused across pushes.
	call *protocol.ApplyCall
}

func newAggregator(schema protocol.Schema) *aggregator {
	return &aggregator{
		call:        protocol.NewApplyCall(schema),
		pairCounter: newPairCounter(),
		typeIdx:     make(map[string]int32),
		hourly:      make(map[typeHour]int64),
		daily:       make(map[typeHour]int64),
		userDaily:   make(map[userBucket]int64),
		seenFP:      make(map[resFP]struct{}),
		props:       make(map[propBucket]int64),
		sums:        make(map[sumBucket]sumAmount),
		propsDaily:  make(map[propBucket]int64),
		sumsDaily:   make(map[sumBucket]sumAmount),
		typeAllowed: make(map[string]bool),
		guards:      newGuardSet(),
		folds:       make(map[protocol.Counter]*foldedCounter),
	}
}

// reset empties the aggregator, keeping its memory but no reference to the
// previous push's strings.
func (a *aggregator) reset() {
	a.pairCounter.reset()
	a.dropped = [numDropReasons]int64{}
	a.counted, a.anonymous = 0, 0
	a.res, a.refs = a.res[:0], a.refs[:0]
	a.markerRes = a.markerRes[:0]
	clear(a.typeIdx)
	clear(a.types)
	a.types = a.types[:0]
	clear(a.hourly)
	clear(a.daily)
	clear(a.userDaily)
	clear(a.props)
	clear(a.sums)
	clear(a.propsDaily)
	clear(a.sumsDaily)
	clear(a.typeAllowed)
	a.valueDrops = [numValueDropReasons]int64{}
	a.guards.reset()
	clear(a.folds)
	a.call.Reset()
}

// reusable reports whether the aggregator is small enough to keep pooled.
func (a *aggregator) reusable() bool {
	for _, n := range []int{
		len(a.userDaily), len(a.seenFP), len(a.props), len(a.sums), len(a.propsDaily), len(a.sumsDaily),
		len(a.typeAllowed), len(a.guards.index), len(a.folds),
	} {
		if n > maxPooledEntries {
			return false
		}
	}
	return a.pairCounter.reusable()
}

// numKeys is the number of distinct counters derived by finalize.
func (a *aggregator) numKeys() int {
	return len(a.daily) + len(a.hourly) + len(a.userDaily) + len(a.props) + len(a.propsDaily) + len(a.sums) + len(a.sumsDaily)
}

// entryRef locates an entry folded into the aggregator: request member
// (its position in the group) and entry index.
type entryRef struct {
	member int32
	entry  int32
}

// fold adds the counts of every entry of req, the group's request member;
// excluded entries count as duplicates.
func (a *aggregator) fold(req *countsRequest, member int) {
	for i := range req.entries {
		en := &req.entries[i]
		a.refs = append(a.refs, entryRef{member: int32(member), entry: int32(i)}) //nolint:gosec // bounded by the group's size
		if en.excluded || en.sameAsEarlier {
			a.dropped[reasonDuplicate] += en.records
			a.res = append(a.res, resEntry{excluded: true})
			continue
		}
		a.dropped[reasonMissingEventType] += en.missing
		a.dropped[reasonTooOld] += en.tooOld
		a.dropped[reasonInFuture] += en.inFuture
		a.foldDetails(en)
		// Resolve the entry's pairs once; its counts then cost no lookup.
		a.entryPairs = a.entryPairs[:0]
		for j := range en.pairs {
			// Hashed again: entries do not carry the converter's hashes
			// (nor does the queue encoding), and it is once per pair.
			k := en.pairs[j]
			a.entryPairs = append(a.entryPairs, a.pairIndex(k, hashPair(k)))
		}
		for _, c := range en.counts {
			idx := a.entryPairs[c.pair]
			a.countPairHour(idx, c.hour, c.n)
			if !en.fingerprinted {
				a.pairs[idx].anonymousN += c.n
			}
		}
		a.res = append(a.res, resEntry{fp: en.fp, mapped: en.records - en.unmapped(), ok: en.fingerprinted})
	}
}

// finalize validates each (type, user) pair once, applies the allowlist, and
// derives the three counter families.
func (a *aggregator) finalize(m *mapper) {
	for i := range a.pairs {
		p := &a.pairs[i]
		total := p.overflowN
		for _, hc := range p.hours {
			total += hc.n
		}
		reason, ok := a.admit(p, m)
		if !ok {
			p.dropped = true
			a.dropped[reason] += total
			continue
		}
		a.counted += total
		a.anonymous += p.anonymousN
		a.days = a.days[:0]
		for _, hc := range p.hours {
			a.addHour(p, hc.hour, hc.n)
		}
		for _, d := range a.days {
			a.userDaily[userBucket{typ: p.key.typ, user: p.userID, day: d.hour}] += d.n
		}
	}
	for ph, n := range a.overflow { // rare: pairs with more than maxPairHours hours
		p := &a.pairs[ph.pair]
		if p.dropped {
			continue
		}
		a.hourly[typeHour{typ: p.typeIdx, hour: ph.hour}] += n
		if p.userID != "" {
			a.userDaily[userBucket{typ: p.key.typ, user: p.userID, day: dayOf(ph.hour)}] += n
		}
	}
	for th, n := range a.hourly {
		a.daily[typeHour{typ: th.typ, hour: dayOf(th.hour)}] += n
	}
	a.finalizeDetails(m)
}

// admit checks a pair's values and the allowlist, and resolves its type index
// and user id string.
func (a *aggregator) admit(p *pair, m *mapper) (dropReason, bool) {
	if !validValue(p.key.typ) {
		return reasonInvalidValue, false
	}
	if !m.allows(p.key.typ) {
		return reasonNotAllowed, false
	}
	switch p.key.user.kind {
	case userStr:
		if !validValue(p.key.user.str) {
			return reasonInvalidValue, false
		}
		p.userID = p.key.user.str
	case userInt:
		p.userID = strconv.FormatInt(p.key.user.num, 10)
	default:
	}
	idx, ok := a.typeIdx[p.key.typ]
	if !ok {
		idx = int32(len(a.types)) //nolint:gosec // bounded by the records of one push
		a.types = append(a.types, p.key.typ)
		a.typeIdx[p.key.typ] = idx
	}
	p.typeIdx = idx
	return 0, true
}

// addHour adds n events of pair p in hour to the hourly counter of its type
// and to the pair's per-day scratch (for its user counter).
func (a *aggregator) addHour(p *pair, hour, n int64) {
	a.hourly[typeHour{typ: p.typeIdx, hour: hour}] += n
	if p.userID == "" {
		return
	}
	day := dayOf(hour)
	for i := range a.days {
		if a.days[i].hour == day {
			a.days[i].n += n
			return
		}
	}
	a.days = append(a.days, hourCount{hour: day, n: n})
}

// encode builds the script call (protocol.ApplyCall): the batch markers of
// batchIDs, the resource markers chosen by selectMarkers, the cardinality
// guards under limits (none where known knows the member: admitted, or
// folded here for a full set), and one increment per counter.
func (a *aggregator) encode(batchIDs []string, ttls protocol.ApplyTTLs, limits CardinalityLimits, known *knownSets) {
	a.call.Reset()
	clear(a.folds)
	for _, id := range batchIDs {
		a.call.AddBatch(id)
	}
	for _, i := range a.markerRes {
		a.call.AddResourceMarker(a.res[i].fp.hi, a.res[i].fp.lo)
	}
	g := &a.guards
	g.begin(a.call, limits, known)
	none := guardResult{}
	for b, n := range a.daily {
		typ := a.types[b.typ]
		a.addCounter(protocol.Counter{Family: protocol.Daily, EventType: typ, Hour: b.hour}, n, 0, g.eventType(typ, b.hour, n), none)
	}
	for b, n := range a.hourly {
		typ := a.types[b.typ]
		a.addCounter(protocol.Counter{Family: protocol.Hourly, EventType: typ, Hour: b.hour}, n, 0, g.eventType(typ, b.hour, 0), none)
	}
	for b, n := range a.userDaily {
		a.addCounter(protocol.Counter{Family: protocol.UserDaily, EventType: b.typ, UserID: b.user, Hour: b.day}, n, 0,
			g.eventType(b.typ, b.day, 0), g.user(b.user, b.day, n))
	}
	for b, n := range a.propsDaily {
		a.addCounter(protocol.Counter{Family: protocol.PropertyDaily, EventType: b.typ, Attribute: b.prop, Value: b.value, Hour: b.hour}, n, 0,
			g.eventType(b.typ, b.hour, 0), g.value(b.prop, b.value, b.hour, n))
	}
	for b, n := range a.props {
		a.addCounter(protocol.Counter{Family: protocol.PropertyHourly, EventType: b.typ, Attribute: b.prop, Value: b.value, Hour: b.hour}, n, 0,
			g.eventType(b.typ, b.hour, 0), g.value(b.prop, b.value, b.hour, 0))
	}
	for b, s := range a.sumsDaily {
		a.addCounter(protocol.Counter{Family: protocol.SumDaily, EventType: b.typ, Attribute: b.attr, Hour: b.hour}, s.sum, s.n,
			g.eventType(b.typ, b.hour, 0), none)
	}
	for b, s := range a.sums {
		a.addCounter(protocol.Counter{Family: protocol.SumHourly, EventType: b.typ, Attribute: b.attr, Hour: b.hour}, s.sum, s.n,
			g.eventType(b.typ, b.hour, 0), none)
	}
	for ctr, f := range a.folds {
		a.addToCall(ctr, f.amount, f.guards)
	}
	a.call.Build(ttls)
}

// foldedCounter is a counter that labels folded here go to: the increments
// of every counter folded into it, and the guards its other labels still
// need (the same for each, as they depend on those labels only).
type foldedCounter struct {
	amount sumAmount // the increment; n: the values of a sum
	guards protocol.CounterGuards
}

// addCounter adds an increment of n (a sum of values values) to ctr, whose
// type and value or user are checked by typ and dim.
func (a *aggregator) addCounter(ctr protocol.Counter, n, values int64, typ, dim guardResult) {
	if !typ.fold && !dim.fold {
		a.addToCall(ctr, sumAmount{sum: n, n: values}, protocol.CounterGuards{Type: typ.pos, Dim: dim.pos})
		return
	}
	ctr = ctr.Folded(typ.fold, dim.fold)
	f, ok := a.folds[ctr]
	if !ok {
		f = &foldedCounter{}
		if !typ.fold {
			f.guards.Type = typ.pos
		}
		if !dim.fold {
			f.guards.Dim = dim.pos
		}
		a.folds[ctr] = f
	}
	if !f.amount.add(sumAmount{sum: n, n: values}) {
		a.valueDrops[valueSumOverflow] += values
	}
}

// addToCall adds a counter to the script call.
func (a *aggregator) addToCall(ctr protocol.Counter, amount sumAmount, guards protocol.CounterGuards) {
	if ctr.Family == protocol.SumDaily || ctr.Family == protocol.SumHourly {
		a.guards.sum(a.call.NumCounters(), amount.n)
	}
	a.call.AddGuardedCounter(ctr, amount.sum, guards)
}

// dayOf returns the first hour of the UTC day of hour (hours since the
// Unix epoch, negative before 1970).
func dayOf(hour int64) int64 {
	m := hour % 24
	if m < 0 {
		m += 24
	}
	return hour - m
}
