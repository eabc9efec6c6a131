package protocol

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "analytics"

// Family names one of the counter families.
type Family uint8

const (
	// Daily counts events per type and UTC day.
	Daily Family = iota + 1
	// Hourly counts events per type and UTC hour.
	Hourly
	// UserDaily counts events per user, type and UTC day.
	UserDaily
	// PropertyDaily counts events per type, property value and UTC day.
	PropertyDaily
	// PropertyHourly counts events per type, property value and UTC hour.
	PropertyHourly
	// SumDaily sums an integer attribute per type and UTC day.
	SumDaily
	// SumHourly sums an integer attribute per type and UTC hour.
	SumHourly
)

// OverflowValue is the event type, property value or user id that counts
// fold into once a cardinality cap is reached (see [Guard]).
const OverflowValue = "__other__"

// String returns the family name used in logs and metrics.
func (f Family) String() string {
	switch f {
	case Daily:
		return "daily"
	case Hourly:
		return "hourly"
	case UserDaily:
		return "user_daily"
	case PropertyDaily:
		return "property_daily"
	case PropertyHourly:
		return "property_hourly"
	case SumDaily:
		return "sum_daily"
	case SumHourly:
		return "sum_hourly"
	default:
		return fmt.Sprintf("family(%d)", uint8(f))
	}
}

// Counter identifies one Redis counter.
type Counter struct {
	Family    Family
	EventType string
	// UserID is set for the UserDaily family only.
	UserID string
	// Attribute is the property (PropertyDaily, PropertyHourly) or the
	// summed attribute (SumDaily, SumHourly).
	Attribute string
	// Value is the property value (PropertyDaily, PropertyHourly).
	Value string
	// Hour is the bucket start in whole hours since the Unix epoch (UTC). For
	// the daily families it is a multiple of 24 (the day's first hour).
	Hour int64
}

// IsHourly reports whether the family's buckets are hours (else days).
func (f Family) IsHourly() bool { return f == Hourly || f == PropertyHourly || f == SumHourly }

// Day returns the bucket's day number since the Unix epoch (UTC).
func (c Counter) Day() int64 { return floorDiv(c.Hour, 24) }

// Start returns the bucket's start as a UTC time.
func (c Counter) Start() time.Time { return time.Unix(c.Hour*3600, 0).UTC() }

// Hour and day limits: the key format has four-digit years.
var (
	minHour = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 3600
	maxHour = time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).Unix() / 3600
)

// HourOf returns the hour bucket of t (UTC) in hours since the Unix epoch.
func HourOf(t time.Time) int64 { return floorDiv(t.Unix(), 3600) }

// HourOfUnixNano returns the hour bucket of a Unix timestamp in nanoseconds.
func HourOfUnixNano(ns int64) int64 { return floorDiv(ns, int64(time.Hour)) }

// ValidHour reports whether hour can be written in a key (years 0000 to 9999).
func ValidHour(hour int64) bool { return hour >= minHour && hour <= maxHour }

var (
	errForeignKey = errors.New("key does not belong to this schema")
	errKeyShape   = errors.New("key does not match the counter layout")
)

// Schema builds and parses keys under one prefix.
type Schema struct {
	prefix        string // "analytics:"
	counterPrefix string // "analytics:counter:"
	userPrefix    string // "analytics:user:"
	propPrefix    string // "analytics:prop:"
	sumPrefix     string // "analytics:sum:"
}

// New returns the schema for prefix. The prefix is used verbatim (it may hold
// a Redis Cluster hash tag such as "{analytics}" so that all keys share a slot).
func New(prefix string) (Schema, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return Schema{}, err
	}
	p := prefix + ":"
	return Schema{
		prefix: p, counterPrefix: p + "counter:", userPrefix: p + "user:",
		propPrefix: p + "prop:", sumPrefix: p + "sum:",
	}, nil
}

// ValidatePrefix reports why prefix cannot be used, or nil.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return errors.New("prefix must not be empty")
	}
	for i := 0; i < len(prefix); i++ {
		if b := prefix[i]; b <= ' ' || b == 0x7f {
			return fmt.Errorf("prefix %q must not contain spaces or control bytes", prefix)
		}
	}
	return nil
}

// ValidatePrefixFor checks that prefix fits the deployment: in a cluster,
// every key of one script must hash to one slot, which only a hash tag in the
// prefix guarantees (HashTag).
func ValidatePrefixFor(prefix string, cluster bool) error {
	if !cluster {
		return nil
	}
	if _, ok := HashTag(prefix); !ok {
		return fmt.Errorf(`"key_prefix" %q must hold a hash tag such as "{analytics}" with "cluster": all keys of one Lua script must share a slot`, prefix)
	}
	return nil
}

// HashTag returns the Redis Cluster hash tag of prefix: the text between its
// first '{' and the first '}' after it, when that text is not empty. Every
// key of the schema then hashes to the slot of that tag (event types and user
// ids are escaped and hold no braces), as the keys of one script must in a
// cluster.
func HashTag(prefix string) (string, bool) {
	open := strings.IndexByte(prefix, '{')
	if open < 0 {
		return "", false
	}
	n := strings.IndexByte(prefix[open+1:], '}')
	if n <= 0 {
		return "", false
	}
	return prefix[open+1 : open+1+n], true
}

// Prefix returns the configured prefix (without the trailing separator).
func (s Schema) Prefix() string { return strings.TrimSuffix(s.prefix, ":") }

// PendingKey is the sorted set of counter keys that await a flush.
func (s Schema) PendingKey() string { return s.prefix + "pending" }

// StagingIndexKey is the sorted set of staging ids not yet fully flushed.
func (s Schema) StagingIndexKey() string { return s.prefix + "staging" }

// StagingKey is the hash that holds the counts moved out by flush id.
func (s Schema) StagingKey(id string) string { return s.prefix + "staging:" + id }

// StagingClaimKey marks flush id as used by a STAGE. It outlives the staging
// hash, so a STAGE that go-redis re-sends after its entry was already applied
// and cleaned up cannot stage a new batch under the same, already-applied id.
func (s Schema) StagingClaimKey(id string) string { return s.prefix + "staging-claim:" + id }

// BatchKey marks an exporter batch id as applied.
func (s Schema) BatchKey(id string) string { return s.prefix + "batch:" + id }

// ResourceKey returns the marker key of one deduplicated resource entry
// (ResourceLogs or ResourceSpans), identified by the hex of its content
// fingerprint. The exporter sets it when it counts the entry, with the dedup
// window as TTL, so that a resend of the same entry is not counted again.
func (s Schema) ResourceKey(hash string) string { return s.prefix + "res:" + hash }

// AppendResourceKey appends the resource marker key of the 128-bit
// fingerprint hi, lo (32 hex digits) to dst.
func (s Schema) AppendResourceKey(dst []byte, hi, lo uint64) []byte {
	dst = append(dst, s.prefix...)
	dst = append(dst, "res:"...)
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return hex.AppendEncode(dst, b[:])
}

// QuarantineKey is the hash where the flusher keeps counts it could not parse
// (a malformed key or value in the pending set), so nothing is dropped silently.
func (s Schema) QuarantineKey() string { return s.prefix + "quarantine" }

// Key returns the Redis key of c.
func (s Schema) Key(c Counter) string { return string(s.AppendKey(nil, c)) }

// AppendKey appends the Redis key of c to dst. It does not validate c: use
// [ValidHour] and a known family.
func (s Schema) AppendKey(dst []byte, c Counter) []byte {
	switch c.Family {
	case UserDaily:
		dst = append(dst, s.userPrefix...)
		dst = AppendEscape(dst, c.UserID)
		dst = append(dst, ':')
		dst = AppendEscape(dst, c.EventType)
	case PropertyDaily, PropertyHourly:
		dst = append(dst, s.propPrefix...)
		dst = AppendEscape(dst, c.EventType)
		dst = append(dst, ':')
		dst = AppendEscape(dst, c.Attribute)
		dst = append(dst, ':')
		dst = AppendEscape(dst, c.Value)
	case SumDaily, SumHourly:
		dst = append(dst, s.sumPrefix...)
		dst = AppendEscape(dst, c.EventType)
		dst = append(dst, ':')
		dst = AppendEscape(dst, c.Attribute)
	default:
		dst = append(dst, s.counterPrefix...)
		dst = AppendEscape(dst, c.EventType)
	}
	dst = append(dst, ':')
	dst = appendDate(dst, c.Day())
	if c.Family.IsHourly() {
		h := floorMod(c.Hour, 24)
		dst = append(dst, ':', digit(h/10), digit(h%10))
	}
	return dst
}

// Parse returns the counter that key names. It accepts exactly the keys that
// AppendKey produces: for every key it accepts, Key of the result is that key
// again, so no two keys name the same counter.
func (s Schema) Parse(key string) (Counter, error) {
	// Each layout: its prefix, the number of escaped segments before the
	// date, and the families for a key without and with an hour.
	var (
		c      Counter
		rest   string
		labels int
		daily  Family
		hourly Family
	)
	switch {
	case strings.HasPrefix(key, s.counterPrefix):
		rest, labels, daily, hourly = key[len(s.counterPrefix):], 1, Daily, Hourly
	case strings.HasPrefix(key, s.userPrefix):
		rest, labels, daily = key[len(s.userPrefix):], 2, UserDaily
	case strings.HasPrefix(key, s.propPrefix):
		rest, labels, daily, hourly = key[len(s.propPrefix):], 3, PropertyDaily, PropertyHourly
	case strings.HasPrefix(key, s.sumPrefix):
		rest, labels, daily, hourly = key[len(s.sumPrefix):], 2, SumDaily, SumHourly
	default:
		return Counter{}, fmt.Errorf("%w: %q", errForeignKey, key)
	}
	parts := strings.Split(rest, ":")
	switch {
	case len(parts) == labels+1:
		c.Family = daily
	case len(parts) == labels+2 && hourly != 0:
		c.Family = hourly
	default:
		return Counter{}, fmt.Errorf("%w: %q", errKeyShape, key)
	}
	values := make([]string, labels)
	for i := range labels {
		v, err := Unescape(parts[i])
		if err != nil {
			return Counter{}, fmt.Errorf("parse %q: segment %d: %w", key, i+1, err)
		}
		if v == "" {
			return Counter{}, fmt.Errorf("parse %q: segment %d is empty", key, i+1)
		}
		values[i] = v
	}
	switch c.Family {
	case UserDaily:
		c.UserID, c.EventType = values[0], values[1]
	case PropertyDaily, PropertyHourly:
		c.EventType, c.Attribute, c.Value = values[0], values[1], values[2]
	case SumDaily, SumHourly:
		c.EventType, c.Attribute = values[0], values[1]
	default:
		c.EventType = values[0]
	}
	if err := parseBucket(&c, parts[labels:]); err != nil {
		return Counter{}, fmt.Errorf("parse %q: %w", key, err)
	}
	return c, nil
}

// parseBucket fills the bucket: timeParts is [date] or [date, HH].
func parseBucket(c *Counter, timeParts []string) error {
	day, err := parseDate(timeParts[0])
	if err != nil {
		return err
	}
	c.Hour = day * 24
	if len(timeParts) == 2 {
		h := timeParts[1]
		if len(h) != 2 || !isDigit(h[0]) || !isDigit(h[1]) {
			return fmt.Errorf("bad hour %q", h)
		}
		hh := int64(h[0]-'0')*10 + int64(h[1]-'0')
		if hh > 23 {
			return fmt.Errorf("bad hour %q", h)
		}
		c.Hour += hh
	}
	return nil
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// appendDate appends day (days since the Unix epoch) as YYYY-MM-DD.
func appendDate(dst []byte, day int64) []byte {
	y, m, d := civilFromDays(day)
	return append(dst,
		digit(y/1000%10), digit(y/100%10), digit(y/10%10), digit(y%10), '-',
		digit(m/10), digit(m%10), '-',
		digit(d/10), digit(d%10))
}

// digit returns the ASCII digit of v, which callers keep within 0..9.
func digit(v int64) byte { return byte('0' + v) } //nolint:gosec // v is a single decimal digit

// parseDate parses YYYY-MM-DD strictly (the only spelling appendDate writes).
func parseDate(s string) (int64, error) {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return 0, fmt.Errorf("bad date %q", s)
	}
	var v [8]int64
	for i, pos := range [8]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if !isDigit(s[pos]) {
			return 0, fmt.Errorf("bad date %q", s)
		}
		v[i] = int64(s[pos] - '0')
	}
	y := v[0]*1000 + v[1]*100 + v[2]*10 + v[3]
	m := v[4]*10 + v[5]
	d := v[6]*10 + v[7]
	day := daysFromCivil(y, m, d)
	if yy, mm, dd := civilFromDays(day); yy != y || mm != m || dd != d {
		return 0, fmt.Errorf("bad date %q", s)
	}
	return day, nil
}

// civilFromDays and daysFromCivil convert between days since 1970-01-01 and
// proleptic Gregorian dates (H. Hinnant's algorithms), without time.Time
// allocations on the hot path.
func civilFromDays(z int64) (y, m, d int64) {
	z += 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y = yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	if mp < 10 {
		m = mp + 3
	} else {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }
