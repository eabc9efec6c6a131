package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestSpanEventsFromTheGoSDK: an application records product events on its
// spans with the OTel Go SDK (span.AddEvent, the pattern tracing guides
// teach); the distro with the sample config counts each span and each span
// event, with the user of the event, else of the span.
func TestSpanEventsFromTheGoSDK(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Hour, // the final flush at stop
	})
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(strings.TrimPrefix(d.httpURL, "http://")), otlptracehttp.WithInsecure())
	require.NoError(t, err)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	tracer := tp.Tracer("shop")
	const n = 200
	for range n {
		_, span := tracer.Start(ctx, "checkout.request", trace.WithAttributes(attribute.String("enduser.id", "span-user")))
		span.AddEvent("add_to_cart")
		span.AddEvent("checkout_completed", trace.WithAttributes(attribute.String("user.id", "event-user")))
		span.End()
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, tp.Shutdown(shutdownCtx)) // exports everything, or fails
	d.stop()

	got := tableRows(ctx, t, dsn)
	assert.Equal(t, map[string]int64{"checkout.request": n, "add_to_cart": n, "checkout_completed": n}, withoutDay(got.daily))
	assert.Equal(t, map[string]int64{
		"span-user|checkout.request":    n,
		"span-user|add_to_cart":         n,
		"event-user|checkout_completed": n,
	}, withoutDay(got.userDaily))
}

// withoutDay sums rows keyed "...|YYYY-MM-DD" over their days (a run may
// cross midnight).
func withoutDay(rows map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range rows {
		out[k[:strings.LastIndexByte(k, '|')]] += v
	}
	return out
}
