package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/otelcol-analytics/otelcol-analytics/internal/sdkload"
)

// The "clients" section: what real clients meet. OpenTelemetry Go SDK log
// pipelines at their default settings (cmd/sdkload: BatchProcessor with 512
// records per export, one export in flight, a 2048-record queue) send a
// steady rate to the sample config and to the silent baseline; the report
// shows the records the SDKs dropped, the export latency and, for the sample
// config, whether PostgreSQL counted exactly what they exported. Then the
// largest steady rate one SDK instance sends with no drop, and telemetrygen
// with 4 clients below saturation (records per collector CPU-second).

// clientScenario is a number of SDK instances, each at a steady rate.
type clientScenario struct {
	instances int
	rate      int // events/s per instance
}

func (s clientScenario) String() string {
	return fmt.Sprintf("%d × %s/s", s.instances, humanRate(s.rate))
}

var clientScenarios = []clientScenario{{1, 20_000}, {4, 5_000}, {16, 2_000}}

// clientRun is one scenario against one pipeline.
type clientRun struct {
	cfg      e2eConfig
	scenario clientScenario
	result   sdkload.Result
	counted  int64 // analytics_daily after the final flush (analytics configs)
	countsOK bool
	err      error
}

// steadyRate is the largest rate one SDK instance sent with no drop.
type steadyRate struct {
	cfg  e2eConfig
	rate int
	p99  time.Duration // at that rate
	err  error
}

// clientsResult is the whole section.
type clientsResult struct {
	runs        []*clientRun
	steady      []*steadyRate
	unsaturated []*runResult // telemetrygen, 4 clients at a fixed rate
}

// buildSDKLoad compiles cmd/sdkload once, without the race detector.
func buildSDKLoad(ctx context.Context, root, tmp string) (string, error) {
	out := filepath.Join(tmp, "sdkload")
	logf("building cmd/sdkload")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/sdkload") //nolint:gosec // out is under our temp dir
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sdkload: %w\n%s", err, b)
	}
	return out, nil
}

// runClients measures the section on the baseline and the sample config.
func (e *e2eEnv) runClients(ctx context.Context, sdkloadBin string, cfgs []e2eConfig) *clientsResult {
	res := &clientsResult{}
	for _, sc := range clientScenarios {
		for _, cfg := range cfgs {
			if ctx.Err() != nil {
				return res
			}
			res.runs = append(res.runs, e.clientRun(ctx, sdkloadBin, cfg, sc))
		}
	}
	for _, cfg := range cfgs {
		if ctx.Err() != nil {
			return res
		}
		res.steady = append(res.steady, e.findSteadyRate(ctx, sdkloadBin, cfg))
	}
	for _, cfg := range cfgs {
		if ctx.Err() != nil {
			return res
		}
		res.unsaturated = append(res.unsaturated, e.unsaturated(ctx, cfg))
	}
	return res
}

// clientRun starts a fresh distro, runs the scenario, stops the distro
// (final flush) and reads what PostgreSQL counted.
func (e *e2eEnv) clientRun(ctx context.Context, bin string, cfg e2eConfig, sc clientScenario) *clientRun {
	run := &clientRun{cfg: cfg, scenario: sc}
	in := e.start(ctx, cfg)
	defer e.cleanup(ctx, in)
	if in.res.err != nil {
		run.err = in.res.err
		return run
	}
	run.result, run.err = e.sdkload(ctx, bin, in, sc, e.opts.clientsDuration)
	logf("clients %s %s: %v", cfg.key, sc, run.result)
	if !e.sup.stop(in.col, 60*time.Second) {
		run.err = errors.Join(run.err, errors.New("collector did not stop within 60s of SIGTERM"))
	}
	if cfg.analytics && in.dbName != "" {
		n, err := countEvents(ctx, dbNameDSN(e.opts.postgresDSN, in.dbName), "sdk:%")
		run.counted, run.countsOK = n, err == nil
		run.err = errors.Join(run.err, err)
	}
	return run
}

// findSteadyRate doubles one instance's rate until the SDK drops records,
// then bisects between the last rate without drops and the first with them.
func (e *e2eEnv) findSteadyRate(ctx context.Context, bin string, cfg e2eConfig) *steadyRate {
	sr := &steadyRate{cfg: cfg}
	in := e.start(ctx, cfg)
	defer e.cleanup(ctx, in)
	if in.res.err != nil {
		sr.err = in.res.err
		return sr
	}
	d := e.opts.steadyDuration
	try := func(rate int) (bool, time.Duration, error) {
		r, err := e.sdkload(ctx, bin, in, clientScenario{instances: 1, rate: rate}, d)
		logf("steady rate %s %s/s: %v", cfg.key, humanRate(rate), r)
		return err == nil && r.Dropped() == 0, r.Latency.P99, err
	}
	const first, limit = 5_000, 640_000
	good, bad := 0, 0
	for rate := first; rate <= limit; rate *= 2 {
		ok, p99, err := try(rate)
		if err != nil {
			sr.err = err
			return sr
		}
		if !ok {
			bad = rate
			break
		}
		good, sr.p99 = rate, p99
	}
	for i := 0; bad > 0 && i < 3 && bad-good > good/8; i++ {
		mid := (good + bad) / 2
		ok, p99, err := try(mid)
		if err != nil {
			sr.err = err
			return sr
		}
		if ok {
			good, sr.p99 = mid, p99
		} else {
			bad = mid
		}
	}
	sr.rate = good
	return sr
}

// unsaturated runs telemetrygen logs and traces with 4 clients (2 processes
// × 2 workers), each with one request in flight (or at -unsaturated-rate),
// far from the hundreds in flight of the saturation runs, and measures
// records per collector CPU-second.
func (e *e2eEnv) unsaturated(ctx context.Context, cfg e2eConfig) *runResult {
	in := e.start(ctx, cfg)
	defer e.cleanup(ctx, in)
	rr := &runResult{cfg: cfg}
	if in.res.err != nil {
		rr.err = in.res.err
		return rr
	}
	for _, sig := range signals {
		shape := loadShape{procs: 2, workers: 2, batch: 512, rate: e.opts.unsaturatedRate}
		l, err := e.load(ctx, in, sig, e.opts.clientsDuration, shape)
		rr.err = errors.Join(rr.err, err)
		rr.add(l)
	}
	return rr
}

// sdkload runs cmd/sdkload against the distro's OTLP/HTTP endpoint, pinned
// to the load CPUs, and reads its JSON result.
func (e *e2eEnv) sdkload(ctx context.Context, bin string, in *instance, sc clientScenario, d time.Duration) (sdkload.Result, error) {
	name := fmt.Sprintf("sdkload-%s-%dx%d-%s", in.cfg.key, sc.instances, sc.rate, randomHex(3))
	c, err := e.sup.start(name, e.opts.loadCPUs, e.tmp, os.Environ(), bin,
		"-endpoint", in.ep.http, "-instances", strconv.Itoa(sc.instances), "-rate", strconv.Itoa(sc.rate),
		"-duration", d.String(), "-json")
	if err != nil {
		return sdkload.Result{}, err
	}
	if err = waitExit(ctx, c, d+2*time.Minute); err != nil {
		e.sup.stop(c, 5*time.Second)
		return sdkload.Result{}, err
	}
	var r sdkload.Result
	line, err := lastLine(c.logPath)
	if err != nil {
		return r, err
	}
	if err = json.Unmarshal([]byte(line), &r); err != nil {
		return r, fmt.Errorf("sdkload result: %w\n%s", err, c.logTail(5))
	}
	return r, nil
}

// cleanup stops the distro if it still runs and drops its database and keys.
func (e *e2eEnv) cleanup(ctx context.Context, in *instance) {
	cleanCtx := context.WithoutCancel(ctx)
	if in.col != nil {
		e.sup.stop(in.col, 60*time.Second)
	}
	if in.cfg.analytics && in.dbName != "" {
		if err := dropDatabase(cleanCtx, e.opts.postgresDSN, in.dbName); err != nil {
			logf("%v", err)
		}
		deleteKeys(cleanCtx, e.rdb, in.prefix)
	}
}

// countEvents sums analytics_daily over the event types LIKE pattern.
func countEvents(ctx context.Context, dsn, pattern string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("count: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var n int64
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(count), 0)::bigint FROM analytics_daily WHERE event_type LIKE $1", pattern).Scan(&n); err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	return n, nil
}

// lastLine returns the last non-empty line of the file at path.
func lastLine(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // a log under our temp dir
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }()
	var last string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			last = s
		}
	}
	return last, sc.Err()
}

func humanRate(r int) string {
	if r%1000 == 0 {
		return strconv.Itoa(r/1000) + "k"
	}
	return strconv.Itoa(r)
}

// printClients writes the section.
func (r *clientsResult) print(w io.Writer) {
	if r == nil {
		return
	}
	fmt.Fprintln(w, "\nClients: OTel Go SDK log pipelines at default settings (BatchProcessor: 512 per export, 1 in flight, queue 2048), OTLP/HTTP")
	fmt.Fprintf(w, "  %-38s %-12s %10s %10s %8s %9s %9s %9s  %s\n", "pipeline", "load", "emitted", "exported", "dropped", "p50", "p99", "max", "PostgreSQL")
	for _, run := range r.runs {
		pg := "-"
		if run.cfg.analytics {
			switch {
			case !run.countsOK:
				pg = "not read"
			case run.counted == run.result.Exported:
				pg = fmt.Sprintf("exact (%d)", run.counted)
			default:
				pg = fmt.Sprintf("MISMATCH: %d counted", run.counted)
			}
		}
		res := run.result
		fmt.Fprintf(w, "  %-38s %-12s %10d %10d %8d %9s %9s %9s  %s%s\n", run.cfg.name, run.scenario, res.Emitted, res.Exported,
			res.Dropped(), res.Latency.P50.Round(10*time.Microsecond), res.Latency.P99.Round(10*time.Microsecond),
			res.Latency.Max.Round(10*time.Microsecond), pg, errSuffix(run.err))
	}
	fmt.Fprintln(w, "  largest steady rate of one SDK instance with 0 drops (doubling from 5k/s, then bisecting):")
	var base, analytics float64
	for _, sr := range r.steady {
		fmt.Fprintf(w, "    %-38s %8s/s (export p99 %s)%s\n", sr.cfg.name, humanRate(sr.rate), sr.p99.Round(10*time.Microsecond), errSuffix(sr.err))
		if sr.cfg.analytics {
			analytics = float64(sr.rate)
		} else {
			base = float64(sr.rate)
		}
	}
	if base > 0 && analytics > 0 {
		fmt.Fprintf(w, "    ratio: %.2f×\n", analytics/base)
	}
	fmt.Fprintln(w, "  telemetrygen, 4 clients (2 processes × 2 workers, one request in flight each; 512 records per request): records per collector CPU-second")
	var baseRR *runResult
	for _, rr := range r.unsaturated {
		if !rr.cfg.analytics {
			baseRR = rr
		}
	}
	for _, rr := range r.unsaturated {
		for _, l := range rr.loads {
			ratio := ""
			if baseRR != nil && rr != baseRR {
				if b := baseRR.load(l.signal.name); b != nil && b.perCPUSecond() > 0 {
					ratio = fmt.Sprintf("  %.2f× the baseline", l.perCPUSecond()/b.perCPUSecond())
				}
			}
			fmt.Fprintf(w, "    %-38s %-6s accepted %8.0f/s, %9.0f per CPU-second%s\n", rr.cfg.name, l.signal.name,
				l.accepted/max(l.loadSeconds, 1e-9), l.perCPUSecond(), ratio)
		}
		if rr.err != nil {
			fmt.Fprintf(w, "    %s: %v\n", rr.cfg.name, rr.err)
		}
	}
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return "  ERROR: " + strings.ReplaceAll(err.Error(), "\n", " ")
}

// clients runs the section on the silent baseline and the sample config.
func (e *e2eEnv) clients(ctx context.Context, root, tmp string) (*clientsResult, error) {
	bin, err := buildSDKLoad(ctx, root, tmp)
	if err != nil {
		return nil, err
	}
	var cfgs []e2eConfig
	for _, cfg := range e2eConfigs(root) {
		if cfg.key == keyBaseline || cfg.key == keyAckRedis {
			cfgs = append(cfgs, cfg)
		}
	}
	return e.runClients(ctx, bin, cfgs), nil
}
