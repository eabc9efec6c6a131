package redisanalyticsexporter

import (
	"context"

	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// converter is the scratch state of one conversion (an OTLP request into a
// countsRequest). Converters are pooled; one conversion uses one from one
// goroutine.
type converter struct {
	// identified counts the records of the current resource entry that carry
	// an identity (dedup.go), anonymous the others.
	identified pairCounter
	anonymous  pairCounter
	ids        identities
}

func newConverter() *converter {
	return &converter{identified: newPairCounter(), anonymous: newPairCounter()}
}

func (c *converter) reset() {
	c.identified.reset()
	c.anonymous.reset()
	c.ids.reset()
}

// reusable reports whether the converter is small enough to keep pooled.
func (c *converter) reusable() bool {
	return c.identified.reusable() && c.anonymous.reusable() && cap(c.ids.buf) <= maxPooledIDBytes
}

// maxPooledIDBytes bounds the identity buffer a pooled converter keeps.
const maxPooledIDBytes = 1 << 20

// takeEntries appends the resource entry counted so far to req, as up to
// two entries: the identified records with their fingerprint, and the
// anonymous ones with the records that have no event type (missing). It
// empties the converter.
func (c *converter) takeEntries(req *countsRequest, missing int64) {
	if c.ids.n > 0 {
		en := takeCounts(&c.identified, c.ids.n)
		en.fp, en.fingerprinted = c.ids.sum(), true
		req.addEntry(en)
	}
	if anonymous := c.anonymous.total; anonymous > 0 || missing > 0 {
		en := takeCounts(&c.anonymous, anonymous+missing)
		en.missing = missing
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
		resUser := m.resourceUser(rl.Resource())
		var missing int64
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lr := lrs.At(k)
				ev, ok := m.logEvent(lr, resUser, nowNanos)
				if !ok {
					missing++
					continue
				}
				if c.ids.addLog(lr, m.recordIDAttrs) {
					c.identified.add(ev)
				} else {
					c.anonymous.add(ev)
				}
			}
		}
		c.takeEntries(req, missing)
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
		resUser := m.resourceUser(rs.Resource())
		var missing int64
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			for k := range spans.Len() {
				span := spans.At(k)
				if m.spans {
					missing += c.addSpan(span, m, resUser, nowNanos)
				}
				if m.spanEvents {
					missing += c.addSpanEvents(span, m, resUser, nowNanos)
				}
			}
		}
		c.takeEntries(req, missing)
	}
	return req
}

// addSpan counts span as an event; it returns 1 when the span has no name.
func (c *converter) addSpan(span ptrace.Span, m *mapper, resUser userRef, nowNanos int64) (missing int64) {
	ev, ok := m.fromSpan(span, resUser, nowNanos)
	if !ok {
		return 1
	}
	if c.ids.addSpan(span) {
		c.identified.add(ev)
	} else {
		c.anonymous.add(ev)
	}
	return 0
}

// addSpanEvents counts each event of span; it returns how many have no name.
func (c *converter) addSpanEvents(span ptrace.Span, m *mapper, resUser userRef, nowNanos int64) (missing int64) {
	events := span.Events()
	if events.Len() == 0 {
		return 0
	}
	spanUser := m.userOf(span.Attributes(), resUser)
	for i := range events.Len() {
		se := events.At(i)
		ev, ok := m.fromSpanEvent(se, span, spanUser, nowNanos)
		if !ok {
			missing++
			continue
		}
		if c.ids.addSpanEvent(span, i, se) {
			c.identified.add(ev)
		} else {
			c.anonymous.add(ev)
		}
	}
	return missing
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
