package redisanalyticsexporter

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
)

// countsRequest is what the exporter puts in its sending queue: an OTLP
// request already mapped to events and counted, per resource entry.
//
// The conversion runs in the receiver's goroutine, right after the request
// was decoded, while its records are still in the CPU caches; the queue then
// holds and merges a few counters per resource entry instead of the records,
// and the pdata is garbage as soon as the receiver is done with it. A
// persistent queue stores the counters too (see encoding.go).
//
// Entries keep their boundaries so that a resend can be recognized per
// resource entry (dedup.go); requests merged by the queue's batching just
// concatenate their entries.
type countsRequest struct {
	entries []entryCounts
	// records is every event of the request, counted or dropped: each log
	// record, span and span event. Entries sum up to it.
	records int
	// items is the number of OTLP items (log records or spans) the request
	// came with: what the sending queue reports as sent. Span events are
	// events but not items.
	items int
	// bytes approximates the encoded size (the queue's bytes sizer).
	bytes int

	// batchID is set by the first push attempt and reused by its retries
	// (exporterhelper retries the same request value), so that an attempt
	// whose reply was lost is not applied twice. Never encoded: a request
	// replayed from a persistent queue after a restart is a new batch, and
	// the resource markers recognize what it already counted.
	batchID string
}

// entryCounts is one resource entry (ResourceLogs or ResourceSpans) counted.
type entryCounts struct {
	fp resFP
	// fingerprinted is false when the entry has no fingerprint (see dedup.go)
	// or lost it to a split.
	fingerprinted bool
	// excluded marks an entry that Redis already counted (a resend): it is
	// dropped as a duplicate. Set by push; kept for the retries.
	excluded bool
	// sameAsEarlier marks an entry whose identities an earlier entry of the
	// same group repeats (a request queued with its own resend): dropped as
	// a duplicate of that entry in this group's call only, never kept for a
	// retry, which may go without the earlier entry. Not encoded.
	sameAsEarlier bool
	// records is every record of the entry; missing those without an event
	// type, tooOld and inFuture those outside the time horizon.
	records  int64
	missing  int64
	tooOld   int64
	inFuture int64
	// pairs are the entry's distinct (type, user) pairs, each stored once;
	// counts refer to them by index, so the counts hold no pointers (the
	// garbage collector does not scan them) and take 24 bytes each.
	pairs  []pairKey
	counts []eventCount
	// props and sums are the entry's property counts and sums (details.go);
	// valueDrops counts the values they left out.
	props      []propCount
	sums       []sumCount
	valueDrops [numValueDropReasons]int64
}

// unmapped is the number of the entry's records that reach no counter.
func (en *entryCounts) unmapped() int64 { return en.missing + en.tooOld + en.inFuture }

// eventCount is a number of events of one pair of its entry in one hour.
type eventCount struct {
	hour int64
	n    int64
	pair int32
}

var (
	_ xexporterhelper.Request = (*countsRequest)(nil)

	errMergeType = errors.New("redis_analytics: cannot merge a request of another type")
)

// Approximate encoded sizes (see encoding.go) for the bytes sizer.
const (
	entryOverheadBytes = 32
	pairOverheadBytes  = 4
	countOverheadBytes = 6
)

func (k *pairKey) bytesSize() int64 {
	return int64(pairOverheadBytes + len(k.typ) + len(k.user.str))
}

// addEntry appends en to the request.
func (r *countsRequest) addEntry(en entryCounts) {
	r.records += int(en.records)
	r.bytes += int(en.bytesSize())
	r.entries = append(r.entries, en)
}

func (r *countsRequest) ItemsCount() int { return r.items }

func (r *countsRequest) BytesSize() int { return r.bytes }

// MergeSplit appends other's entries to r and, when maxSize is set, splits
// the result into requests of at most maxSize (items or bytes). Entries stay
// whole where they fit: one that does not fit the room left in a request
// starts the next one, so a request may stay below maxSize. Only an entry
// larger than maxSize is cut, filling requests up to maxSize. An entry cut in
// two loses its fingerprint: its pieces are counted at least once, not
// exactly once, on a resend (the README's max_size caveat).
func (r *countsRequest) MergeSplit(_ context.Context, maxSize int, szt exporterhelper.RequestSizerType, other xexporterhelper.Request) ([]xexporterhelper.Request, error) {
	if other != nil {
		o, ok := other.(*countsRequest)
		if !ok {
			return nil, fmt.Errorf("%w: %T", errMergeType, other)
		}
		r.entries = append(r.entries, o.entries...)
		r.records += o.records
		r.items += o.items
		r.bytes += o.bytes
		o.entries, o.records, o.items, o.bytes = nil, 0, 0, 0
	}
	itemsSizer := szt == exporterhelper.RequestSizerTypeItems
	if !itemsSizer && szt != exporterhelper.RequestSizerTypeBytes {
		return []xexporterhelper.Request{r}, nil // requests: one request is one unit
	}
	size := r.bytes
	if itemsSizer {
		size = r.records
	}
	if maxSize <= 0 || size <= maxSize {
		return []xexporterhelper.Request{r}, nil
	}
	s := splitter{max: int64(maxSize), itemsSizer: itemsSizer}
	for i := range r.entries {
		s.add(&r.entries[i])
	}
	return s.finish(), nil
}

// splitter cuts a request into requests of at most max items or bytes.
type splitter struct {
	max        int64
	itemsSizer bool
	out        []xexporterhelper.Request
	cur        *countsRequest
	used       int64
}

// current returns the request being filled, starting one when needed.
func (s *splitter) current() *countsRequest {
	if s.cur == nil {
		s.cur, s.used = &countsRequest{}, 0
	}
	return s.cur
}

func (s *splitter) room() int64 {
	s.current()
	return s.max - s.used
}

func (s *splitter) close() {
	if s.cur != nil && (len(s.cur.entries) > 0 || s.cur.records > 0) {
		// A piece reports its events as items: exact for logs and spans,
		// an overcount for span events, on this rare path (max_size).
		s.cur.items = s.cur.records
		s.out = append(s.out, s.cur)
	}
	s.cur, s.used = nil, 0
}

func (s *splitter) finish() []xexporterhelper.Request {
	s.close()
	return s.out
}

// entrySize is the size of a whole entry under the splitter's sizer.
func (s *splitter) entrySize(en *entryCounts) int64 {
	if s.itemsSizer {
		return en.records
	}
	return en.bytesSize()
}

func (en *entryCounts) bytesSize() int64 {
	n := int64(entryOverheadBytes + countOverheadBytes*len(en.counts))
	for i := range en.pairs {
		n += en.pairs[i].bytesSize()
	}
	return n + en.detailsBytes()
}

// detailsBytes approximates the encoded size of the entry's details.
func (en *entryCounts) detailsBytes() int64 {
	var n int64
	for i := range en.props {
		p := &en.props[i]
		n += int64(countOverheadBytes + 3 + len(p.typ) + len(p.prop) + len(p.value))
	}
	for i := range en.sums {
		s := &en.sums[i]
		n += int64(countOverheadBytes + 12 + len(s.typ) + len(s.attr))
	}
	return n
}

// add places en whole when it fits the current request, else whole in a new
// request when it fits one (an entry cut in two loses its fingerprint), and
// cuts only an entry larger than max, filling the current request first.
func (s *splitter) add(en *entryCounts) {
	if sz := s.entrySize(en); sz <= s.max {
		if sz > s.room() {
			s.close()
		}
		s.put(*en, sz)
		return
	}
	// Cut: the unmapped records first (items only), then the counts, a
	// count's events split across requests when needed. Each piece carries
	// the pairs its counts use.
	p := piece{src: en, entryCounts: entryCounts{excluded: en.excluded}, index: make([]int32, len(en.pairs))}
	flush := func() {
		if p.hasContent() {
			s.put(p.entryCounts, p.size)
		}
		s.close()
		p.reset()
	}
	// The records outside the time horizon and the details (property
	// counts, sums, value drops) go whole with the first piece.
	p.tooOld, p.inFuture, p.records = en.tooOld, en.inFuture, en.tooOld+en.inFuture
	p.props, p.sums, p.valueDrops = en.props, en.sums, en.valueDrops
	p.size = p.records
	missing := en.missing
	if !s.itemsSizer { // unmapped records cost no bytes: all go with the first piece
		p.size = entryOverheadBytes + en.detailsBytes()
		p.missing, p.records, missing = en.missing, p.records+en.missing, 0
	}
	for missing > 0 {
		take := min(missing, s.room()-p.size)
		if take <= 0 {
			flush()
			continue
		}
		p.missing += take
		p.records += take
		p.size += take
		missing -= take
	}
	for _, c := range en.counts {
		if !s.itemsSizer {
			if p.countBytes(c) > s.room()-p.size && (len(p.counts) > 0 || s.used > 0) {
				flush()
				p.size = entryOverheadBytes
			}
			p.size += p.countBytes(c)
			p.addCount(c)
			continue
		}
		for c.n > 0 {
			take := min(c.n, s.room()-p.size)
			if take <= 0 {
				flush()
				continue
			}
			part := c
			part.n = take
			p.addCount(part)
			p.size += take
			c.n -= take
		}
	}
	if p.hasContent() {
		s.put(p.entryCounts, p.size)
	}
}

// piece is a part of a cut entry being filled.
type piece struct {
	entryCounts
	src *entryCounts
	// index[i] is 1 + the index of src.pairs[i] in the piece's pairs, 0 when
	// the piece does not have it yet.
	index []int32
	// size is the piece's size under the splitter's sizer.
	size int64
}

// hasContent reports whether the piece holds anything to put: records,
// counts, or the details that go with the first piece.
func (p *piece) hasContent() bool {
	return p.records > 0 || len(p.counts) > 0 || len(p.props) > 0 || len(p.sums) > 0 ||
		p.valueDrops != [numValueDropReasons]int64{}
}

func (p *piece) reset() {
	p.entryCounts = entryCounts{excluded: p.src.excluded}
	clear(p.index)
	p.size = 0
}

// countBytes is what adding c costs the piece in bytes: its pair's too when
// the piece does not have it yet.
func (p *piece) countBytes(c eventCount) int64 {
	if p.index[c.pair] == 0 {
		return countOverheadBytes + p.src.pairs[c.pair].bytesSize()
	}
	return countOverheadBytes
}

// addCount appends c (a count of src) to the piece.
func (p *piece) addCount(c eventCount) {
	if p.index[c.pair] == 0 {
		p.pairs = append(p.pairs, p.src.pairs[c.pair])
		p.index[c.pair] = int32(len(p.pairs)) //nolint:gosec // bounded by len(src.pairs)
	}
	c.pair = p.index[c.pair] - 1
	p.counts = append(p.counts, c)
	p.records += c.n
}

// put appends a whole or cut entry to the current request.
func (s *splitter) put(en entryCounts, size int64) {
	s.current().addEntry(en)
	s.used += size
}
