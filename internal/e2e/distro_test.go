package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otelcol-analytics/otelcol-analytics/internal/testservers"
)

// repoRoot is the repository root, found from this file's location.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// distroBinary is $OTELCOL_BIN or bin/otelcol-analytics; `make test` builds it.
func distroBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("OTELCOL_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), "bin", "otelcol-analytics")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("distro binary %s not found: run `make build` (make test builds it): %v", bin, err)
	}
	return bin
}

// distroEnv is what one collector process is configured with.
type distroEnv struct {
	RedisEndpoint string
	PostgresDSN   string
	KeyPrefix     string
	FlushInterval time.Duration
	Config        string // defaults to testdata/config.yaml
}

// distro is a running collector child process.
type distro struct {
	t          testing.TB
	cmd        *exec.Cmd
	exited     chan struct{}
	waitErr    error
	log        *syncBuffer
	httpURL    string
	healthURL  string
	metricsURL string
}

func startDistro(t testing.TB, env distroEnv) *distro {
	t.Helper()
	cfg := env.Config
	if cfg == "" {
		cfg = filepath.Join(repoRoot(t), "testdata", "config.yaml")
	}
	grpcPort, httpPort := testservers.FreePort(t), testservers.FreePort(t)
	healthPort, metricsPort := testservers.FreePort(t), testservers.FreePort(t)
	cmd := exec.Command(distroBinary(t), "--config", cfg)
	cmd.Env = append(os.Environ(),
		"REDIS_ENDPOINT="+env.RedisEndpoint,
		"POSTGRES_DSN="+env.PostgresDSN,
		"ANALYTICS_KEY_PREFIX="+env.KeyPrefix,
		"FLUSH_INTERVAL="+env.FlushInterval.String(),
		"OTLP_GRPC_ENDPOINT=127.0.0.1:"+strconv.Itoa(grpcPort),
		"OTLP_HTTP_ENDPOINT=127.0.0.1:"+strconv.Itoa(httpPort),
		"HEALTH_CHECK_ENDPOINT=127.0.0.1:"+strconv.Itoa(healthPort),
		"METRICS_PORT="+strconv.Itoa(metricsPort),
	)
	d := &distro{
		t:          t,
		cmd:        cmd,
		exited:     make(chan struct{}),
		log:        &syncBuffer{},
		httpURL:    fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		healthURL:  fmt.Sprintf("http://127.0.0.1:%d/", healthPort),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
	}
	cmd.Stdout, cmd.Stderr = d.log, d.log
	require.NoError(t, cmd.Start())
	go func() { d.waitErr = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			t.Logf("collector output:\n%s", d.output())
		}
	})
	d.waitHealthy()
	return d
}

func (d *distro) output() string { return d.log.String() }

func (d *distro) waitHealthy() {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.exited:
			d.t.Fatalf("collector exited before it became healthy: %v\n%s", d.waitErr, d.output())
		default:
		}
		resp, err := http.Get(d.healthURL) //nolint:noctx // short poll on loopback
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("collector not healthy after 60s:\n%s", d.output())
}

// stop sends SIGTERM and waits for a clean exit (the final flush runs then).
func (d *distro) stop() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		d.t.Fatalf("collector did not stop within 60s:\n%s", d.output())
	}
	if _, ok := errors.AsType[*exec.ExitError](d.waitErr); ok {
		d.t.Fatalf("collector exited with %v:\n%s", d.waitErr, d.output())
	}
	require.NoError(d.t, d.waitErr)
}

// post sends an OTLP/HTTP protobuf request and requires a 200.
func (d *distro) post(ctx context.Context, path string, body []byte) {
	d.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.httpURL+path, bytes.NewReader(body))
	require.NoError(d.t, err)
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	require.Equal(d.t, http.StatusOK, resp.StatusCode, "OTLP %s", path)
}
