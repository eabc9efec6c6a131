package redisanalyticsexporter

import (
	"encoding/binary"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// telemetrygenTraces builds spans shaped like telemetrygen's (the load of
// `make bench`): traces of a parent and a child span with two unrelated
// attributes and a user id, in one resource.
func telemetrygenTraces(n int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "telemetrygen")
	spans := rs.ScopeSpans().AppendEmpty().Spans()
	spans.EnsureCapacity(n)
	start := benchDay().Add(12 * time.Hour)
	for i := range n {
		span := spans.AppendEmpty()
		var tid [16]byte
		var sid [8]byte
		binary.LittleEndian.PutUint64(tid[:], uint64(i/2)+1)
		binary.LittleEndian.PutUint64(sid[:], uint64(i)+1)
		span.SetTraceID(tid)
		span.SetSpanID(sid)
		if i%2 == 0 {
			span.SetName("lets-go")
		} else {
			span.SetName("okey-dokey-" + strconv.Itoa(i%2))
		}
		ts := start.Add(time.Duration(i) * time.Microsecond)
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(ts))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(ts.Add(time.Millisecond)))
		span.Attributes().PutStr("network.peer.address", "1.2.3.4")
		span.Attributes().PutStr("peer.service", "telemetrygen-server")
		span.Attributes().PutStr("user.id", "bench-user")
	}
	return td
}

// BenchmarkConvert measures the conversion of one OTLP request into counts,
// which runs in the receiver's goroutine for every request (logs: the
// batch of BenchmarkAggregate with 100 users; traces: telemetrygen's spans).
func BenchmarkConvert(b *testing.B) {
	cfg := createDefaultConfig().(*Config)
	m := newMapper(cfg)
	now := time.Now().UnixNano()
	b.Run("logs", func(b *testing.B) {
		ld := realisticLogs(100)
		c := newConverter()
		b.ReportAllocs()
		for b.Loop() {
			_ = c.logs(ld, &m, now)
		}
		b.ReportMetric(float64(b.N*ld.LogRecordCount())/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("traces", func(b *testing.B) {
		td := telemetrygenTraces(2048)
		c := newConverter()
		b.ReportAllocs()
		for b.Loop() {
			_ = c.traces(td, &m, now)
		}
		b.ReportMetric(float64(b.N*td.SpanCount())/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkConvertDetails is BenchmarkConvert/logs for each of
// detailVariants (compare with benchstat -col /details).
func BenchmarkConvertDetails(b *testing.B) {
	now := time.Now().UnixNano()
	for _, v := range detailVariants {
		b.Run("details="+v.name, func(b *testing.B) {
			cfg := createDefaultConfig().(*Config)
			v.configure(cfg)
			m := newMapper(cfg)
			ld := realisticLogs(100)
			v.decorate(ld)
			c := newConverter()
			b.ReportAllocs()
			for b.Loop() {
				_ = c.logs(ld, &m, now)
			}
			reportPerEvent(b, ld.LogRecordCount())
		})
	}
}

// BenchmarkConvertAfterDecode measures the conversion where the distro runs
// it: right after the receiver decoded the request, when the spans are fresh
// in memory but not all in the CPU caches (BenchmarkConvert converts the same
// request over and over, from the caches). The conversion's cost in the
// distro is the difference between the two sub-benchmarks' ns/span.
func BenchmarkConvertAfterDecode(b *testing.B) {
	cfg := createDefaultConfig().(*Config)
	m := newMapper(cfg)
	now := time.Now().UnixNano()
	const spans = 2048
	var marshaler ptrace.ProtoMarshaler
	encoded, err := marshaler.MarshalTraces(telemetrygenTraces(spans))
	if err != nil {
		b.Fatal(err)
	}
	var unmarshaler ptrace.ProtoUnmarshaler
	decode := func(b *testing.B) ptrace.Traces {
		td, decodeErr := unmarshaler.UnmarshalTraces(encoded)
		if decodeErr != nil {
			b.Fatal(decodeErr)
		}
		return td
	}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = decode(b)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
	})
	b.Run("decode+convert", func(b *testing.B) {
		c := newConverter()
		b.ReportAllocs()
		for b.Loop() {
			_ = c.traces(decode(b), &m, now)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*spans), "ns/span")
	})
}
