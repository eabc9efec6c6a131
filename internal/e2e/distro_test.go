package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	Config        string   // defaults to testdata/config.yaml
	Env           []string // more environment variables, KEY=value
	// Overrides are settings merged over Config, each a YAML line with a
	// "::"-separated path, e.g. "extensions::healthcheckv2::component_health::recovery_duration: 2s"
	// (passed as --config yaml:<line>).
	Overrides []string
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
	// queryURL is the analytics_query extension's base URL.
	queryURL string
}

// startDistro starts a collector and waits until it is healthy.
func startDistro(t testing.TB, env distroEnv) *distro {
	t.Helper()
	d := launchDistro(t, env)
	d.waitHealthy()
	return d
}

// launchDistro starts a collector without waiting for it; it is killed at
// cleanup.
func launchDistro(t testing.TB, env distroEnv) *distro {
	t.Helper()
	cfg := env.Config
	if cfg == "" {
		cfg = filepath.Join(repoRoot(t), "testdata", "config.yaml")
	}
	grpcPort, httpPort := testservers.FreePort(t), testservers.FreePort(t)
	healthPort, metricsPort := testservers.FreePort(t), testservers.FreePort(t)
	queryPort := testservers.FreePort(t)
	args := []string{"--config", cfg}
	for _, o := range env.Overrides {
		args = append(args, "--config", "yaml:"+o)
	}
	cmd := exec.Command(distroBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"REDIS_ENDPOINT="+env.RedisEndpoint,
		"POSTGRES_DSN="+env.PostgresDSN,
		"ANALYTICS_KEY_PREFIX="+env.KeyPrefix,
		"FLUSH_INTERVAL="+env.FlushInterval.String(),
		"OTLP_GRPC_ENDPOINT=127.0.0.1:"+strconv.Itoa(grpcPort),
		"OTLP_HTTP_ENDPOINT=127.0.0.1:"+strconv.Itoa(httpPort),
		"HEALTH_CHECK_ENDPOINT=127.0.0.1:"+strconv.Itoa(healthPort),
		"METRICS_PORT="+strconv.Itoa(metricsPort),
		"QUERY_ENDPOINT=127.0.0.1:"+strconv.Itoa(queryPort),
	)
	cmd.Env = append(cmd.Env, env.Env...)
	d := &distro{
		t:          t,
		cmd:        cmd,
		exited:     make(chan struct{}),
		log:        &syncBuffer{},
		httpURL:    fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		healthURL:  fmt.Sprintf("http://127.0.0.1:%d/", healthPort),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
		queryURL:   fmt.Sprintf("http://127.0.0.1:%d", queryPort),
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
	return d
}

func (d *distro) output() string { return d.log.String() }

func (d *distro) waitHealthy() {
	d.t.Helper()
	waitFor(d.t, 60*time.Second, 50*time.Millisecond, "collector not healthy", func() bool {
		select {
		case <-d.exited:
			d.t.Fatalf("collector exited before it became healthy: %v\n%s", d.waitErr, d.output())
		default:
		}
		resp, err := http.Get(d.healthURL) //nolint:noctx // short poll on loopback
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// stop sends SIGTERM and waits for a clean exit (the final flush runs then).
func (d *distro) stop() {
	d.t.Helper()
	d.terminate()
	d.waitStopped()
}

// terminate sends SIGTERM without waiting (stop several collectors at once
// with terminate, then waitStopped on each).
func (d *distro) terminate() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGTERM))
}

// waitStopped waits for the exit that terminate asked for and requires it clean.
func (d *distro) waitStopped() {
	d.t.Helper()
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

// kill sends SIGKILL and waits until the process is gone.
func (d *distro) kill() {
	d.t.Helper()
	require.NoError(d.t, d.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("collector did not die within 30s of SIGKILL")
	}
}

// post sends an OTLP/HTTP protobuf request and requires a 200.
func (d *distro) post(ctx context.Context, path string, body []byte) {
	d.t.Helper()
	require.NoError(d.t, d.send(ctx, path, body), "OTLP %s", path)
}

// send sends an OTLP/HTTP protobuf request and returns nil only for a 200
// (the request is acknowledged). It never fails the test, so load loops may
// call it from their own goroutines.
func (d *distro) send(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.httpURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("OTLP %s: HTTP %d: %s", path, resp.StatusCode, msg)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
	return nil
}
