// Command benchrun is the `make bench` driver: the end-to-end comparison with
// a do-nothing pipeline, memory, the clients section and the benchmark
// targets (docs/performance.md).
//
// It starts what it needs and stops all of it, by PID (process group), even on
// failure or Ctrl-C:
//
//  1. a private redis-server on a free loopback port, pinned to the load CPU;
//  2. one distro per configuration, side by side on the collector CPU, each on
//     free ports with a fresh PostgreSQL database (dropped afterwards) and Redis
//     key prefix: the do-nothing baseline (testdata/bench/baseline-debug.yaml),
//     the sample config in durability mode (a) "acknowledge after Redis"
//     (testdata/config.yaml) and mode (b) "persistent sending queue"
//     (testdata/bench/persistent-queue.yaml);
//  3. telemetrygen (pinned v0.161.0, built once into a temp dir; OTLP/gRPC,
//     --rate 0) against each distro in turn, logs then traces, in interleaved
//     rounds so drift and other processes' noise fall on every configuration
//     alike. Per load it measures the collector's CPU time (utime+stime from
//     /proc/<pid>/stat, until the exporter has sent what was accepted), its
//     accepted records (its own Prometheus metrics) and, after SIGTERM and the
//     final flush, what PostgreSQL counted (analytics_daily) and what is still
//     in Redis;
//  4. a saturation probe on the sample config (more records in flight than its
//     sending queue holds) for the peak RSS (VmHWM);
//  5. the clients section (clients.go): OTel Go SDK instances at their
//     default settings (cmd/sdkload) against the baseline and the sample
//     config: export latency, SDK drops, exact totals, the largest steady
//     rate of one instance, and telemetrygen below saturation;
//  6. the Go benchmarks of every package: the exporter's with GOMAXPROCS=1 on
//     the collector CPU (Redis on the other one), the flush benchmark once at
//     1M per-user counters;
//
// and prints one summary with every target, the measured figure and the ratio
// (also written to bench-results.txt). Missed targets exit 0 unless -strict;
// errors exit 1. Run it with `make bench` (which builds the distro and makes
// sure PostgreSQL answers), or directly, e.g.:
//
//	go run ./tools/benchrun -duration 30s -rounds 3 -keep-tmp
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	root         string
	bin          string
	telemetrygen string
	out          string
	postgresDSN  string
	redisServer  string

	duration       time.Duration
	workers        int
	batchSize      int
	traceWorkers   int
	traceBatchSize int
	traceProcs     int
	rounds         int
	schedule       string
	probeWorkers   int
	benchCount     int
	probeDuration  time.Duration
	configs        string
	variants       variantFlag
	signals        string
	flushInterval  time.Duration
	drainTimeout   time.Duration
	timeout        time.Duration

	pin           string
	collectorCPUs string
	loadCPUs      string

	skipE2E     bool
	skipClients bool

	clientsDuration time.Duration
	steadyDuration  time.Duration
	unsaturatedRate int
	skipGoBench     bool
	flushCounters   int
	keepTmp         bool
	strict          bool
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.root, "root", ".", "repository root (where bin/, testdata/ and go.mod are)")
	flag.StringVar(&o.bin, "bin", "bin/otelcol-analytics", "distro binary, relative to -root")
	flag.StringVar(&o.telemetrygen, "telemetrygen", "",
		"telemetrygen binary (default: build the version pinned in internal/tools/telemetrygen/go.mod into a temp dir)")
	flag.StringVar(&o.out, "out", "bench-results.txt", "also write the summary to this file, relative to -root (empty: don't)")
	flag.StringVar(&o.postgresDSN, "postgres", envOr("POSTGRES_DSN", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"PostgreSQL maintenance DSN; a fresh database is created (and dropped) per configuration")
	flag.StringVar(&o.redisServer, "redis-server", "redis-server", "redis-server binary for the private Redis")
	flag.DurationVar(&o.duration, "duration", 36*time.Second, "load per configuration and signal (split over -rounds)")
	flag.IntVar(&o.rounds, "rounds", 6, "interleaved rounds of duration/rounds per configuration")
	flag.StringVar(&o.schedule, "schedule", scheduleTurns,
		"turns: the configurations are loaded one after another, each with the load CPU to itself; "+
			"paired: every configuration is loaded at the same time as the baseline (each with its own telemetrygen) "+
			"and compared with the baseline's figures of those slices: host drift cancels out (for A/B runs of settings), "+
			"but the two loads share the load CPU")
	flag.IntVar(&o.probeWorkers, "probe-workers", 256,
		"saturation probe on the sample config: telemetrygen logs workers (× -batch-size records in flight); 0 skips it")
	flag.DurationVar(&o.probeDuration, "probe-duration", 10*time.Second, "saturation probe duration")
	flag.IntVar(&o.workers, "workers", 16, "telemetrygen logs: workers")
	flag.IntVar(&o.batchSize, "batch-size", 512, "telemetrygen logs: records per OTLP request (512: the OTel SDKs' default export batch)")
	flag.IntVar(&o.traceProcs, "trace-procs", 4, "telemetrygen traces: processes run side by side")
	flag.IntVar(&o.traceWorkers, "trace-workers", 1, "telemetrygen traces: workers per process")
	flag.IntVar(&o.traceBatchSize, "trace-batch-size", 2048, "telemetrygen traces: spans per OTLP request")
	flag.StringVar(&o.signals, "signals", "logs,traces", "telemetrygen loads to run, comma-separated")
	flag.StringVar(&o.configs, "configs", "baseline,mode-a,mode-b",
		"e2e configurations to run, comma-separated (baseline, mode-a, mode-b)")
	flag.Var(&o.variants, "variant",
		"also measure another analytics config like mode (a), side by side: name=path (repeatable), e.g. -variant ft50=/tmp/ft50.yaml; "+
			"the file gets the same environment as testdata/config.yaml (endpoints, REDIS_ENDPOINT, POSTGRES_DSN, STORAGE_DIR)")
	flag.DurationVar(&o.flushInterval, "flush-interval", 10*time.Second, "FLUSH_INTERVAL for the pg_flush extension")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 60*time.Second,
		"after a load, how long to wait for the exporter to send what was accepted")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "overall deadline")
	flag.StringVar(&o.pin, "pin", "auto", "pin processes to CPUs with taskset: auto (when >= 2 CPUs), on, off")
	flag.StringVar(&o.collectorCPUs, "collector-cpus", "0", "taskset CPU list of the collector and the exporter benchmark")
	flag.StringVar(&o.loadCPUs, "load-cpus", "1", "taskset CPU list of telemetrygen and Redis")
	flag.BoolVar(&o.skipE2E, "skip-e2e", false, "skip the end-to-end runs (the clients section too)")
	flag.BoolVar(&o.skipClients, "skip-clients", false, "skip the clients section (OTel SDK instances at default settings)")
	flag.DurationVar(&o.clientsDuration, "clients-duration", 10*time.Second, "clients section: load per scenario and pipeline")
	flag.DurationVar(&o.steadyDuration, "steady-duration", 5*time.Second, "clients section: load per step of the steady-rate search")
	flag.IntVar(&o.unsaturatedRate, "unsaturated-rate", 0,
		"clients section: telemetrygen records per second per worker with 4 clients (0: each client sends its next request when the last one is answered)")
	flag.BoolVar(&o.skipGoBench, "skip-gobench", false, "skip the Go benchmarks")
	flag.IntVar(&o.flushCounters, "flush-counters", 1_000_000, "per-user counters in the flush target benchmark")
	flag.IntVar(&o.benchCount, "bench-count", 3, "runs of each exporter benchmark (-test.count); the report takes the median of each metric")
	flag.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temp dir (logs of every process)")
	flag.BoolVar(&o.strict, "strict", false, "exit 1 when a target is missed (errors always exit 1)")
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	os.Exit(run(o))
}

// The -schedule values.
const (
	schedulePaired = "paired"
	scheduleTurns  = "turns"
)

func run(o options) int {
	if o.schedule != schedulePaired && o.schedule != scheduleTurns {
		fmt.Fprintf(os.Stderr, "benchrun: -schedule %q: want %s or %s\n", o.schedule, schedulePaired, scheduleTurns)
		return 2
	}
	root, err := filepath.Abs(o.root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		return 2
	}
	o.root = root
	if !filepath.IsAbs(o.bin) {
		o.bin = filepath.Join(root, o.bin)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	tmp, err := os.MkdirTemp("", "otelcol-analytics-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		return 2
	}
	sup := newSupervisor(tmp, pinEnabled(o.pin))
	// Stop everything this run started, whatever happens below.
	defer func() {
		sup.stopAll()
		if o.keepTmp {
			logf("kept %s", tmp)
		} else {
			_ = os.RemoveAll(tmp)
		}
	}()

	logf("temp dir %s; pinning %v (collector CPUs %s, load CPUs %s)", tmp, sup.pin, o.collectorCPUs, o.loadCPUs)
	rep := &report{opts: o, pinned: sup.pin, started: time.Now(), loadAvgStart: loadAverage()}

	rdb, redisProc, err := startPrivateRedis(ctx, sup, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		return 1
	}
	defer func() { _ = rdb.Close() }()
	redisAddr := rdb.Options().Addr

	failed := false
	if !o.skipE2E {
		tg := o.telemetrygen
		if tg == "" {
			tg, err = buildTelemetrygen(ctx, root, tmp)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchrun:", err)
				return 1
			}
		}
		env := &e2eEnv{opts: o, sup: sup, rdb: rdb, redisAddr: redisAddr, redisPid: redisProc.pid(), telemetrygen: tg, tmp: tmp}
		var cfgs []e2eConfig
		for _, cfg := range e2eConfigs(root) {
			if slices.Contains(strings.Split(o.configs, ","), cfg.key) {
				cfgs = append(cfgs, cfg)
			}
		}
		cfgs = append(cfgs, o.variants.configs()...)
		rep.e2e = env.runAll(ctx, cfgs)
		for _, rr := range rep.e2e {
			if rr.err != nil {
				failed = true
			}
		}
		if !o.skipClients && ctx.Err() == nil {
			if rep.clients, err = env.clients(ctx, root, tmp); err != nil {
				fmt.Fprintln(os.Stderr, "benchrun:", err)
				failed = true
			}
		}
	}
	if !o.skipGoBench && ctx.Err() == nil {
		benches, errs := runGoBenchmarks(ctx, sup, o, tmp, redisAddr)
		rep.benches = benches
		rep.benchErrs = errs
		if len(errs) > 0 {
			failed = true
		}
	}
	if ctx.Err() != nil {
		rep.interrupted = context.Cause(ctx).Error()
		failed = true
	}

	var w io.Writer = os.Stdout
	var f *os.File
	if o.out != "" {
		path := o.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if f, err = os.Create(path); err == nil { //nolint:gosec // path is the -out flag
			w = io.MultiWriter(os.Stdout, f)
			defer func() {
				_ = f.Close()
				logf("summary written to %s", path)
			}()
		}
	}
	if missed := rep.print(w); missed && o.strict {
		failed = true
	}
	if failed {
		return 1
	}
	return 0
}

func pinEnabled(mode string) bool {
	switch mode {
	case "on":
		return true
	case "off":
		return false
	}
	if runtime.NumCPU() < 2 {
		return false
	}
	_, err := exec.LookPath("taskset")
	return err == nil
}

// buildTelemetrygen compiles the telemetrygen pinned in the tools modfile once,
// so `go tool` compile time never falls into a measurement.
func buildTelemetrygen(ctx context.Context, root, tmp string) (string, error) {
	const pkg = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
	out := filepath.Join(tmp, "telemetrygen")
	logf("building telemetrygen (internal/tools/telemetrygen/go.mod)")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg) //nolint:gosec // out is under our temp dir
	cmd.Dir = filepath.Join(root, "internal", "tools", "telemetrygen")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build telemetrygen: %w\n%s", err, b)
	}
	return out, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchrun %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// errString is err's message or "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimSpace(err.Error())
}

var errNotReady = errors.New("not ready")
