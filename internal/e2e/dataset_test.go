package e2e

import (
	"encoding/binary"
	"strconv"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// expected holds the rows the tables must end up with, computed here
// independently of the exporter's code: "type|2025-06-01", "type|2025-06-01T10",
// "user|type|2025-06-01", "type|property|value|2025-06-01" and
// "type|attribute|2025-06-01" (the sample config's properties and sums).
type expected struct {
	daily, hourly, userDaily, propDaily, sumDaily map[string]int64
	events                                        int64
}

func newExpected() *expected {
	return &expected{
		daily: map[string]int64{}, hourly: map[string]int64{}, userDaily: map[string]int64{},
		propDaily: map[string]int64{}, sumDaily: map[string]int64{},
	}
}

// expectedTable is one table of expected.
type expectedTable struct {
	name string
	rows map[string]int64
}

// tables lists e's rows by table, always in the same order.
func (e *expected) tables() []expectedTable {
	return []expectedTable{
		{"analytics_daily", e.daily},
		{"analytics_hourly", e.hourly},
		{"analytics_user_daily", e.userDaily},
		{"analytics_property_daily", e.propDaily},
		{"analytics_sum_daily", e.sumDaily},
	}
}

// The sample config's property and sum (testdata/config.yaml).
const (
	modelProperty = "model"
	tokensSum     = "gen_ai.usage.output_tokens"
)

// models are awkward property values: the separator, the escape byte, braces, unicode.
var models = []string{"gpt-4", "a:b%{c}", "modèle ✨"}

// addProp counts an event of eventType at ts with property value.
func (e *expected) addProp(eventType, value string, ts time.Time) {
	e.propDaily[eventType+"|"+modelProperty+"|"+value+"|"+ts.UTC().Format(time.DateOnly)]++
}

// addSum adds n to the sum of eventType's day of ts.
func (e *expected) addSum(eventType string, n int64, ts time.Time) {
	e.sumDaily[eventType+"|"+tokensSum+"|"+ts.UTC().Format(time.DateOnly)] += n
}

func (e *expected) add(eventType, user string, ts time.Time) {
	ts = ts.UTC()
	day := ts.Format("2006-01-02")
	e.daily[eventType+"|"+day]++
	e.hourly[eventType+"|"+ts.Format("2006-01-02T15")]++
	if user != "" {
		e.userDaily[user+"|"+eventType+"|"+day]++
	}
	e.events++
}

// awkward values: the separator, the escape byte, hash-tag braces, spaces and unicode.
var (
	eventTypes = []string{"page_view", "generation_completed", "a:b%{c}", "été 🎉"}
	users      = []string{"alice", "bob", "team:42", "ünï{code}", "100%"}
	// base is 22:00 UTC the day before yesterday: its records (up to three
	// hours later, across midnight) are inside the exporter's time horizon
	// (max_event_age, max_clock_skew) whenever the tests run.
	base = time.Now().UTC().Truncate(24 * time.Hour).Add(-26 * time.Hour)
)

// logsBatch builds n log records exercising every mapping rule, and records
// what they must count. seed varies types, users and hours between batches.
func logsBatch(n, seed int, exp *expected) plog.Logs {
	ld := plog.NewLogs()
	// Resource with a user: records without their own user inherit it.
	rlUser := ld.ResourceLogs().AppendEmpty()
	rlUser.Resource().Attributes().PutStr("service.name", "web")
	rlUser.Resource().Attributes().PutStr("user.id", "resource-user")
	recsUser := rlUser.ScopeLogs().AppendEmpty().LogRecords()
	// Resource without a user.
	rlAnon := ld.ResourceLogs().AppendEmpty()
	rlAnon.Resource().Attributes().PutStr("service.name", "batch-job")
	recsAnon := rlAnon.ScopeLogs().AppendEmpty().LogRecords()

	for i := range n {
		k := i + seed*7919
		eventType := eventTypes[k%len(eventTypes)]
		ts := base.Add(time.Duration(k%5) * 37 * time.Minute) // crosses midnight
		switch k % 6 {
		case 0: // EventName, user on the record overrides the resource's
			lr := recsUser.AppendEmpty()
			lr.SetEventName(eventType)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
			user := users[k%len(users)]
			lr.Attributes().PutStr("user.id", user)
			exp.add(eventType, user, ts)
			lr.Attributes().PutStr(modelProperty, models[k%len(models)]) // a property
			exp.addProp(eventType, models[k%len(models)], ts)
		case 1: // event.name attribute, user from the resource
			lr := recsUser.AppendEmpty()
			lr.Attributes().PutStr("event.name", eventType)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
			exp.add(eventType, "resource-user", ts)
			lr.Attributes().PutInt(tokensSum, int64(k%50)) // a sum
			exp.addSum(eventType, int64(k%50), ts)
		case 2: // only ObservedTimestamp; enduser.id as the fallback attribute
			lr := recsAnon.AppendEmpty()
			lr.SetEventName(eventType)
			lr.SetObservedTimestamp(pcommon.NewTimestampFromTime(ts))
			user := users[(k+1)%len(users)]
			lr.Attributes().PutStr("enduser.id", user)
			exp.add(eventType, user, ts)
		case 3: // integer user id
			lr := recsAnon.AppendEmpty()
			lr.SetEventName(eventType)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
			lr.Attributes().PutInt("user.id", int64(k%3))
			exp.add(eventType, strconv.Itoa(k%3), ts)
		case 4: // no user at all: counts, no per-user row
			lr := recsAnon.AppendEmpty()
			lr.SetEventName(eventType)
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
			exp.add(eventType, "", ts)
		case 5: // no event type: dropped, counted in the drop metric only
			lr := recsAnon.AppendEmpty()
			lr.Body().SetStr("just a log line")
			lr.SetTimestamp(pcommon.NewTimestampFromTime(ts))
		}
	}
	// Like an SDK that sets log.record.uid, every record carries its own
	// identity (batch and position): the exporter recognizes a resend of a
	// batch by it, and counts each distinct batch.
	for r := range ld.ResourceLogs().Len() {
		lrs := ld.ResourceLogs().At(r).ScopeLogs().At(0).LogRecords()
		for i := range lrs.Len() {
			lrs.At(i).Attributes().PutStr("log.record.uid", "batch-"+strconv.Itoa(seed)+"-"+strconv.Itoa(r)+"-"+strconv.Itoa(i))
		}
	}
	return ld
}

// spanIDs returns the trace id of batch seed and the span id of its i-th span
// (never all zero, as an SDK's).
func spanIDs(seed, i int) (pcommon.TraceID, pcommon.SpanID) {
	var tid [16]byte
	binary.BigEndian.PutUint64(tid[:8], uint64(seed)) //nolint:gosec // test ids are not negative
	tid[15] = 1
	var sid [8]byte
	binary.BigEndian.PutUint64(sid[:], uint64(i)+1) //nolint:gosec // test ids are not negative
	return tid, sid
}

// tracesBatch builds n spans: the span name is the event type; every third
// span carries a span event, counted under its own name.
func tracesBatch(n, seed int, exp *expected) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	for i := range n {
		k := i + seed*104729
		eventType := "span:" + eventTypes[k%len(eventTypes)]
		ts := base.Add(time.Duration(k%4) * 61 * time.Minute)
		sp := spans.AppendEmpty()
		sp.SetName(eventType)
		tid, sid := spanIDs(seed, i)
		sp.SetTraceID(tid)
		sp.SetSpanID(sid)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(ts))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(ts.Add(time.Millisecond)))
		user := ""
		if k%2 == 0 {
			user = users[k%len(users)]
			sp.Attributes().PutStr("enduser.id", user)
		}
		exp.add(eventType, user, ts)
		model := ""
		if k%5 < 2 { // a property on the span, which its events inherit
			model = models[k%len(models)]
			sp.Attributes().PutStr(modelProperty, model)
			exp.addProp(eventType, model, ts)
		}
		if k%3 == 0 { // a product event recorded on the span, with its own time and tokens
			se := sp.Events().AppendEmpty()
			se.SetName("event:" + eventTypes[k%len(eventTypes)])
			se.SetTimestamp(pcommon.NewTimestampFromTime(ts.Add(time.Minute)))
			se.Attributes().PutInt(tokensSum, int64(k%7))
			exp.add(se.Name(), user, ts.Add(time.Minute))
			exp.addSum(se.Name(), int64(k%7), ts.Add(time.Minute))
			if model != "" {
				exp.addProp(se.Name(), model, ts.Add(time.Minute))
			}
		}
	}
	return td
}
