package redisanalyticsexporter

import (
	"math"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// dropReason says why a record was not counted; its String is the value of the
// "reason" metric attribute.
type dropReason uint8

const (
	// reasonMissingEventType: no EventName and no event name attribute (logs),
	// or an empty span or span event name.
	reasonMissingEventType dropReason = iota
	// reasonNotAllowed: the event type is not in event_types.
	reasonNotAllowed
	// reasonInvalidValue: the event type or user id is not valid UTF-8, holds a
	// NUL byte (PostgreSQL text cannot store it) or is longer than 512 bytes.
	reasonInvalidValue
	// reasonDuplicate: the identified records of the record's resource entry
	// (ResourceLogs or ResourceSpans) were counted before, within the dedup
	// window: a client resent a request whose response it did not receive
	// (see dedup.go).
	reasonDuplicate
	// reasonTooOld: the record is stamped more than max_event_age before the
	// collector's clock when it arrived.
	reasonTooOld
	// reasonInFuture: the record is stamped more than max_clock_skew after
	// the collector's clock when it arrived.
	reasonInFuture
	numDropReasons
)

func (r dropReason) String() string {
	switch r {
	case reasonMissingEventType:
		return "missing_event_type"
	case reasonNotAllowed:
		return "not_allowed"
	case reasonInvalidValue:
		return "invalid_value"
	case reasonDuplicate:
		return "duplicate"
	case reasonTooOld:
		return "too_old"
	case reasonInFuture:
		return "in_future"
	default:
		return "unknown"
	}
}

// userKind says how an event's user id is held.
type userKind uint8

const (
	userNone userKind = iota
	userStr           // user.str
	userInt           // user.num, written in decimal
)

// userRef is a user id as found in the attributes: the pdata-owned string or
// the int value, so that reading it never allocates.
type userRef struct {
	str  string
	num  int64
	kind userKind
}

// event is what one log record or span contributes to the counters. Its
// strings point into the pdata; it is the aggregation key, so records of the
// same type, user and hour fold into one map entry before any key is built.
type event struct {
	typ  string
	user userRef
	// hour is the bucket in whole hours since the Unix epoch (UTC).
	hour int64
}

// mapper turns records into events according to the config.
type mapper struct {
	eventNameAttrs []string
	userIDAttrs    []string
	// recordIDAttrs name the log record attributes that identify a record
	// (dedup.go).
	recordIDAttrs []string
	// spans and spanEvents say which of a trace's parts count as events.
	spans, spanEvents bool
	// allowed is the event_types allowlist; nil counts every type.
	allowed map[string]struct{}
	// maxAge and maxSkew bound an event's timestamp around the clock.
	maxAge, maxSkew int64
	// props and sums are the attributes counted per value and summed.
	props []PropertyConfig
	sums  []SumConfig
}

func newMapper(cfg *Config) mapper {
	m := mapper{
		eventNameAttrs: cfg.EventNameAttributes,
		userIDAttrs:    cfg.UserIDAttributes,
		recordIDAttrs:  cfg.RecordIDAttributes,
		spans:          cfg.CountSpans,
		spanEvents:     cfg.CountSpanEvents,
		maxAge:         int64(cfg.MaxEventAge),
		maxSkew:        int64(cfg.MaxClockSkew),
		props:          cfg.Properties,
		sums:           cfg.Sums,
	}
	if len(cfg.EventTypes) > 0 {
		m.allowed = make(map[string]struct{}, len(cfg.EventTypes))
		for _, t := range cfg.EventTypes {
			m.allowed[t] = struct{}{}
		}
	}
	return m
}

// logEvent maps a log record. ok is false when it has no event type or its
// time is outside the horizon, and reason says which. nowNanos is the
// conversion's clock reading, used when the record has no timestamp.
func (m *mapper) logEvent(lr plog.LogRecord, resUser userRef, nowNanos int64) (ev event, reason dropReason, ok bool) {
	ev.typ = lr.EventName()
	if ev.typ == "" {
		ev.typ = firstString(lr.Attributes(), m.eventNameAttrs)
		if ev.typ == "" {
			return event{}, reasonMissingEventType, false
		}
	}
	ev.user = m.userOf(lr.Attributes(), resUser)
	ts := validNanos(lr.Timestamp())
	if ts == 0 {
		ts = validNanos(lr.ObservedTimestamp())
		if ts == 0 {
			ts = nowNanos
		}
	}
	return m.stamp(ev, ts, nowNanos)
}

// stamp sets ev's hour from its timestamp ts, or says why ts is outside
// the horizon around nowNanos.
func (m *mapper) stamp(ev event, ts, nowNanos int64) (event, dropReason, bool) {
	switch {
	case ts < nowNanos-m.maxAge:
		return event{}, reasonTooOld, false
	case ts > nowNanos+m.maxSkew:
		return event{}, reasonInFuture, false
	}
	ev.hour = protocol.HourOfUnixNano(ts)
	return ev, 0, true
}

// fromSpan maps a span: its name is the event type, its start the time.
func (m *mapper) fromSpan(span ptrace.Span, resUser userRef, nowNanos int64) (ev event, reason dropReason, ok bool) {
	ev.typ = span.Name()
	if ev.typ == "" {
		return event{}, reasonMissingEventType, false
	}
	ev.user = m.userOf(span.Attributes(), resUser)
	ts := validNanos(span.StartTimestamp())
	if ts == 0 {
		ts = nowNanos
	}
	return m.stamp(ev, ts, nowNanos)
}

// fromSpanEvent maps a span event: its name is the event type, its user the
// one on the event, else the span's (spanUser: the span's own, else its
// resource's), its time its timestamp, else the span's start.
func (m *mapper) fromSpanEvent(se ptrace.SpanEvent, span ptrace.Span, spanUser userRef, nowNanos int64) (ev event, reason dropReason, ok bool) {
	ev.typ = se.Name()
	if ev.typ == "" {
		return event{}, reasonMissingEventType, false
	}
	ev.user = m.userOf(se.Attributes(), spanUser)
	ts := validNanos(se.Timestamp())
	if ts == 0 {
		ts = validNanos(span.StartTimestamp())
		if ts == 0 {
			ts = nowNanos
		}
	}
	return m.stamp(ev, ts, nowNanos)
}

// resourceUser is the user id found on a resource, looked up once per resource.
func (m *mapper) resourceUser(res pcommon.Resource) userRef {
	u, _ := findUser(res.Attributes(), m.userIDAttrs)
	return u
}

// userOf returns the record's user id, else the resource's: the record wins.
func (m *mapper) userOf(attrs pcommon.Map, resUser userRef) userRef {
	if u, ok := findUser(attrs, m.userIDAttrs); ok {
		return u
	}
	return resUser
}

// allows reports whether the allowlist admits typ.
func (m *mapper) allows(typ string) bool {
	if m.allowed == nil {
		return true
	}
	_, ok := m.allowed[typ]
	return ok
}

// findUser returns the first usable user id among names: a non-empty string
// or an int. Other value types count as absent.
func findUser(attrs pcommon.Map, names []string) (userRef, bool) {
	if attrs.Len() == 0 {
		return userRef{}, false
	}
	for _, name := range names {
		v, ok := attrs.Get(name)
		if !ok { // never call methods on the zero Value Get returns
			continue
		}
		switch v.Type() {
		case pcommon.ValueTypeStr:
			if s := v.Str(); s != "" {
				return userRef{str: s, kind: userStr}, true
			}
		case pcommon.ValueTypeInt:
			return userRef{num: v.Int(), kind: userInt}, true
		default:
		}
	}
	return userRef{}, false
}

// firstString returns the first non-empty string value among names, or "".
func firstString(attrs pcommon.Map, names []string) string {
	if attrs.Len() == 0 {
		return ""
	}
	for _, name := range names {
		v, ok := attrs.Get(name)
		if !ok || v.Type() != pcommon.ValueTypeStr {
			continue
		}
		if s := v.Str(); s != "" {
			return s
		}
	}
	return ""
}

// validNanos returns ts as Unix nanoseconds, or 0 when it is unset or does not
// fit an int64 (after 2262), so the caller falls back to the next clock.
func validNanos(ts pcommon.Timestamp) int64 {
	if ts == 0 || uint64(ts) > math.MaxInt64 {
		return 0
	}
	return int64(ts) //nolint:gosec // range checked above
}

// validValue reports whether s can be counted as an event type or user id:
// valid UTF-8, no NUL byte (PostgreSQL text cannot hold one) and at most
// maxValueBytes long. The empty string is valid here; callers treat it as absent.
func validValue(s string) bool {
	return len(s) <= maxValueBytes && strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)
}
