package sdkload

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
)

// fakeCollector accepts OTLP logs over HTTP and gRPC, answers each request
// after delay, and keeps what it received.
type fakeCollector struct {
	plogotlp.UnimplementedGRPCServer
	delay time.Duration

	mu       sync.Mutex
	received Expected
	records  int64
	invalid  int64 // records without user.id or log.record.uid
}

func newFakeCollector(delay time.Duration) *fakeCollector {
	return &fakeCollector{delay: delay, received: Expected{}}
}

func (c *fakeCollector) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	c.add(req.Logs())
	time.Sleep(c.delay) // the latency under test
	return plogotlp.NewExportResponse(), nil
}

func (c *fakeCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	req := plogotlp.NewExportRequest()
	if err == nil {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, _ = c.Export(r.Context(), req)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

func (c *fakeCollector) add(ld plog.Logs) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range ld.ResourceLogs().Len() {
		sls := ld.ResourceLogs().At(i).ScopeLogs()
		for j := range sls.Len() {
			lrs := sls.At(j).LogRecords()
			for k := range lrs.Len() {
				lr := lrs.At(k)
				c.records++
				c.received[EventDay{EventType: lr.EventName(), Day: utcDay(lr.Timestamp().AsTime())}]++
				_, hasUser := lr.Attributes().Get("user.id")
				_, hasUID := lr.Attributes().Get("log.record.uid")
				if !hasUser || !hasUID {
					c.invalid++
				}
			}
		}
	}
}

// start serves c on a loopback port with protocol and returns host:port.
func (c *fakeCollector) start(t *testing.T, protocol Protocol) string {
	t.Helper()
	if protocol == ProtocolHTTP {
		srv := httptest.NewServer(c)
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	lis, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	plogotlp.RegisterGRPCServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func TestRunDeliversEverythingToAFastCollector(t *testing.T) {
	t.Parallel()
	for _, protocol := range []Protocol{ProtocolHTTP, ProtocolGRPC} {
		t.Run(string(protocol), func(t *testing.T) {
			t.Parallel()
			collector := newFakeCollector(0)
			res, err := Run(t.Context(), Options{
				Endpoint:   collector.start(t, protocol),
				Protocol:   protocol,
				Instances:  2,
				Rate:       2000,
				Duration:   time.Second,
				EventNames: []string{"page_view", "signup"},
			})
			require.NoError(t, err)
			t.Log(res)

			assert.Positive(t, res.Emitted)
			assert.LessOrEqual(t, res.Emitted, int64(2*2000))
			assert.Zero(t, res.Dropped())
			assert.Equal(t, res.Emitted, res.Exported)
			assert.Zero(t, res.ExportErrors)
			assert.Zero(t, res.Failed)
			assert.Equal(t, res.Emitted, res.Expected.Total())
			types := map[string]bool{}
			for k := range res.Expected {
				types[k.EventType] = true
			}
			assert.Equal(t, map[string]bool{"page_view": true, "signup": true}, types)
			assert.Positive(t, res.Latency.Count)
			assert.LessOrEqual(t, res.Latency.P50, res.Latency.Max)

			collector.mu.Lock()
			defer collector.mu.Unlock()
			assert.Equal(t, res.Expected, collector.received)
			assert.Zero(t, collector.invalid, "every record has user.id and log.record.uid")
		})
	}
}

// A collector that takes 500 ms per request caps a default batch processor
// at ~1k records/s (512 per export): the SDK drops most of 10k/s.
func TestRunMeasuresDropsOfASlowCollector(t *testing.T) {
	t.Parallel()
	collector := newFakeCollector(500 * time.Millisecond)
	res, err := Run(t.Context(), Options{
		Endpoint: collector.start(t, ProtocolHTTP),
		Rate:     10000,
		Duration: time.Second,
	})
	require.NoError(t, err)
	t.Log(res)

	assert.Positive(t, res.Dropped())
	assert.Zero(t, res.ExportErrors)
	assert.GreaterOrEqual(t, res.Latency.P50, 500*time.Millisecond)
	collector.mu.Lock()
	defer collector.mu.Unlock()
	assert.Equal(t, res.Exported, collector.records, "what the exporter got reached the collector")
}

func TestRunRejectsInvalidOptions(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Options{Protocol: "udp", Instances: -1, EventNames: []string{""}})
	for _, want := range []error{errNoEndpoint, errNoRate, errNoDuration, errNegative, errEmptyEvents} {
		require.ErrorIs(t, err, want)
	}
	assert.ErrorContains(t, err, `invalid protocol "udp"`)
}
