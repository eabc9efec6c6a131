package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/sdkload"
	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// TestSDKClientsAtDefaultSettingsDropNothing runs what deployments run:
// a few application instances, each with the OTel Go SDK log pipeline at its
// default settings (batch processor: queue 2048, exports of up to 512, one
// export in flight), against the distro with the sample config. An instance
// delivers at most ~512 records per export latency; above that its queue
// overflows and the SDK drops records silently. At 5,000 records/s per
// instance the collector must answer exports in well under ~100 ms on
// average for nothing to be dropped, and must count exactly what was
// emitted.
//
// Not a timing test: the bound is two orders of magnitude above what a
// collector that applies each request at once needs, and a slow machine
// emits less rather than dropping.
func TestSDKClientsAtDefaultSettingsDropNothing(t *testing.T) {
	t.Parallel()
	runSDKClientsDropNothing(t, "") // the sample config
}

// runSDKClientsDropNothing is the test above against the distro started with
// config ("": testdata/config.yaml).
func runSDKClientsDropNothing(t *testing.T, config string) {
	t.Helper()
	ctx := t.Context()
	rdb, prefix := testservers.SharedRedis(t)
	dsn := testservers.FreshDatabase(t)
	loader := sdkloadBinary(t)
	d := startDistro(t, distroEnv{
		RedisEndpoint: testservers.RedisEndpoint(), PostgresDSN: dsn, KeyPrefix: prefix,
		FlushInterval: time.Second, Config: config,
	})

	res := runSDKLoad(ctx, t, loader,
		"-endpoint", strings.TrimPrefix(d.httpURL, "http://"),
		"-instances", "4", "-rate", "5000", "-duration", "4s",
		"-events", "sdk:page_view,sdk:generation_completed",
		"-shutdown-timeout", "10s")
	t.Logf("4 SDK instances at default settings: %s", res)
	t.Logf("export latency: p50=%s p99=%s max=%s over %d exports",
		res.Latency.P50, res.Latency.P99, res.Latency.Max, res.Latency.Count)
	d.stop() // final flush
	got := tableRows(ctx, t, dsn)

	require.Positive(t, res.Emitted)
	assert.Zero(t, res.Dropped(), "records dropped inside the SDKs: %d of %d (%.1f%%)",
		res.Dropped(), res.Emitted, 100*res.DropRatio())
	assert.Zero(t, res.ExportErrors, "failed export calls")
	assert.Equal(t, res.Exported-res.Failed, sum(got.daily), "the collector counts what the SDKs delivered")

	want := map[string]int64{}
	for k, n := range res.Expected {
		want[k.EventType+"|"+k.Day] = n
	}
	assert.Equal(t, want, got.daily, "analytics_daily holds every emitted record")
	assert.Equal(t, res.Emitted, sum(got.hourly), "analytics_hourly total")
	assert.Equal(t, res.Emitted, sum(got.userDaily), "analytics_user_daily total (every record has a user)")
	assertRedisDrained(ctx, t, rdb, prefix)
}

// sdkloadBinary is $SDKLOAD_BIN or cmd/sdkload built into a temp dir. It is
// built without the race detector even under `go test -race`: the race
// detector makes the SDK's export path several times slower, and the test
// would measure that instead of the collector. The flags are ocb's, so the
// dependencies come from the build cache `make build` filled.
func sdkloadBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SDKLOAD_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "sdkload")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/sdkload")
	cmd.Dir = repoRoot(t)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/sdkload:\n%s", out)
	return bin
}

// runSDKLoad runs the sdkload binary with args (plus -json) and returns its
// result; it fails the test if the run fails.
func runSDKLoad(ctx context.Context, t *testing.T, bin string, args ...string) sdkload.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "-json")...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "sdkload %s:\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
	var res sdkload.Result
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &res), "sdkload output:\n%s", stdout.String())
	return res
}
