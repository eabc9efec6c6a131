package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// e2eConfig is one distro configuration measured end to end.
type e2eConfig struct {
	key       string // short id used in file names
	name      string // shown in the report
	file      string // collector config
	analytics bool   // pipelines end in redis_analytics (+ pg_flush): counts are checked
	storage   bool   // needs STORAGE_DIR (file_storage)
}

const (
	keyBaseline   = "baseline"
	keyAckRedis   = "mode-a"
	keyPersistent = "mode-b"
)

// e2eConfigs lists the configurations.
func e2eConfigs(root string) []e2eConfig {
	return []e2eConfig{
		{
			key: keyBaseline, name: "baseline: debug exporter (silent)",
			file: filepath.Join(root, "testdata", "bench", "baseline-debug.yaml"),
		},
		{
			key: keyAckRedis, name: "(a) ack after Redis (testdata/config.yaml)",
			file:      filepath.Join(root, "testdata", "config.yaml"),
			analytics: true,
		},
		{
			key: keyPersistent, name: "(b) persistent queue (file_storage)",
			file:      filepath.Join(root, "testdata", "bench", "persistent-queue.yaml"),
			analytics: true, storage: true,
		},
	}
}

// variantFlag collects -variant name=path: further analytics configurations
// measured like mode (a), for side-by-side comparisons of settings.
type variantFlag []e2eConfig

func (v *variantFlag) String() string {
	names := make([]string, 0, len(*v))
	for _, c := range *v {
		names = append(names, c.key+"="+c.file)
	}
	return strings.Join(names, ",")
}

func (v *variantFlag) Set(s string) error {
	name, path, ok := strings.Cut(s, "=")
	if !ok || !validVariantName(name) || path == "" {
		return fmt.Errorf("want name=path with a name of lowercase letters, digits and dashes, got %q", s)
	}
	for _, c := range *v {
		if c.key == "variant-"+name {
			return fmt.Errorf("variant %q given twice", name)
		}
	}
	abs, err := filepath.Abs(path)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		return fmt.Errorf("variant %s: %w", name, err)
	}
	*v = append(*v, e2eConfig{
		key: "variant-" + name, name: "variant " + name + " (" + filepath.Base(abs) + ")",
		file: abs, analytics: true, storage: true,
	})
	return nil
}

func (v variantFlag) configs() []e2eConfig { return v }

// validVariantName: 1 to 31 lowercase letters, digits and dashes, not
// starting with a dash (it ends up in file names and the report).
func validVariantName(name string) bool {
	if name == "" || len(name) > 31 || name[0] == '-' {
		return false
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// signalSpec is one telemetrygen load.
type signalSpec struct {
	name     string // telemetrygen subcommand: logs, traces
	unit     string // log records, spans
	metric   string // suffix of the collector's item metrics: log_records, spans
	dataType string // data_type label of the exporter queue metrics: logs, traces
	args     []string
	// isEvent tells which event types (analytics_daily.event_type) this load produces.
	isEvent func(eventType string) bool
}

// The event type of every log record is page_view (event.name attribute);
// spans count under their names (telemetrygen: lets-go, okey-dokey-0).
const logEventType = "page_view"

var signals = []signalSpec{
	{
		name: "logs", unit: "log records", metric: "log_records", dataType: "logs",
		args: []string{
			"--telemetry-attributes", `event.name="` + logEventType + `"`,
			"--telemetry-attributes", `user.id="bench-user"`,
		},
		isEvent: func(t string) bool { return t == logEventType },
	},
	{
		name: "traces", unit: "spans", metric: "spans", dataType: "traces",
		args:    []string{"--telemetry-attributes", `user.id="bench-user"`},
		isEvent: func(t string) bool { return t != logEventType },
	},
}

// loadResult is what one load measured.
type loadResult struct {
	signal signalSpec

	accepted, refused, failed float64 // receiver, over the load window
	exported, exportFailed    float64 // exporter sent / send_failed+enqueue_failed
	cpuSeconds                float64 // collector utime+stime from load start to drained
	loadSeconds               float64 // telemetrygen wall time
	drainSeconds              float64 // after telemetrygen exited, until the exporter sent everything
	drained                   bool
	maxRSS                    int64   // max sampled VmRSS during the load
	loadGenCPU                float64 // telemetrygen + Redis CPU seconds over the window
	otherCPU                  float64 // CPU seconds of every other process over the window (noise)
	maxQueue                  float64 // max sampled otelcol_exporter_queue_size
	queueCapacity             float64 // otelcol_exporter_queue_capacity
	slices                    int     // loads summed into this result

	// Totals over the collector's life (for the count check).
	acceptedTotal         float64
	counted               int64 // analytics_daily after shutdown
	countedHourly         int64
	countedUser           int64
	inRedis               int64 // daily counts still in Redis (counter or staging) after shutdown
	countsOK              bool  // counted/inRedis were read
	telemetrygenErr       error
	telemetrygenExitCode  int
	telemetrygenErrorLogs int
	// roundRates is perCPUSecond of each round, in order (the spread of the
	// rounds shows the run-to-run noise next to the total).
	roundRates []float64
}

// perCPUSecond is accepted records per collector CPU-second.
func (l *loadResult) perCPUSecond() float64 {
	if l.cpuSeconds <= 0 {
		return 0
	}
	return l.accepted / l.cpuSeconds
}

// clone returns a copy that shares no slice with l.
func (l *loadResult) clone() *loadResult {
	c := *l
	c.roundRates = slices.Clone(l.roundRates)
	return &c
}

// merge adds another slice of the same signal.
func (l *loadResult) merge(o *loadResult) {
	l.accepted += o.accepted
	l.refused += o.refused
	l.failed += o.failed
	l.exported += o.exported
	l.exportFailed += o.exportFailed
	l.cpuSeconds += o.cpuSeconds
	l.loadSeconds += o.loadSeconds
	l.drainSeconds += o.drainSeconds
	l.drained = l.drained && o.drained
	l.maxRSS = max(l.maxRSS, o.maxRSS)
	l.loadGenCPU += o.loadGenCPU
	l.otherCPU += o.otherCPU
	l.maxQueue = max(l.maxQueue, o.maxQueue)
	l.queueCapacity = max(l.queueCapacity, o.queueCapacity)
	l.slices += o.slices
	l.roundRates = append(l.roundRates, o.roundRates...)
	l.telemetrygenErr = errors.Join(l.telemetrygenErr, o.telemetrygenErr)
	if o.telemetrygenExitCode != 0 {
		l.telemetrygenExitCode = o.telemetrygenExitCode
	}
	l.telemetrygenErrorLogs += o.telemetrygenErrorLogs
}

// runResult is one configuration's run.
type runResult struct {
	cfg          e2eConfig
	pairedBase   *runResult    // paired schedule: the baseline's slices run alongside this configuration's
	loads        []*loadResult // one per signal, summed over the rounds
	probe        *loadResult   // saturation probe (sample config only)
	peakRSS      int64         // VmHWM after the rounds
	peakRSSProbe int64         // VmHWM after the saturation probe
	shutdownSecs float64
	exitCode     int
	logIssues    []logIssue
	err          error
}

// add sums a slice into the result of its signal.
func (r *runResult) add(l *loadResult) {
	l.slices = 1
	l.roundRates = []float64{l.perCPUSecond()}
	if cur := r.load(l.signal.name); cur != nil {
		cur.merge(l)
		return
	}
	r.loads = append(r.loads, l)
}

// load returns the run's result for signal name, or nil.
func (r *runResult) load(name string) *loadResult {
	for _, l := range r.loads {
		if l.signal.name == name {
			return l
		}
	}
	return nil
}

// logIssue is one distinct warn/error line of the collector log.
type logIssue struct {
	count int
	line  string
}

// e2eEnv holds what every configuration's run shares.
type e2eEnv struct {
	opts         options
	sup          *supervisor
	rdb          *redis.Client
	redisAddr    string
	redisPid     int
	telemetrygen string
	tmp          string
}

type endpoints struct {
	grpc, http, health, metrics, query string
	metricsPort                        int
}

func newEndpoints() (endpoints, error) {
	var ports [5]int
	seen := map[int]bool{}
	for i := range ports {
		for {
			p, err := freePort()
			if err != nil {
				return endpoints{}, err
			}
			if !seen[p] {
				seen[p] = true
				ports[i] = p
				break
			}
		}
	}
	hp := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	return endpoints{
		grpc: hp(ports[0]), http: hp(ports[1]), health: hp(ports[2]), metrics: hp(ports[3]), metricsPort: ports[3],
		query: hp(ports[4]),
	}, nil
}

// instance is one configuration's running distro.
type instance struct {
	cfg        e2eConfig
	res        *runResult
	col        *child
	ep         endpoints
	metricsURL string
	prefix     string
	dbName     string
	failed     bool
}

// runAll measures every configuration side by side: it starts one distro per
// configuration (all pinned to the collector CPUs), then, per signal, loads
// them in turn in short slices, round after round, so that drift and other
// processes' noise fall on all of them alike. Each configuration's figures
// are the sums over its slices. Then it runs the saturation probe on the
// sample config, stops every distro with SIGTERM (final flush) and reads what
// PostgreSQL counted.
func (e *e2eEnv) runAll(ctx context.Context, cfgs []e2eConfig) []*runResult {
	o := e.opts
	results := make([]*runResult, 0, len(cfgs))
	var live []*instance
	defer func() {
		for _, in := range live {
			e.finish(ctx, in)
		}
	}()
	for _, cfg := range cfgs {
		in := e.start(ctx, cfg)
		results = append(results, in.res)
		if in.res.err != nil {
			logf("e2e %s: %v", cfg.key, in.res.err)
		}
		if in.col != nil {
			live = append(live, in)
		}
	}

	rounds := max(1, o.rounds)
	slice := o.duration / time.Duration(rounds)
	for _, sig := range signals {
		if !slices.Contains(strings.Split(o.signals, ","), sig.name) {
			continue
		}
		for round := range rounds {
			if o.schedule == schedulePaired {
				e.pairedRound(ctx, live, sig, slice, round, rounds)
				continue
			}
			for _, in := range live {
				if in.failed || ctx.Err() != nil {
					continue
				}
				logf("e2e %s: %s, round %d/%d", in.cfg.key, sig.name, round+1, rounds)
				e.loadSlice(ctx, in, in.res, sig, slice)
			}
		}
	}
	for _, in := range live {
		if in.failed || ctx.Err() != nil || len(in.res.loads) == 0 {
			continue
		}
		if _, hwm, err := memStatus(in.col.pid()); err == nil {
			in.res.peakRSS = hwm
		}
		// Saturation probe: many more requests in flight than the sending
		// queue holds, so the queue is full and the receivers block.
		if in.cfg.key == keyAckRedis && o.probeWorkers > 0 && ctx.Err() == nil {
			sig := signals[0]
			logf("e2e %s: saturation probe: %s, %d workers × %d, %v", in.cfg.key, sig.name, o.probeWorkers, o.batchSize, o.probeDuration)
			l, err := e.load(ctx, in, sig, o.probeDuration, loadShape{procs: 1, workers: o.probeWorkers, batch: o.batchSize})
			in.res.probe = l
			if err != nil {
				in.failed = true
				in.res.err = errors.Join(in.res.err, fmt.Errorf("saturation probe: %w", err))
			}
			if _, hwm, err := memStatus(in.col.pid()); err == nil {
				in.res.peakRSSProbe = hwm
			}
		}
	}
	return results
}

// pairedRound is one round of the paired schedule (-schedule paired): each
// configuration is loaded at the same time as the baseline, which gets a load
// of its own (its own telemetrygen processes), so that both collectors run
// through the same moments of the host. On this VM, the CPU time a span costs
// the same collector drifts by up to 1.6× from one few-second stretch to the
// next; loaded in turns, that drift falls on whichever collector is loaded at
// the moment. The price: the two loads share the load CPU, so clients that
// wait for their answer (mode (a) waits for its batch and Redis) get less of
// it than alone. The baseline's slices are summed per partner
// (runResult.pairedBase), and each configuration is compared with its own
// partner's figures. Without a running baseline the configurations are
// loaded in turns.
func (e *e2eEnv) pairedRound(ctx context.Context, live []*instance, sig signalSpec, slice time.Duration, round, rounds int) {
	var base *instance
	for _, in := range live {
		if in.cfg.key == keyBaseline && !in.failed {
			base = in
		}
	}
	for _, in := range live {
		if in == base || in.failed || ctx.Err() != nil {
			continue
		}
		if base == nil || base.failed {
			logf("e2e %s: %s, round %d/%d (no baseline to pair with)", in.cfg.key, sig.name, round+1, rounds)
			e.loadSlice(ctx, in, in.res, sig, slice)
			continue
		}
		logf("e2e %s + %s: %s, round %d/%d", base.cfg.key, in.cfg.key, sig.name, round+1, rounds)
		if in.res.pairedBase == nil {
			in.res.pairedBase = &runResult{cfg: base.cfg}
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			l := e.loadSlice(ctx, base, in.res.pairedBase, sig, slice)
			base.res.add(l.clone())
		})
		wg.Go(func() { e.loadSlice(ctx, in, in.res, sig, slice) })
		wg.Wait()
	}
}

// loadSlice runs one slice of load against in and adds it to res (in.res, or
// the baseline's figures paired with another configuration). A failure marks
// in as failed. It returns the slice (partial when it failed).
func (e *e2eEnv) loadSlice(ctx context.Context, in *instance, res *runResult, sig signalSpec, slice time.Duration) *loadResult {
	l, err := e.load(ctx, in, sig, slice, e.loadShape(sig))
	res.add(l)
	if err != nil {
		in.failed = true
		in.res.err = errors.Join(in.res.err, fmt.Errorf("%s: %w", sig.name, err))
		logf("e2e %s: %v", in.cfg.key, err)
	}
	return l
}

// start creates the configuration's database and key prefix and starts its
// distro; on failure in.col may be nil and in.res.err is set.
func (e *e2eEnv) start(ctx context.Context, cfg e2eConfig) *instance {
	id := randomHex(6)
	in := &instance{
		cfg:    cfg,
		res:    &runResult{cfg: cfg, exitCode: -1},
		prefix: "bench-" + id,
		dbName: "bench_" + id,
	}
	logf("e2e %s: starting %s", cfg.key, cfg.name)
	ep, err := newEndpoints()
	if err != nil {
		in.res.err = err
		return in
	}
	in.ep = ep
	in.metricsURL = "http://" + ep.metrics + "/metrics"
	env := append(os.Environ(),
		"OTLP_GRPC_ENDPOINT="+ep.grpc,
		"OTLP_HTTP_ENDPOINT="+ep.http,
		"HEALTH_CHECK_ENDPOINT="+ep.health,
		"METRICS_PORT="+strconv.Itoa(ep.metricsPort),
		"QUERY_ENDPOINT="+ep.query,
		"REDIS_ENDPOINT="+e.redisAddr,
		"ANALYTICS_KEY_PREFIX="+in.prefix,
		"FLUSH_INTERVAL="+e.opts.flushInterval.String(),
	)
	if cfg.analytics {
		dsn, dbErr := createDatabase(ctx, e.opts.postgresDSN, in.dbName)
		if dbErr != nil {
			in.dbName = ""
			in.res.err = dbErr
			return in
		}
		env = append(env, "POSTGRES_DSN="+dsn)
	}
	if cfg.storage {
		dir := filepath.Join(e.tmp, "storage-"+cfg.key)
		if err = os.MkdirAll(dir, 0o750); err != nil {
			in.res.err = err
			return in
		}
		env = append(env, "STORAGE_DIR="+dir)
	}
	col, err := e.sup.start("collector-"+cfg.key, e.opts.collectorCPUs, e.tmp, env, e.opts.bin, "--config", cfg.file)
	if err != nil {
		in.res.err = err
		return in
	}
	in.col = col
	if err := waitHealthy(ctx, col, "http://"+ep.health+"/", 30*time.Second); err != nil {
		in.failed = true
		in.res.err = err
	}
	return in
}

// finish stops the distro (SIGTERM: the exporter drains its queue, pg_flush
// runs its final flush), reads the counts, scans the log and cleans up.
func (e *e2eEnv) finish(ctx context.Context, in *instance) {
	res := in.res
	cleanCtx := context.WithoutCancel(ctx)
	defer func() {
		if in.cfg.analytics && in.dbName != "" {
			if err := dropDatabase(cleanCtx, e.opts.postgresDSN, in.dbName); err != nil {
				logf("%v", err)
			}
			deleteKeys(cleanCtx, e.rdb, in.prefix)
		}
	}()
	if !in.col.exited() {
		if final, err := scrape(cleanCtx, in.metricsURL); err == nil {
			for _, l := range res.loads {
				l.acceptedTotal = final.get("otelcol_receiver_accepted_" + l.signal.metric)
			}
		}
	}
	t0 := time.Now()
	stopped := e.sup.stop(in.col, 60*time.Second)
	res.shutdownSecs = time.Since(t0).Seconds()
	res.exitCode = in.col.exitCode()
	res.logIssues = scanLogIssues(in.col.logPath)
	switch {
	case !stopped:
		res.err = errors.Join(res.err, errors.New("collector did not stop within 60s of SIGTERM (killed)"))
	case res.exitCode != 0:
		res.err = errors.Join(res.err, fmt.Errorf("collector exited with status %d:\n%s", res.exitCode, in.col.logTail(10)))
	}
	if in.cfg.analytics && in.dbName != "" && len(res.loads) > 0 {
		if err := e.readCounts(cleanCtx, res, in.prefix, dbNameDSN(e.opts.postgresDSN, in.dbName)); err != nil {
			res.err = errors.Join(res.err, err)
		}
	}
	logf("e2e %s: stopped (exit status %d, %.1fs)", in.cfg.key, res.exitCode, res.shutdownSecs)
}

func waitHealthy(ctx context.Context, c *child, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := healthy(ctx, url)
		if err == nil {
			return nil
		}
		if c.exited() {
			return fmt.Errorf("collector exited with status %d before it was healthy:\n%s", c.exitCode(), c.logTail(15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("collector not healthy after %v (%w):\n%s", limit, err, c.logTail(15))
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// loadShape is how telemetrygen is run: processes × workers × records per
// request, at rate records per second per worker (0: as fast as it can).
type loadShape struct{ procs, workers, batch, rate int }

func (e *e2eEnv) loadShape(sig signalSpec) loadShape {
	if sig.name == "traces" {
		return loadShape{procs: e.opts.traceProcs, workers: e.opts.traceWorkers, batch: e.opts.traceBatchSize}
	}
	return loadShape{procs: 1, workers: e.opts.workers, batch: e.opts.batchSize}
}

// load runs telemetrygen against one distro for d and measures the collector
// over the window from just before the load to the moment its exporter has
// sent everything the receiver accepted (the persistent queue drains after
// telemetrygen stops; that CPU belongs to the load).
func (e *e2eEnv) load(ctx context.Context, in *instance, sig signalSpec, d time.Duration, shape loadShape) (*loadResult, error) {
	l := &loadResult{signal: sig, telemetrygenExitCode: -1}
	o := e.opts
	col := in.col
	accName := "otelcol_receiver_accepted_" + sig.metric
	before, err := scrape(ctx, in.metricsURL)
	if err != nil {
		return l, err
	}
	cpu0, err := cpuSeconds(col.pid())
	if err != nil {
		return l, err
	}
	redis0, _ := cpuSeconds(e.redisPid)
	busy0, _ := systemBusySeconds()
	args := append([]string{
		e.telemetrygen, sig.name,
		"--otlp-endpoint", in.ep.grpc, "--otlp-insecure",
		"--rate", strconv.Itoa(shape.rate), "--workers", strconv.Itoa(shape.workers), "--duration", d.String(),
		"--batch-size", strconv.Itoa(shape.batch),
		// Keep loading when the collector refuses a request: refusals show in its metrics.
		"--allow-export-failures",
	}, sig.args...)
	start := time.Now()

	// Sample RSS (from /proc, free for the collector) every 250ms and the
	// sending queue every 2s: a metrics scrape costs the collector about a
	// millisecond of CPU, which would otherwise be counted as its work.
	var wg sync.WaitGroup
	stopSampling := make(chan struct{})
	wg.Go(func() {
		const scrapeEvery = 8 // ticks
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for tick := 0; ; tick++ {
			if rss, _, memErr := memStatus(col.pid()); memErr == nil && rss > l.maxRSS {
				l.maxRSS = rss
			}
			if tick%scrapeEvery == 0 {
				if snap, scrapeErr := scrape(ctx, in.metricsURL); scrapeErr == nil {
					dt := "{data_type=" + sig.dataType + "}"
					l.maxQueue = max(l.maxQueue, snap.get("otelcol_exporter_queue_size"+dt))
					l.queueCapacity = snap.get("otelcol_exporter_queue_capacity" + dt)
				}
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	})
	defer func() {
		close(stopSampling)
		wg.Wait()
	}()

	tgs := make([]*child, 0, shape.procs)
	for i := range shape.procs {
		tg, startErr := e.sup.start(fmt.Sprintf("telemetrygen-%s-%s-%d", in.cfg.key, sig.name, i), o.loadCPUs, e.tmp, os.Environ(), args...)
		if startErr != nil {
			return l, startErr
		}
		tgs = append(tgs, tg)
	}
	for _, tg := range tgs {
		if err = waitExit(ctx, tg, d+2*time.Minute); err != nil {
			for _, tg := range tgs {
				e.sup.stop(tg, 5*time.Second)
			}
			return l, err
		}
	}
	l.loadSeconds = time.Since(start).Seconds()
	l.telemetrygenExitCode = 0
	var tgErrs []error
	for _, tg := range tgs {
		l.telemetrygenErrorLogs += countErrorLines(tg.logPath)
		if code := tg.exitCode(); code != 0 {
			l.telemetrygenExitCode = code
			tgErrs = append(tgErrs, fmt.Errorf("telemetrygen %s exited with status %d:\n%s", sig.name, code, tg.logTail(5)))
		}
	}
	l.telemetrygenErr = errors.Join(tgErrs...)
	if col.exited() {
		return l, fmt.Errorf("collector exited with status %d during the load:\n%s", col.exitCode(), col.logTail(15))
	}

	// Drain: the exporter has sent (or failed) everything accepted.
	drainStart := time.Now()
	deadline := drainStart.Add(o.drainTimeout)
	var after promSnapshot
	for {
		after, err = scrape(ctx, in.metricsURL)
		if err != nil {
			return l, err
		}
		acc := after.get(accName) - before.get(accName)
		out := delta(after, before, "otelcol_exporter_sent_"+sig.metric) +
			delta(after, before, "otelcol_exporter_send_failed_"+sig.metric) +
			delta(after, before, "otelcol_exporter_enqueue_failed_"+sig.metric)
		if out >= acc && after.get("otelcol_exporter_queue_size") == 0 {
			l.drained = true
			break
		}
		if time.Now().After(deadline) {
			logf("e2e %s: %s: exporter did not drain within %v (accepted %.0f, out %.0f, queue %.0f)",
				in.cfg.key, sig.name, o.drainTimeout, acc, out, after.get("otelcol_exporter_queue_size"))
			break
		}
		select {
		case <-ctx.Done():
			return l, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
	l.drainSeconds = time.Since(drainStart).Seconds()
	cpu1, err := cpuSeconds(col.pid())
	if err != nil {
		return l, err
	}
	l.cpuSeconds = cpu1 - cpu0
	redis1, _ := cpuSeconds(e.redisPid)
	busy1, _ := systemBusySeconds()
	l.loadGenCPU = redis1 - redis0
	for _, tg := range tgs {
		l.loadGenCPU += childCPUSeconds(tg)
	}
	l.otherCPU = max(0, busy1-busy0-l.cpuSeconds-l.loadGenCPU)
	l.accepted = delta(after, before, accName)
	l.refused = delta(after, before, "otelcol_receiver_refused_"+sig.metric)
	l.failed = delta(after, before, "otelcol_receiver_failed_"+sig.metric)
	l.exported = delta(after, before, "otelcol_exporter_sent_"+sig.metric)
	l.exportFailed = delta(after, before, "otelcol_exporter_send_failed_"+sig.metric) +
		delta(after, before, "otelcol_exporter_enqueue_failed_"+sig.metric)
	logf("e2e %s: %s: accepted %.0f in %.1fs (+%.1fs drain), collector CPU %.2fs -> %.0f %s per CPU-second (load generators %.1f CPU-s, other processes %.1f CPU-s)",
		in.cfg.key, sig.name, l.accepted, l.loadSeconds, l.drainSeconds, l.cpuSeconds, l.perCPUSecond(), sig.unit, l.loadGenCPU, l.otherCPU)
	if !l.drained {
		return l, fmt.Errorf("exporter did not send what was accepted within %v", o.drainTimeout)
	}
	return l, nil
}

func delta(after, before promSnapshot, name string) float64 {
	return after.get(name) - before.get(name)
}

// readCounts fills each load's counted figures from PostgreSQL and what is
// still in Redis under prefix (counters and staging entries, daily family).
func (e *e2eEnv) readCounts(ctx context.Context, res *runResult, prefix, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("count: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	daily, err1 := sumByType(ctx, conn, "SELECT event_type, sum(count)::bigint FROM analytics_daily GROUP BY event_type")
	hourly, err2 := sumByType(ctx, conn, "SELECT event_type, sum(count)::bigint FROM analytics_hourly GROUP BY event_type")
	user, err3 := sumByType(ctx, conn, "SELECT event_type, sum(count)::bigint FROM analytics_user_daily GROUP BY event_type")
	if err = errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("count: %w", err)
	}
	residual, err := redisResidual(ctx, e.rdb, prefix)
	if err != nil {
		return fmt.Errorf("count: redis: %w", err)
	}
	for _, l := range res.loads {
		l.counted = sumMatching(daily, l.signal.isEvent)
		l.countedHourly = sumMatching(hourly, l.signal.isEvent)
		l.countedUser = sumMatching(user, l.signal.isEvent)
		l.inRedis = sumMatching(residual, l.signal.isEvent)
		l.countsOK = true
	}
	return nil
}

func sumByType(ctx context.Context, conn *pgx.Conn, query string) (map[string]int64, error) {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for rows.Next() {
		var (
			t string
			n int64
		)
		if err := rows.Scan(&t, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out[t] = n
	}
	return out, rows.Err()
}

func sumMatching(m map[string]int64, match func(string) bool) int64 {
	var n int64
	for k, v := range m {
		if match(k) {
			n += v
		}
	}
	return n
}

// redisResidual sums, per event type, the daily counts still in Redis: the
// counters themselves and the fields of staging entries.
func redisResidual(ctx context.Context, rdb *redis.Client, prefix string) (map[string]int64, error) {
	schema, err := protocol.New(prefix)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	add := func(key, val string) {
		c, parseErr := schema.Parse(key)
		if parseErr != nil || c.Family != protocol.Daily {
			return
		}
		n, _ := strconv.ParseInt(val, 10, 64)
		out[c.EventType] += n
	}
	iter := rdb.Scan(ctx, 0, prefix+":counter:*", 1000).Iterator()
	for iter.Next(ctx) {
		if v, getErr := rdb.Get(ctx, iter.Val()).Result(); getErr == nil {
			add(iter.Val(), v)
		}
	}
	if scanErr := iter.Err(); scanErr != nil {
		return nil, scanErr
	}
	ids, err := rdb.ZRange(ctx, schema.StagingIndexKey(), 0, -1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for _, id := range ids {
		fields, err := rdb.HGetAll(ctx, schema.StagingKey(id)).Result()
		if err != nil {
			return nil, err
		}
		for k, v := range fields {
			add(k, v)
		}
	}
	return out, nil
}

// deleteKeys removes every key under prefix.
func deleteKeys(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// startPrivateRedis starts a redis-server on a free loopback port, pinned to
// the load CPUs, with the persistence `make services` uses (none).
func startPrivateRedis(ctx context.Context, sup *supervisor, o options) (*redis.Client, *child, error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(sup.tmp, "redis")
	if mkErr := os.MkdirAll(dir, 0o750); mkErr != nil {
		return nil, nil, mkErr
	}
	c, err := sup.start("redis", o.loadCPUs, dir, os.Environ(), o.redisServer,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no")
	if err != nil {
		return nil, nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rdb := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			logf("private Redis %s (pid %d)", addr, c.pid())
			return rdb, c, nil
		}
		if c.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			_ = rdb.Close()
			return nil, nil, fmt.Errorf("private redis-server on %s: %w\n%s", addr, err, c.logTail(10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createDatabase creates dbName and returns its DSN.
func createDatabase(ctx context.Context, adminDSN, dbName string) (string, error) {
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", fmt.Errorf("postgres %s: %w", redactDSN(adminDSN), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", dbName, err)
	}
	return dbNameDSN(adminDSN, dbName), nil
}

func dropDatabase(ctx context.Context, adminDSN, dbName string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("drop database %s: %w", dbName, err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", dbName, err)
	}
	return nil
}

// dbNameDSN is adminDSN pointing at dbName (URL or keyword/value form).
func dbNameDSN(adminDSN, dbName string) string {
	if u, err := url.Parse(adminDSN); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + dbName
		return u.String()
	}
	return adminDSN + " dbname=" + dbName
}

func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.String()
	}
	return dsn
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// scanLogIssues returns the distinct warn/error lines of a collector log
// (console encoding: time, level, caller, message, fields), most frequent first.
func scanLogIssues(path string) []logIssue {
	f, err := os.Open(path) //nolint:gosec // a log under our temp dir
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	byKey := map[string]*logIssue{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fs := strings.SplitN(line, "\t", 5)
		if len(fs) < 4 {
			// Not a zap line: keep panics and Go runtime failures, skip the rest.
			if !strings.HasPrefix(line, "panic:") && !strings.HasPrefix(line, "fatal error:") {
				continue
			}
			fs = []string{"", "panic", "", line}
		}
		switch strings.ToLower(fs[1]) {
		case "warn", "error", "dpanic", "panic", "fatal":
		default:
			continue
		}
		key := fs[1] + "\t" + fs[2] + "\t" + fs[3]
		if is, ok := byKey[key]; ok {
			is.count++
			continue
		}
		byKey[key] = &logIssue{count: 1, line: line}
		order = append(order, key)
	}
	out := make([]logIssue, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

// countErrorLines counts telemetrygen log lines at error level.
func countErrorLines(path string) int {
	b, err := os.ReadFile(path) //nolint:gosec // a log under our temp dir
	if err != nil {
		return 0
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(line, "\terror\t") || strings.Contains(line, "\tERROR\t") {
			n++
		}
	}
	return n
}
