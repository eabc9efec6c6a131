package redisanalyticsexporter

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Resource-entry deduplication.
//
// OTLP has no idempotency key, so a client that did not get the response to
// a request (the collector died after Redis applied it) resends it, and the
// resend would count again. The exporter counts each ResourceLogs /
// ResourceSpans entry on its own (request.go), the sending queue merges
// requests by appending whole entries and cuts one only when it is larger
// than batch::max_size (the sample config has none), and a resend carries
// byte-identical entries. So the
// converter fingerprints each resource entry from the fields that identify
// an emission, and the apply script sets one marker per entry
// (keyschema.ResourceKey) with the dedup window as TTL: an entry whose marker
// exists is excluded from the push and counted as dropped, reason duplicate.
//
// The fingerprint is deterministic across processes (fixed constants, no
// random seed such as hash/maphash's): the resend reaches a new collector
// process.
//
// An entry gets no fingerprint, and stays at-least-once, when one of its
// counted records has no identity of its own: a log record with neither
// Timestamp nor ObservedTimestamp (it takes the conversion's clock, and distinct
// requests may look identical), or a span with an all-zero SpanID.

// resFP is the 128-bit content fingerprint of one resource entry.
type resFP struct{ hi, lo uint64 }

// appendHex appends the fingerprint as 32 hex digits (the marker key's suffix).
func (f resFP) appendHex(dst []byte) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], f.hi)
	binary.BigEndian.PutUint64(b[8:], f.lo)
	return hex.AppendEncode(dst, b[:])
}

// resEntry is the per-resource-entry state of one aggregation.
type resEntry struct {
	fp resFP
	// mapped is the number of records of the entry that mapped to an event.
	mapped int64
	// ok is false when the entry has no fingerprint (see above).
	ok       bool
	excluded bool
}

// Arbitrary odd 64-bit constants (digits of pi and e) keying the mixing.
const (
	fpK1 = 0x243F6A8885A308D3
	fpK2 = 0x13198A2E03707345
	fpK3 = 0xA4093822299F31D1
	fpK4 = 0x082EFA98EC4E6C89
	fpK5 = 0x452821E638D01377
	fpK6 = 0xBE5466CF34E90C6D
	fpK7 = 0xC0AC29B7C97C50DD
	fpK8 = 0x3F84D5B5B5470917
	fpP1 = 0xD6E8FEB86659FD93
	fpP2 = 0x9E3779B97F4A7C15
)

// mum is the 64×64→128-bit multiply folded to 64 bits (as in wyhash): every
// input bit affects the result, at the cost of one multiplication.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// fpState accumulates one resource entry's fingerprint, record by record.
type fpState struct {
	h1, h2  uint64
	records uint64
	ok      bool
}

func newFPState(resUser userRef) fpState {
	u := hashUser(resUser)
	return fpState{h1: u ^ fpK1, h2: u ^ fpK2, ok: true}
}

// fold adds one record hash. h1 is an order-sensitive chain through a
// 128-bit multiply, h2 a polynomial hash: the two halves fail independently.
func (f *fpState) fold(r uint64) {
	f.h1 = mum(f.h1^r, fpP1)
	f.h2 = f.h2*fpP2 + r
	f.records++
}

func (f *fpState) sum() resFP {
	return resFP{hi: mix64(f.h1 ^ mix64(f.records^fpK3)), lo: mix64(f.h2 + f.records*fpK4)}
}

// addLog folds one log record whose event has pair hash ph. A record with no
// timestamp at all has no identity: the entry gets no fingerprint.
func (f *fpState) addLog(lr plog.LogRecord, ph uint64) {
	ts, obs := validNanos(lr.Timestamp()), validNanos(lr.ObservedTimestamp())
	if ts == 0 && obs == 0 {
		f.ok = false
		return
	}
	tid, sid := lr.TraceID(), lr.SpanID()
	var body uint64
	if b := lr.Body(); b.Type() == pcommon.ValueTypeStr {
		body = hashString(b.Str())
	}
	// Seven words in three independent multiplies: the body hash rides with
	// the span id, the severity with the pair hash (both hashes are uniform).
	r := mum(uint64(ts)^fpK1, uint64(obs)^fpK2) //nolint:gosec // bit mixing, sign irrelevant
	r ^= mum(binary.LittleEndian.Uint64(tid[:8])^fpK3, binary.LittleEndian.Uint64(tid[8:])^fpK4)
	r ^= mum(binary.LittleEndian.Uint64(sid[:])^body^fpK5, ph^uint64(lr.SeverityNumber())^fpK6) //nolint:gosec // bit mixing, sign irrelevant
	f.fold(r)
}

// addSpan folds one span whose event has pair hash ph.
func (f *fpState) addSpan(span ptrace.Span, ph uint64) {
	sid := span.SpanID()
	if sid.IsEmpty() {
		f.ok = false
		return
	}
	tid := span.TraceID()
	r := mum(uint64(span.StartTimestamp())^fpK1, binary.LittleEndian.Uint64(tid[:8])^fpK3)
	r ^= mum(binary.LittleEndian.Uint64(tid[8:])^fpK4, binary.LittleEndian.Uint64(sid[:])^ph^fpK5)
	f.fold(r)
}

// hashPair hashes an event type with its user id; the aggregator computes it
// once per (type, user) pair, not per record.
func hashPair(k pairKey) uint64 {
	return mum(hashString(k.typ)^fpK7, hashUser(k.user)^fpK8)
}

func hashUser(u userRef) uint64 {
	switch u.kind {
	case userStr:
		return hashString(u.str) ^ fpK5
	case userInt:
		return mix64(uint64(u.num) ^ fpK6) //nolint:gosec // bit mixing, sign irrelevant
	default:
		return fpK7
	}
}

// selectMarkers picks the resource entries that get a marker: fingerprinted
// entries with at least one mapped record. It returns the entries that repeat
// an earlier entry of the same request (the queue merged a request with its
// own resend): the caller excludes them and aggregates again.
func (a *aggregator) selectMarkers() []int32 {
	a.markerRes = a.markerRes[:0]
	clear(a.seenFP)
	var dups []int32
	for i := range a.res {
		r := &a.res[i]
		if r.excluded || !r.ok || r.mapped == 0 {
			continue
		}
		if _, seen := a.seenFP[r.fp]; seen {
			dups = append(dups, int32(i))
			continue
		}
		a.seenFP[r.fp] = struct{}{}
		a.markerRes = append(a.markerRes, int32(i))
	}
	return dups
}

// hashString is a deterministic 64-bit string hash in the style of wyhash:
// the words read determine the string together with its length, and each
// 16 bytes cost one 128-bit multiply. Log bodies and event names are short,
// where it is several times faster than a general-purpose hash.
func hashString(s string) uint64 {
	n := len(s)
	var a, b uint64
	h := mum(uint64(n)^fpK1, fpK2)
	switch {
	case n > 16:
		for p := s; len(p) > 16; p = p[16:] {
			h = mum(le64(p)^fpK3^h, le64(p[8:])^fpK6)
		}
		a, b = le64(s[n-16:]), le64(s[n-8:]) // the tail, overlapping the last block
	case n >= 8:
		a, b = le64(s), le64(s[n-8:])
	case n >= 4:
		a, b = uint64(le32(s)), uint64(le32(s[n-4:]))
	case n > 0:
		a = uint64(s[0])<<16 | uint64(s[n>>1])<<8 | uint64(s[n-1])
	default:
	}
	return mum(a^fpK4^h, b^fpK5)
}

func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func le32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}
