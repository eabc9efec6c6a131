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
	pairCounter
}

func newConverter() *converter { return &converter{pairCounter: newPairCounter()} }

// addEvent counts one event and returns the hash of its (type, user) pair,
// which the resource fingerprint folds in.
func (c *converter) addEvent(ev event) uint64 {
	idx := c.count(pairKey{typ: ev.typ, user: ev.user}, ev.hour, 1)
	return c.pairs[idx].hash
}

// takeEntry returns the entry counted so far and empties the counter.
func (c *converter) takeEntry(fp *fpState, records, missing int64) entryCounts {
	n := len(c.overflow)
	for i := range c.pairs {
		n += len(c.pairs[i].hours)
	}
	en := entryCounts{records: records, missing: missing}
	if fp.ok && records > missing {
		en.fp, en.fingerprinted = fp.sum(), true
	}
	if n > 0 {
		en.pairs = make([]pairKey, len(c.pairs))
		en.counts = make([]eventCount, 0, n)
	}
	for i := range c.pairs {
		p := &c.pairs[i]
		en.pairs[i] = p.key
		for _, hc := range p.hours {
			en.counts = append(en.counts, eventCount{pair: int32(i), hour: hc.hour, n: hc.n})
		}
	}
	for ph, cnt := range c.overflow { // rare: pairs with more than maxPairHours hours
		en.counts = append(en.counts, eventCount{pair: ph.pair, hour: ph.hour, n: cnt})
	}
	c.reset()
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
	req := &countsRequest{entries: make([]entryCounts, 0, rls.Len())}
	for i := range rls.Len() {
		rl := rls.At(i)
		resUser := m.resourceUser(rl.Resource())
		fp := newFPState(resUser)
		var records, missing int64
		sls := rl.ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			records += int64(lrs.Len())
			for k := range lrs.Len() {
				lr := lrs.At(k)
				ev, ok := m.logEvent(lr, resUser, nowNanos)
				if !ok {
					missing++
					continue
				}
				fp.addLog(lr, c.addEvent(ev))
			}
		}
		req.addEntry(c.takeEntry(&fp, records, missing))
	}
	return req
}

// traces counts td per resource entry.
func (c *converter) traces(td ptrace.Traces, m *mapper, nowNanos int64) *countsRequest {
	rss := td.ResourceSpans()
	req := &countsRequest{entries: make([]entryCounts, 0, rss.Len())}
	for i := range rss.Len() {
		rs := rss.At(i)
		resUser := m.resourceUser(rs.Resource())
		fp := newFPState(resUser)
		var records, missing int64
		sss := rs.ScopeSpans()
		for j := range sss.Len() {
			spans := sss.At(j).Spans()
			records += int64(spans.Len())
			for k := range spans.Len() {
				span := spans.At(k)
				ev, ok := m.spanEvent(span, resUser, nowNanos)
				if !ok {
					missing++
					continue
				}
				fp.addSpan(span, c.addEvent(ev))
			}
		}
		req.addEntry(c.takeEntry(&fp, records, missing))
	}
	return req
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
