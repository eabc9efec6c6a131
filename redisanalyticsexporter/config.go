package redisanalyticsexporter

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configretry"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/exporter/exporterhelper"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
	"github.com/otelcol-analytics/otelcol-analytics/internal/redisconn"
)

const (
	// defaultTTL is how long a counter key lives in Redis from its creation,
	// i.e. its first count after a flush, when no flush moves it out first.
	defaultTTL = 7 * 24 * time.Hour
	// minTTL is the smallest accepted ttl: Redis expires keys in whole seconds.
	minTTL = time.Second
	// maxValueBytes is the longest event type or user id that is counted.
	maxValueBytes = 512
	// defaultDedupWindow is how long a counted resource entry's marker lives.
	defaultDedupWindow = 10 * time.Minute
	// minDedupWindow is the smallest accepted dedup_window.
	minDedupWindow = time.Minute
	// defaultMaxEventAge keeps a day of margin below the default ttl.
	defaultMaxEventAge = defaultTTL - 24*time.Hour
	// defaultMaxClockSkew is how far ahead of the collector's clock an
	// event may be stamped.
	defaultMaxClockSkew = time.Hour
	// Default cardinality caps: a product's vocabulary, not an attack's.
	defaultEventTypesPerDay  = 1000
	defaultValuesPerProperty = 1000
	// maxHorizon bounds max_event_age and max_clock_skew, far from where
	// nanosecond arithmetic overflows.
	maxHorizon = 10 * 365 * 24 * time.Hour
)

// defaultEventNameAttributes and defaultUserIDAttributes return fresh slices so
// that no two configs share a backing array.
func defaultEventNameAttributes() []string { return []string{"event.name"} }

func defaultUserIDAttributes() []string { return []string{"user.id", "enduser.id"} }

func defaultRecordIDAttributes() []string { return []string{"log.record.uid"} }

// Config is the redis_analytics exporter configuration.
type Config struct {
	// TimeoutConfig bounds each push attempt (`timeout`). default: 5 seconds
	TimeoutConfig exporterhelper.TimeoutConfig `mapstructure:",squash"`
	// QueueConfig is exporterhelper's sending queue. default: enabled, in
	// memory, wait_for_result, sizer requests, 64 consumers, no batching
	// (the exporter's group commit merges concurrent requests)
	QueueConfig configoptional.Optional[exporterhelper.QueueBatchConfig] `mapstructure:"sending_queue"`
	// RetryConfig is exporterhelper's retry with backoff. default: enabled,
	// 100 milliseconds initial interval, 5 seconds max interval, 30 seconds
	// max elapsed time
	RetryConfig configretry.BackOffConfig `mapstructure:"retry_on_failure"`

	// Redis holds the Redis connection settings (endpoint, username,
	// password, db, tls, pool_size, cluster, sentinel, wait_replicas), the
	// same section as pg_flush's. default: 127.0.0.1:6379, plain TCP, db 0
	Redis redisconn.ClientConfig `mapstructure:"redis"`

	// KeyPrefix is the first segment of every key this exporter writes; the
	// pg_flush extension must use the same prefix. default: "analytics"
	KeyPrefix string `mapstructure:"key_prefix"`
	// TTL is the expiry set on a counter key when the apply script creates
	// it, so it runs from the counter's creation, i.e. its first count after a
	// flush (later increments do not renew it), in case no flush moves it
	// out. Whole seconds, at least 1 second. default: 168 hours (7 days)
	TTL time.Duration `mapstructure:"ttl"`
	// EventNameAttributes are the log record attributes consulted in order
	// when the record's EventName is empty; the first non-empty string value
	// is the event type. default: ["event.name"]
	EventNameAttributes []string `mapstructure:"event_name_attributes"`
	// UserIDAttributes are the attributes consulted in order, first on the
	// record then on its resource, for the user id (string or int value).
	// Empty means no per-user counters. default: ["user.id", "enduser.id"]
	UserIDAttributes []string `mapstructure:"user_id_attributes"`
	// CountSpans counts each span as an event named after the span.
	// default: true
	CountSpans bool `mapstructure:"count_spans"`
	// CountSpanEvents counts each span event as an event named after the
	// span event. For auto-instrumented services, turn count_spans off (or
	// list event_types) so that HTTP and database spans do not become event
	// types. default: true
	CountSpanEvents bool `mapstructure:"count_span_events"`
	// EventTypes is an allowlist of event types; other types are dropped and
	// counted. Empty means every type is counted. default: [] (all types)
	EventTypes []string `mapstructure:"event_types"`
	// RecordIDAttributes are the log record attributes consulted in order for
	// the record's identity, which lets the exporter recognize a client's
	// resend (a string, bytes or int value; spans are identified by their
	// TraceID and SpanID). A record without one is counted at least once.
	// Empty means every log record is counted at least once.
	// default: ["log.record.uid"]
	RecordIDAttributes []string `mapstructure:"record_id_attributes"`
	// DedupWindow is how long the exporter remembers the identified records
	// of each counted resource entry (ResourceLogs or ResourceSpans) to skip a
	// client's resend of them: it must cover a collector restart plus the
	// client's retry delay (a resend arriving later counts again). Whole
	// seconds, at least 1 minute. default: 10 minutes
	DedupWindow time.Duration `mapstructure:"dedup_window"`
	// ReleaseRecords empties each request once its records are counted, so
	// that they can be garbage-collected while the request waits in the
	// sending queue (with wait_for_result the receiver keeps the request
	// until Redis answers). The exporter then declares that it mutates its
	// input, and a pipeline that also feeds other consumers hands it a copy
	// of every request, which costs more than it saves: enable it only where
	// redis_analytics is the pipeline's sole consumer. default: false
	ReleaseRecords bool `mapstructure:"release_records"`

	// Properties are the attributes to break counts down by: per event type,
	// property value and day (and hour). Each is looked up on the record, then
	// on its span (span events), then on its resource. default: [] (none)
	Properties []PropertyConfig `mapstructure:"properties"`
	// Sums are the integer attributes to sum per event type and day (and
	// hour). default: [] (none)
	Sums []SumConfig `mapstructure:"sums"`
	// CardinalityLimits cap the distinct event types, property values and
	// users per UTC day, across every collector sharing the Redis.
	CardinalityLimits CardinalityLimits `mapstructure:"cardinality_limits"`
	// MaxEventAge drops events stamped longer ago than this (by the
	// collector's clock when the request arrives). default: 144 hours
	MaxEventAge time.Duration `mapstructure:"max_event_age"`
	// MaxClockSkew drops events stamped further ahead than this.
	// default: 1 hour
	MaxClockSkew time.Duration `mapstructure:"max_clock_skew"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// PropertyConfig is one property to break counts down by.
type PropertyConfig struct {
	// Attribute is the attribute key, e.g. "model".
	Attribute string `mapstructure:"attribute"`
	// Default is the value counted for a record without the attribute (or
	// with an empty value). Empty: such a record is left out of this
	// property's breakdown. default: ""
	Default string `mapstructure:"default"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// SumConfig is one integer attribute to sum.
type SumConfig struct {
	// Attribute is the attribute key, e.g. "gen_ai.usage.output_tokens".
	Attribute string `mapstructure:"attribute"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// CardinalityLimits are the caps on distinct values per UTC day; 0 means no
// cap. What goes over a cap is counted under "__other__".
type CardinalityLimits struct {
	// EventTypesPerDay caps the distinct event types. default: 1000
	EventTypesPerDay int64 `mapstructure:"event_types_per_day"`
	// ValuesPerPropertyPerDay caps the distinct values of each property.
	// default: 1000
	ValuesPerPropertyPerDay int64 `mapstructure:"values_per_property_per_day"`
	// UsersPerDay caps the distinct users. default: 0 (no cap)
	UsersPerDay int64 `mapstructure:"users_per_day"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ confmap.Validator = (*Config)(nil)

// Validate checks values only (no I/O). The nested configs (timeout,
// sending_queue, retry_on_failure and the Redis connection settings) validate
// themselves when the collector calls confmap.Validate.
func (c *Config) Validate() error {
	var errs []error
	if err := protocol.ValidatePrefix(c.KeyPrefix); err != nil {
		errs = append(errs, fmt.Errorf(`"key_prefix": %w`, err))
	}
	if err := protocol.ValidatePrefixFor(c.KeyPrefix, c.Redis.Cluster); err != nil {
		errs = append(errs, err)
	}
	if w := c.Redis.WaitTimeout; c.Redis.WaitReplicas > 0 && c.TimeoutConfig.Timeout > 0 && w >= c.TimeoutConfig.Timeout {
		errs = append(errs, fmt.Errorf(`"wait_timeout" (%s) must be below "timeout" (%s): each push waits for its replicas within its timeout`, w, c.TimeoutConfig.Timeout))
	}
	if c.TTL < minTTL {
		errs = append(errs, fmt.Errorf(`"ttl" must be at least %s, got %s`, minTTL, c.TTL))
	}
	if c.DedupWindow < minDedupWindow {
		errs = append(errs, fmt.Errorf(`"dedup_window" must be at least %s, got %s`, minDedupWindow, c.DedupWindow))
	}
	if !c.CountSpans && !c.CountSpanEvents {
		errs = append(errs, errors.New(`"count_spans" and "count_span_events" are both false: a traces pipeline would count nothing`))
	}
	errs = append(errs, validateNames("event_name_attributes", c.EventNameAttributes, false)...)
	errs = append(errs, validateNames("user_id_attributes", c.UserIDAttributes, false)...)
	errs = append(errs, validateNames("record_id_attributes", c.RecordIDAttributes, false)...)
	errs = append(errs, validateNames("event_types", c.EventTypes, true)...)
	errs = append(errs, c.validateDetails()...)
	return errors.Join(errs...)
}

// validateDetails checks properties, sums, caps and the time horizon.
func (c *Config) validateDetails() []error {
	var errs []error
	props := make([]string, len(c.Properties))
	for i, p := range c.Properties {
		props[i] = p.Attribute
		if p.Default != "" && (!validValue(p.Default) || p.Default == protocol.OverflowValue) {
			errs = append(errs, fmt.Errorf(`"properties[%d].default" must be valid UTF-8 without NUL bytes, at most %d bytes, and not %q`,
				i, maxValueBytes, protocol.OverflowValue))
		}
	}
	errs = append(errs, validateNames("properties[].attribute", props, true)...)
	sums := make([]string, len(c.Sums))
	for i, s := range c.Sums {
		sums[i] = s.Attribute
	}
	errs = append(errs, validateNames("sums[].attribute", sums, true)...)
	l := c.CardinalityLimits
	if l.EventTypesPerDay < 0 || l.ValuesPerPropertyPerDay < 0 || l.UsersPerDay < 0 {
		errs = append(errs, errors.New(`"cardinality_limits" must not be negative (0: no cap)`))
	}
	if c.MaxEventAge <= 0 || c.MaxEventAge > maxHorizon {
		errs = append(errs, fmt.Errorf(`"max_event_age" must be positive and at most %s, got %s`, maxHorizon, c.MaxEventAge))
	}
	if c.MaxClockSkew < 0 || c.MaxClockSkew > maxHorizon {
		errs = append(errs, fmt.Errorf(`"max_clock_skew" must be between 0 and %s, got %s`, maxHorizon, c.MaxClockSkew))
	}
	return errs
}

// guardTTL is how long a day's cardinality set lives from its creation: past
// the last moment an event of its day can reach Redis (the day's end plus
// max_event_age, checked as the request arrives, plus the retries of its
// push, batchMarkerTTL; the set may be created as early as max_clock_skew
// before the day starts), so a set does not expire and restart its cap
// while its day still takes events. A request held longer in a persistent
// queue (an outage past the retries' window) may find its day's set gone
// and start the cap anew for that day.
func (c *Config) guardTTL() time.Duration {
	return c.MaxClockSkew + 24*time.Hour + c.MaxEventAge + c.batchMarkerTTL()
}

// validateNames reports empty and duplicate entries of the list under key;
// eventTypes also requires each entry to be a countable event type.
func validateNames(key string, names []string, eventTypes bool) []error {
	var errs []error
	seen := make(map[string]int, len(names))
	for i, name := range names {
		if name == "" {
			errs = append(errs, fmt.Errorf(`"%s[%d]" must not be empty`, key, i))
			continue
		}
		if j, dup := seen[name]; dup {
			errs = append(errs, fmt.Errorf(`"%s[%d]" duplicates "%s[%d]" (%q)`, key, i, key, j, name))
			continue
		}
		seen[name] = i
		if eventTypes && !validValue(name) {
			errs = append(errs, fmt.Errorf(`"%s[%d]" must be valid UTF-8 without NUL bytes and at most %d bytes`, key, i, maxValueBytes))
		}
	}
	return errs
}

// batchMarkerTTL is how long Redis keeps the marker of an applied batch id,
// and how long the exporter remembers the batch id of a failed push. It must
// outlast every retry of one push: exporterhelper stops retrying after
// retry_on_failure::max_elapsed_time, and the last attempt runs for at most
// one timeout (counted twice for the attempt in flight when the window opens),
// plus a minute of slack for clock and scheduling delays.
//
// max_elapsed_time 0 (retry until Redis answers, as durability mode (b)
// does) has no last retry, and a marker that outlived every retry would
// never expire; every applied batch leaves one. The marker then covers one
// hour of outage (unboundedRetryWindow): if the reply of an applied batch is
// lost as an outage begins, the retry comes at most one backoff delay
// ((1 + randomization_factor) × max_interval) and two timeouts (an attempt
// hanging in the outage, then the retry) after Redis answers again, and
// finds the marker if Redis answered within the hour. After a longer outage
// that retry counts the batch again, unless its resource markers
// (dedup_window) are still there. Only the batches in flight as the outage
// began (at most num_consumers per pipeline) are at risk. The cost decides
// the hour: a marker takes about 160 bytes (MEMORY USAGE 104 plus its expiry
// entry), one per batch, about 5 batches/s under light traffic (one per
// flush_timeout) and events/s ÷ min_size at saturation (20/s measured at
// 160k events/s): 3–12 MB for an hour, 70–280 MB for a day (README,
// Durability modes).
func (c *Config) batchMarkerTTL() time.Duration {
	const (
		slack = time.Minute
		// unboundedRetryWindow is the outage that max_elapsed_time 0 (retry
		// forever) covers without counting a batch twice (see above).
		unboundedRetryWindow = time.Hour
	)
	if !c.RetryConfig.Enabled {
		return 2*c.TimeoutConfig.Timeout + slack
	}
	if c.RetryConfig.MaxElapsedTime > 0 {
		return c.RetryConfig.MaxElapsedTime + 2*c.TimeoutConfig.Timeout + slack
	}
	// The longest backoff delay: the first delay is initial_interval, later
	// ones at most max_interval, each randomized by up to ±randomization_factor.
	interval := max(c.RetryConfig.InitialInterval, c.RetryConfig.MaxInterval)
	backoff := time.Duration(float64(interval) * (1 + c.RetryConfig.RandomizationFactor))
	return unboundedRetryWindow + backoff + 2*c.TimeoutConfig.Timeout + slack
}
