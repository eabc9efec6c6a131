package redisanalyticsexporter

import (
	"context"

	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// converter is the scratch state of one conversion (an OTLP request into a
// countsRequest). Converters are pooled; one conversion uses one from one
// goroutine.
type converter struct {
	// identified counts the records of the current resource entry that carry
	// an identity (dedup.go), anonymous the others; with their details.
	identified        pairCounter
	anonymous         pairCounter
	identifiedDetails detailCounter
	anonymousDetails  detailCounter
	ids               identities
	// unmapped counts the entry's records that reach no counter.
	unmapped unmapped
}

// unmapped counts records that reach no counter, by reason.
type unmapped struct {
	missing, tooOld, inFuture int64
}

func (u *unmapped) add(reason dropReason) {
	switch reason {
	case reasonTooOld:
		u.tooOld++
	case reasonInFuture:
		u.inFuture++
	default:
		u.missing++
	}
}

func (u unmapped) total() int64 { return u.missing + u.tooOld + u.inFuture }

func newConverter() *converter {
	return &converter{identified: newPairCounter(), anonymous: newPairCounter()}
}

func (c *converter) reset() {
	c.identified.reset()
	c.anonymous.reset()
	c.identifiedDetails.reset()
	c.anonymousDetails.reset()
	c.ids.reset()
	c.unmapped = unmapped{}
}

// reusable reports whether the converter is small enough to keep pooled.
func (c *converter) reusable() bool {
	return c.identified.reusable() && c.anonymous.reusable() && cap(c.ids.buf) <= maxPooledIDBytes &&
		c.identifiedDetails.reusable() && c.anonymousDetails.reusable()
}

// count adds ev, with its details found in attrs, to the identified or the
// anonymous counts.
func (c *converter) count(ev event, identified bool, m *mapper, attrs ...pcommon.Map) {
	pc, d := &c.anonymous, &c.anonymousDetails
	if identified {
		pc, d = &c.identified, &c.identifiedDetails
	}
	pc.add(ev)
	// An invalid user id drops its event when the pair is admitted
	// (aggregate.go): its details must go with it.
	if m.hasDetails() && (ev.user.kind != userStr || validValue(ev.user.str)) {
		m.details(d, ev, attrs...)
	}
}

// maxPooledIDBytes bounds the identity buffer a pooled converter keeps.
const maxPooledIDBytes = 1 << 20

// takeEntries appends the resource entry counted so far to req, as up to
// two entries: the identified records with their fingerprint, and the
// anonymous ones with the records that reach no counter (unmapped). It
// empties the converter.
func (c *converter) takeEntries(req *countsRequest) {
	if c.ids.n > 0 {
		en := takeCounts(&c.identified, c.ids.n)
		en.fp, en.fingerprinted = c.ids.sum(), true
		c.identifiedDetails.take(&en)
		req.addEntry(en)
	}
	if anonymous, u := c.anonymous.total, c.unmapped; anonymous > 0 || u.total() > 0 {
		en := takeCounts(&c.anonymous, anonymous+u.total())
		en.missing, en.tooOld, en.inFuture = u.missing, u.tooOld, u.inFuture
		c.anonymousDetails.take(&en)
		req.addEntry(en)
	}
	c.reset()
}

// takeCounts returns pc's counts as an entry of the given number of records.
func takeCounts(pc *pairCounter, records int64) entryCounts {
	n := len(pc.overflow)
	for i := range pc.pairs {
		n += len(pc.pairs[i].hours)
	}
	en := entryCounts{records: records}
	if n > 0 {
		en.pairs = make([]pairKey, len(pc.pairs))
		en.counts = make([]eventCount, 0, n)
	}
	for i := range pc.pairs {
		p := &pc.pairs[i]
		en.pairs[i] = p.key
		for _, hc := range p.hours {
			en.counts = append(en.counts, eventCount{pair: int32(i), hour: hc.hour, n: hc.n})
		}
	}
	for ph, cnt := range pc.overflow { // rare: pairs with more than maxPairHours hours
		en.counts = append(en.counts, eventCount{pair: ph.pair, hour: ph.hour, n: cnt})
	}
	return en
}

// convertLogs maps and counts every log record of ld (the exporterhelper
// converter: it runs in the caller's goroutine, before the sending queue).
// Records without an event type are counted as drops when the request is
// pushed; conversion itself never fails. With release_records, ld is emptied
// afterwards (the exporter then declares MutatesData).
func (e *redisAnalyticsExporter) convertLogs(_ context.Context, ld plog.Logs) (xexporterhelper.Request, error) {
	c := e.getConverter()
	defer e.putConverter(c)
	req := c.logs(ld, &e.mapper, e.now().UnixNano())
	if e.cfg.ReleaseRecords {
		ld.ResourceLogs().RemoveIf(func(plog.ResourceLogs) bool { return true })
	}
	return req, nil
}

// convertTraces maps and counts every span of td; see convertLogs.
func (e *redisAnalyticsExporter) convertTraces(_ context.Context, td ptrace.Traces) (xexporterhelper.Request, error) {
	c := e.getConverter()
	defer e.putConverter(c)
	req := c.traces(td, &e.mapper, e.now().UnixNano())
	if e.cfg.ReleaseRecords {
		td.ResourceSpans().RemoveIf(func(ptrace.ResourceSpans) bool { return true })
	}
	return req, nil
}

// logs counts ld per resource entry; records without a timestamp fall in
// the hour of nowNanos.
func (c *converter) logs(ld plog.Logs, m *mapper, nowNanos int64) *countsRequest {
	rls := ld.ResourceLogs()
	req := &countsRequest{entries: make([]entryCounts, 0, rls.Len()), items: ld.LogRecordCount()}
	for i := range rls.Len() {
		rl := rls.At(i)
		res := rl.Resource()
		resUser := m.resourceUser(res)
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lr := lrs.At(k)
				ev, reason, ok := m.logEvent(lr, resUser, nowNanos)
				if !ok {
					c.unmapped.add(reason)
					continue
				}
				c.count(ev, c.ids.addLog(lr, m.recordIDAttrs), m, lr.Attributes(), res.Attributes())
			}
		}
		c.takeEntries(req)
	}
	return req
}

// traces counts td per resource entry: each span (count_spans) and each span
// event (count_span_events) is an event.
func (c *converter) traces(td ptrace.Traces, m *mapper, nowNanos int64) *countsRequest {
	rss := td.ResourceSpans()
	req := &countsRequest{entries: make([]entryCounts, 0, rss.Len()), items: td.SpanCount()}
	for i := range rss.Len() {
		rs := rss.At(i)
		res := rs.Resource()
		resUser := m.resourceUser(res)
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				span := spans.At(k)
				if m.spans {
					c.addSpan(span, m, res, resUser, nowNanos)
				}
				if m.spanEvents {
					c.addSpanEvents(span, m, res, resUser, nowNanos)
				}
			}
		}
		c.takeEntries(req)
	}
	return req
}

// addSpan counts span as an event.
func (c *converter) addSpan(span ptrace.Span, m *mapper, res pcommon.Resource, resUser userRef, nowNanos int64) {
	ev, reason, ok := m.fromSpan(span, resUser, nowNanos)
	if !ok {
		c.unmapped.add(reason)
		return
	}
	c.count(ev, c.ids.addSpan(span), m, span.Attributes(), res.Attributes())
}

// addSpanEvents counts each event of span.
func (c *converter) addSpanEvents(span ptrace.Span, m *mapper, res pcommon.Resource, resUser userRef, nowNanos int64) {
	events := span.Events()
	if events.Len() == 0 {
		return
	}
	spanUser := m.userOf(span.Attributes(), resUser)
	for i := range events.Len() {
		se := events.At(i)
		ev, reason, ok := m.fromSpanEvent(se, span, spanUser, nowNanos)
		if !ok {
			c.unmapped.add(reason)
			continue
		}
		c.count(ev, c.ids.addSpanEvent(span, i, se), m, se.Attributes(), span.Attributes(), res.Attributes())
	}
}

func (e *redisAnalyticsExporter) getConverter() *converter {
	c, _ := e.converters.Get().(*converter)
	return c
}

func (e *redisAnalyticsExporter) putConverter(c *converter) {
	if c.reusable() {
		c.reset()
		e.converters.Put(c)
	}
}
