package analyticsqueryextension

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/otelcol-analytics/otelcol-analytics/analyticsqueryextension/internal/metadata"
	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// notConnected is a flusher that has not reached its servers yet.
type notConnected struct {
	component.StartFunc
	component.ShutdownFunc
}

func (notConnected) Backends() (protocol.Backends, error) {
	return protocol.Backends{}, protocol.ErrFlusherNotConnected
}

// other is an extension that is no flusher.
type other struct {
	component.StartFunc
	component.ShutdownFunc
}

func newTestExtension(t *testing.T) *queryExtension {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.ServerConfig.NetAddr.Endpoint = "127.0.0.1:0"
	return newQueryExtension(cfg, extensiontest.NewNopSettings(metadata.Type))
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("flusher missing", func(t *testing.T) {
		e := newTestExtension(t)
		err := e.Start(ctx, &testHost{})
		require.ErrorContains(t, err, `flusher extension "pg_flush" not found: add it to service::extensions`)
		require.NoError(t, e.Shutdown(ctx))
	})
	t.Run("not a flusher", func(t *testing.T) {
		e := newTestExtension(t)
		err := e.Start(ctx, &testHost{exts: map[component.ID]component.Component{flusherID: other{}}})
		require.ErrorContains(t, err, `extension "pg_flush" is not a pg_flush extension`)
	})
	t.Run("shutdown without start, twice", func(t *testing.T) {
		e := newTestExtension(t)
		require.NoError(t, e.Shutdown(ctx))
		require.NoError(t, e.Shutdown(ctx))
		require.ErrorIs(t, e.Start(ctx, &testHost{}), errStartTwice)
	})
	t.Run("flusher not connected yet", func(t *testing.T) {
		e := newTestExtension(t)
		require.NoError(t, e.Start(ctx, &testHost{exts: map[component.ID]component.Component{flusherID: notConnected{}}}))
		t.Cleanup(func() { assert.NoError(t, e.Shutdown(context.WithoutCancel(ctx))) })
		assert.Equal(t, []component.ID{flusherID}, e.Dependencies())
		base := "http://" + e.addr
		status, body := get(ctx, t, base, "/healthz")
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Contains(t, string(body), "not connected")
		status, resp := post(ctx, t, base, `{"metrics":["events"],"date_range":"day"}`)
		assert.Equal(t, http.StatusServiceUnavailable, status)
		assert.Contains(t, resp.Error, "not connected")
		require.ErrorIs(t, e.Start(ctx, &testHost{}), errStartTwice)
	})
}
