package redisanalyticsexporter

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"

	"github.com/zeebo/xxh3"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Resend detection by identity.
//
// OTLP has no idempotency key per request, so a client that did not get the
// response to a request (the collector died after Redis applied it) resends
// it, and the resend would count again. Content cannot tell a resend from
// two identical emissions (the same page viewed twice in one millisecond,
// a gateway batching many browsers' events), so only records that carry an
// identity take part:
//
//   - a span, by its TraceID and SpanID (an all-zero SpanID is no identity);
//   - a span event, by its span's ids, its index among the span's events and
//     its timestamp;
//   - a log record, by the first of record_id_attributes it holds with a
//     non-empty string, bytes or int value (default: log.record.uid, the
//     OpenTelemetry attribute for exactly this).
//
// The converter splits each resource entry (ResourceLogs or ResourceSpans)
// into its identified records, fingerprinted together with xxh3-128 over
// their identities in order, and the rest, which get no fingerprint. The
// apply script sets one marker per fingerprinted entry
// (protocol.ResourceKey), living dedup_window: an entry whose marker exists
// was counted before and is dropped (reason duplicate). Records without an
// identity are counted at least once: a crash between the Redis apply and
// the answer counts their resend again (the events_without_identity
// metric counts them).
//
// A resend is recognized when it carries the same identified records in the
// same order within one resource entry, which is what SDK and collector
// retries send; two entries of one request with the same fingerprint are
// one entry sent twice (the queue merged a request with its own resend).

// resFP is the 128-bit identity fingerprint of one resource entry's
// identified records.
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

// Tags that start each identity in the hashed bytes, so that identities of
// different kinds or lengths never run together.
const (
	idTagSpan      = 's'
	idTagSpanEvent = 'e'
	idTagStr       = 'l'
	idTagBytes     = 'b'
	idTagInt       = 'i'
)

// identities collects the identities of one resource entry's identified
// records; its fingerprint is xxh3-128 over them.
type identities struct {
	buf []byte
	n   int64
}

func (ids *identities) reset() { ids.buf, ids.n = ids.buf[:0], 0 }

// addSpan adds a span's identity; false when its SpanID is all zero.
func (ids *identities) addSpan(span ptrace.Span) bool {
	sid := span.SpanID()
	if sid.IsEmpty() {
		return false
	}
	tid := span.TraceID()
	ids.buf = append(ids.buf, idTagSpan)
	ids.buf = append(ids.buf, tid[:]...)
	ids.buf = append(ids.buf, sid[:]...)
	ids.n++
	return true
}

// addSpanEvent adds the identity of the i-th event of span: the span's ids,
// the index and the event's timestamp; false when the SpanID is all zero.
func (ids *identities) addSpanEvent(span ptrace.Span, i int, se ptrace.SpanEvent) bool {
	sid := span.SpanID()
	if sid.IsEmpty() {
		return false
	}
	tid := span.TraceID()
	ids.buf = append(ids.buf, idTagSpanEvent)
	ids.buf = append(ids.buf, tid[:]...)
	ids.buf = append(ids.buf, sid[:]...)
	ids.buf = binary.AppendUvarint(ids.buf, uint64(i)) //nolint:gosec // an index, never negative
	ids.buf = binary.LittleEndian.AppendUint64(ids.buf, uint64(se.Timestamp()))
	ids.n++
	return true
}

// addLog adds a log record's identity, the first of names it holds with a
// usable value; false when it has none.
func (ids *identities) addLog(lr plog.LogRecord, names []string) bool {
	attrs := lr.Attributes()
	if attrs.Len() == 0 {
		return false
	}
	for _, name := range names {
		v, ok := attrs.Get(name)
		if !ok { // never call methods on the zero Value Get returns
			continue
		}
		switch v.Type() {
		case pcommon.ValueTypeStr:
			if s := v.Str(); s != "" {
				ids.appendBytes(idTagStr, s)
				return true
			}
		case pcommon.ValueTypeBytes:
			if b := v.Bytes(); b.Len() > 0 {
				ids.appendBytes(idTagBytes, string(b.AsRaw()))
				return true
			}
		case pcommon.ValueTypeInt:
			ids.buf = append(ids.buf, idTagInt)
			ids.buf = binary.LittleEndian.AppendUint64(ids.buf, uint64(v.Int())) //nolint:gosec // bit pattern, sign irrelevant
			ids.n++
			return true
		default:
		}
	}
	return false
}

func (ids *identities) appendBytes(tag byte, s string) {
	ids.buf = append(ids.buf, tag)
	ids.buf = binary.AppendUvarint(ids.buf, uint64(len(s)))
	ids.buf = append(ids.buf, s...)
	ids.n++
}

// sum is the fingerprint of the identities added since the last reset.
func (ids *identities) sum() resFP {
	h := xxh3.Hash128(ids.buf)
	return resFP{hi: h.Hi, lo: h.Lo}
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

// hashPair hashes an event type with its user id: the pair counter's map
// key (aggregate.go).
func hashPair(k pairKey) uint64 {
	h := xxh3.HashString(k.typ)
	switch k.user.kind {
	case userStr:
		return mum(h^pairKUser, xxh3.HashString(k.user.str)^pairKStr)
	case userInt:
		return mum(h^pairKUser, uint64(k.user.num)^pairKInt) //nolint:gosec // bit mixing, sign irrelevant
	default:
		return h
	}
}

// Odd constants (digits of pi) that keep the user kinds apart in hashPair.
const (
	pairKUser = 0x243F6A8885A308D3
	pairKStr  = 0x13198A2E03707345
	pairKInt  = 0xA4093822299F31D1
)

// mum is the 64×64→128-bit multiply folded to 64 bits: every input bit
// affects the result.
func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
