package redisanalyticsexporter

import (
	"context"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
	"github.com/otelcol-analytics/otelcol-analytics/redisanalyticsexporter/internal/metadata"
)

// spanWithEvents builds one span "checkout.request" (user on the span when
// spanUser is set, resource user "res-user" when resUser) with the given
// events.
func spanWithEvents(spanUser string, resUser bool, events ...func(ptrace.SpanEvent)) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	if resUser {
		rs.Resource().Attributes().PutStr("user.id", "res-user")
	}
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetName("checkout.request")
	span.SetTraceID([16]byte{1, 2, 3})
	span.SetSpanID([8]byte{4, 5, 6})
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(tsRecord))
	if spanUser != "" {
		span.Attributes().PutStr("enduser.id", spanUser)
	}
	for _, set := range events {
		set(span.Events().AppendEmpty())
	}
	return td
}

func named(name string) func(ptrace.SpanEvent) {
	return func(se ptrace.SpanEvent) {
		se.SetName(name)
		se.SetTimestamp(pcommon.NewTimestampFromTime(tsObserved))
	}
}

func TestMapSpanEvents(t *testing.T) {
	t.Parallel()
	withUser := func(name, user string) func(ptrace.SpanEvent) {
		return func(se ptrace.SpanEvent) {
			named(name)(se)
			se.Attributes().PutStr("user.id", user)
		}
	}
	noTime := func(name string) func(ptrace.SpanEvent) {
		return func(se ptrace.SpanEvent) { se.SetName(name) }
	}
	spanOnly := func(cfg *Config) { cfg.CountSpanEvents = false }
	eventsOnly := func(cfg *Config) { cfg.CountSpans = false }
	tests := []struct {
		name        string
		td          ptrace.Traces
		cfg         func(*Config)
		want        map[string]int64
		wantDropped map[string]int64
	}{
		{
			name: "user on the event wins",
			td:   spanWithEvents("span-user", true, withUser("checkout_completed", "event-user")),
			cfg:  eventsOnly,
			want: eventKeys("checkout_completed", "event-user", tsObserved),
		},
		{
			name: "user of the span",
			td:   spanWithEvents("span-user", true, named("checkout_completed")),
			cfg:  eventsOnly,
			want: eventKeys("checkout_completed", "span-user", tsObserved),
		},
		{
			name: "user of the resource",
			td:   spanWithEvents("", true, named("checkout_completed")),
			cfg:  eventsOnly,
			want: eventKeys("checkout_completed", "res-user", tsObserved),
		},
		{
			name: "no user",
			td:   spanWithEvents("", false, named("checkout_completed")),
			cfg:  eventsOnly,
			want: eventKeys("checkout_completed", "", tsObserved),
		},
		{
			name: "zero timestamp: the span's start",
			td:   spanWithEvents("", false, noTime("checkout_completed")),
			cfg:  eventsOnly,
			want: eventKeys("checkout_completed", "", tsRecord),
		},
		{
			name: "many events per span, the span too",
			td:   spanWithEvents("u", false, slices.Repeat([]func(ptrace.SpanEvent){named("add_to_cart")}, 2)...),
			want: sumKeys(eventKeys("checkout.request", "u", tsRecord), scaled(eventKeys("add_to_cart", "u", tsObserved), 2)),
		},
		{
			name: "count_span_events off: the span only",
			td:   spanWithEvents("u", false, named("add_to_cart")),
			cfg:  spanOnly,
			want: eventKeys("checkout.request", "u", tsRecord),
		},
		{
			name:        "an event without a name is dropped",
			td:          spanWithEvents("", false, named(""), named("ok")),
			cfg:         eventsOnly,
			want:        eventKeys("ok", "", tsObserved),
			wantDropped: map[string]int64{"missing_event_type": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := createDefaultConfig().(*Config)
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			got, dropped := counters(t, cfg, tracesFill(tt.td), tsNow)
			assert.Equal(t, tt.want, got)
			if tt.wantDropped == nil {
				tt.wantDropped = map[string]int64{}
			}
			assert.Equal(t, tt.wantDropped, dropped)
		})
	}
}

func TestSpanEventIdentity(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	cfg.CountSpans = false
	fps := func(td ptrace.Traces) []resFP { return spanFPsWith(cfg, td) }
	base := fps(spanWithEvents("", false, named("a"), named("b")))
	require.Len(t, base, 1)
	assert.NotEqual(t, resFP{}, base[0])
	assert.Equal(t, base, fps(spanWithEvents("", false, named("a"), named("b"))), "a resend has the same identity")
	moved := spanWithEvents("", false, named("a"), named("b"))
	moved.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Events().At(1).SetTimestamp(1)
	assert.NotEqual(t, base, fps(moved), "another timestamp is another event")
	anon := spanWithEvents("", false, named("a"))
	anon.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).SetSpanID([8]byte{})
	assert.Equal(t, []resFP{{}}, fps(anon), "no span id: at least once")
}

// TestResendOfSpanEventsCountsOnce: a client resends spans with events; the
// spans and their events count once.
func TestResendOfSpanEventsCountsOnce(t *testing.T) {
	t.Parallel()
	client, prefix := testservers.SharedRedis(t)
	cfg := testConfig(testservers.RedisEndpoint(), prefix)
	te, err := NewFactory().CreateTraces(t.Context(), exportertest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, te.Start(t.Context(), componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, te.Shutdown(context.Background())) })
	req := func() ptrace.Traces {
		return spanWithEvents("u", false, named("add_to_cart"), named("checkout_completed"))
	}
	require.NoError(t, te.ConsumeTraces(t.Context(), req()))
	require.NoError(t, te.ConsumeTraces(t.Context(), req())) // the resend
	want := sumKeys(counterKeys(prefix, "checkout.request", "u", tsRecord, 1),
		counterKeys(prefix, "add_to_cart", "u", tsObserved, 1), counterKeys(prefix, "checkout_completed", "u", tsObserved, 1))
	assert.Equal(t, want, counterValues(t, client, keysOf(want)))
}

func TestCountNothingIsInvalid(t *testing.T) {
	t.Parallel()
	cfg := createDefaultConfig().(*Config)
	cfg.CountSpans, cfg.CountSpanEvents = false, false
	require.ErrorContains(t, cfg.Validate(), `"count_spans" and "count_span_events" are both false`)
}

// TestSpanEventsAreNotItems: the sending queue counts OTLP items (spans),
// as the receiver does; span events are events, not items. The persistent
// queue's encoding keeps both.
func TestSpanEventsAreNotItems(t *testing.T) {
	t.Parallel()
	m := newMapper(createDefaultConfig().(*Config))
	req := newConverter().traces(spanWithEvents("u", false, named("a"), named("b")), &m, tsNow.UnixNano())
	assert.Equal(t, 1, req.ItemsCount(), "one span")
	assert.Equal(t, 3, req.records, "the span and its two events")
	data, err := countsEncoding{}.Marshal(t.Context(), req)
	require.NoError(t, err)
	_, got, err := countsEncoding{}.Unmarshal(data)
	require.NoError(t, err)
	assert.Equal(t, 1, got.ItemsCount())
	assert.Equal(t, 3, got.(*countsRequest).records)
}
