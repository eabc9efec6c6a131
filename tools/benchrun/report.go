package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets this driver checks (docs/performance.md, Targets).
const (
	targetPushEventsPerSec = 2_000_000 // exporter push, 100 users, GOMAXPROCS=1
	// pushQueuedBenchName is the push as the distro runs it: the sample
	// config's sending queue fed by 4 producers (target 1).
	pushQueuedBenchName = "BenchmarkPushLogsQueued/users=100"
	targetFlushSeconds  = 10.0      // flush of 1M per-user counters
	targetE2ERatio      = 0.85      // mode (a) records per CPU-second vs baseline
	targetRSSBytes      = 256 << 20 // collector peak RSS under saturation, default settings
	pushBenchName       = "BenchmarkPushLogs/users=100"
)

type report struct {
	opts         options
	pinned       bool
	started      time.Time
	e2e          []*runResult
	clients      *clientsResult
	benches      []benchLine
	benchErrs    []string
	interrupted  string
	loadAvgStart string
}

type targetRow struct {
	id, what, measured, target, ratio, result string
}

func (r *report) run(key string) *runResult {
	for _, rr := range r.e2e {
		if rr.cfg.key == key {
			return rr
		}
	}
	return nil
}

// print writes the summary; it reports whether a target was missed or a
// figure is missing.
func (r *report) print(w io.Writer) (missed bool) {
	o := r.opts
	fmt.Fprintf(w, "\n==== otelcol-analytics benchmarks (%s, %d CPUs, %s; load average %s at start, %s at end) ====\n",
		time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.Version(), r.loadAvgStart, loadAverage())
	pin := "off"
	if r.pinned {
		pin = fmt.Sprintf("collector (and exporter benchmark) on CPU %s; telemetrygen and Redis on CPU %s", o.collectorCPUs, o.loadCPUs)
	}
	schedule := "each configuration loaded at the same time as the baseline, each with its own telemetrygen, " +
		"and compared with the baseline's figures of those slices"
	if o.schedule == scheduleTurns {
		schedule = "the configurations loaded in turn"
	}
	fmt.Fprintf(w, "e2e: telemetrygen v0.161.0, OTLP/gRPC, --rate 0, %v per configuration and signal in %d interleaved rounds "+
		"(all distros up side by side; %s); logs: 1 process × %d workers × %d records per request; "+
		"traces: %d processes × %d workers × %d spans per request; pinning: %s\n",
		o.duration, max(1, o.rounds), schedule, o.workers, o.batchSize, o.traceProcs, o.traceWorkers, o.traceBatchSize, pin)

	if len(r.e2e) > 0 {
		r.printE2E(w)
	}
	r.clients.print(w)
	if len(r.benches) > 0 {
		r.printBenches(w)
	}
	rows := r.targets()
	fmt.Fprintf(w, "\n-- targets (ratio = measured / target) --\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\ttarget\tmeasured\trequired\tratio\tresult")
	met, total := 0, 0
	for _, t := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.id, t.what, t.measured, t.target, t.ratio, t.result)
		switch t.result {
		case "PASS":
			met++
			total++
		case "FAIL", "MISSING":
			total++
			missed = true
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d of %d targets met; wall time %s\n", met, total, time.Since(r.started).Round(time.Second))
	r.printProblems(w)
	return missed
}

func (r *report) printE2E(w io.Writer) {
	fmt.Fprintf(w, "\n-- end to end (accepted = otelcol_receiver_accepted_*, counted = sum(analytics_daily) after SIGTERM) --\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tsignal\taccepted\trefused\tcounted\tleft in Redis\tcollector CPU s\tper CPU-second\tvs baseline\tper wall second\tpeak RSS MiB\tload gen CPU s\tother CPU s\t")
	for _, rr := range r.e2e {
		loads := rr.loads
		if rr.probe != nil {
			loads = append(slices.Clip(loads), rr.probe)
		}
		for _, l := range loads {
			counted, inRedis := "n/a", "n/a"
			if rr.cfg.analytics {
				counted, inRedis = "?", "?"
				if l.countsOK {
					counted, inRedis = strconv.FormatInt(l.counted, 10), strconv.FormatInt(l.inRedis, 10)
				}
			}
			ratio := "1.00×"
			if rr.cfg.key != keyBaseline {
				ratio = formatRatio(l.perCPUSecond(), baselineRate(r.baselineOf(rr), l.signal.name))
			}
			signal, rss := l.signal.name, rr.peakRSS
			if l == rr.probe {
				signal, rss, ratio = fmt.Sprintf("logs, saturation probe (%d workers)", r.opts.probeWorkers), rr.peakRSSProbe, "-"
				counted, inRedis = "(in logs)", ""
			}
			wall := 0.0
			if l.loadSeconds > 0 {
				wall = l.accepted / (l.loadSeconds + l.drainSeconds)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%s\t%s\t%.2f\t%.0f\t%s\t%.0f\t%s\t%.1f\t%.1f\t\n",
				rr.cfg.name, signal, l.accepted, l.refused+l.failed, counted, inRedis,
				l.cpuSeconds, l.perCPUSecond(), ratio, wall, mib(rss), l.loadGenCPU, l.otherCPU)
		}
		if len(rr.loads) > 1 {
			acc, cpu := combined(rr)
			ratio := "1.00×"
			if rr.cfg.key != keyBaseline {
				bacc, bcpu := combined(r.baselineOf(rr))
				ratio = formatRatio(safeDiv(acc, cpu), safeDiv(bacc, bcpu))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t\t\t\t%.2f\t%.0f\t%s\t\t\t\t\t\n", rr.cfg.name, "logs+spans", acc, cpu, safeDiv(acc, cpu), ratio)
		}
	}
	_ = tw.Flush()
	for _, rr := range r.e2e {
		fmt.Fprintf(w, "  %s: peak RSS (VmHWM) %s MiB", rr.cfg.name, mib(rr.peakRSS))
		if rr.probe != nil {
			fmt.Fprintf(w, ", %s MiB after the saturation probe (sending queue max %.0f of %.0f)", mib(rr.peakRSSProbe), rr.probe.maxQueue, rr.probe.queueCapacity)
		}
		fmt.Fprintf(w, "; shutdown %.1fs, exit status %d", rr.shutdownSecs, rr.exitCode)
		for _, l := range rr.loads {
			if l.queueCapacity > 0 {
				fmt.Fprintf(w, "; %s: sending queue max %.0f of %.0f", l.signal.name, l.maxQueue, l.queueCapacity)
			}
			if l.drainSeconds > 0.5 {
				fmt.Fprintf(w, ", drained %.1fs after the loads", l.drainSeconds)
			}
			if l.countsOK && (l.countedHourly != l.counted || l.countedUser != l.counted) {
				fmt.Fprintf(w, "; %s families differ: daily %d, hourly %d, per-user %d", l.signal.name, l.counted, l.countedHourly, l.countedUser)
			}
		}
		fmt.Fprintln(w)
	}
}

func (r *report) printBenches(w io.Writer) {
	fmt.Fprintf(w, "\n-- Go benchmarks --\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "package\tbenchmark\tsettings\titerations\tmetrics")
	for i := range r.benches {
		b := &r.benches[i]
		parts := make([]string, 0, len(b.metrics))
		for _, m := range b.metrics {
			parts = append(parts, formatMetric(m))
		}
		settings := b.run
		if b.runs > 1 {
			settings += fmt.Sprintf(", median of %d", b.runs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", shortPkg(b.pkg), b.name, settings, b.iters, strings.Join(parts, "  "))
	}
	_ = tw.Flush()
}

func (r *report) targets() []targetRow {
	var rows []targetRow
	o := r.opts

	// Exporter push, 100 users, GOMAXPROCS=1: through the sample config's
	// sending queue (target 1), and one batch at a time for information.
	for _, name := range []string{pushQueuedBenchName, pushBenchName} {
		push := targetRow{id: "1", what: "exporter push, 100 users, GOMAXPROCS=1, sample config's sending queue, 4 producers (" + name + ")", target: "≥ 2.00M events/s"}
		if name == pushBenchName {
			push.id, push.what, push.target = "1*", "exporter push, one batch at a time, no queue ("+name+")", "(info)"
		}
		if b := r.bench(exporterPkg, name); b != nil {
			if v, ok := b.metric("events/s"); ok {
				push.measured = formatNumber(v) + " events/s"
				push.ratio, push.result = ratioGE(v, targetPushEventsPerSec)
				if name == pushBenchName {
					push.result = "info"
				}
			}
		}
		rows = append(rows, missing(push, o.skipGoBench || name == pushBenchName))
	}

	// Redis work grows with distinct keys, not events: one round trip per batch.
	rt := targetRow{id: "2", what: "Redis round trips per 8192-record batch (" + pushBenchName + ")", target: "≤ 1"}
	if b := r.bench(exporterPkg, pushBenchName); b != nil {
		trips, okTrips := b.metric("round_trips/batch")
		cmds, okCmds := b.metric("commands/event")
		if okTrips && okCmds {
			rt.measured = fmt.Sprintf("%.0f round trip, %.5f commands/event", trips, cmds)
			rt.ratio, rt.result = ratioLE(trips, 1)
		}
	}
	rows = append(rows, missing(rt, o.skipGoBench))

	// Flush of 1M per-user counters.
	flushName := fmt.Sprintf("BenchmarkFlush/%dUserCountersViaUnnest", o.flushCounters)
	flush := targetRow{id: "4", what: fmt.Sprintf("flush of %s per-user counters Redis→PostgreSQL (%s)", formatNumber(float64(o.flushCounters)), flushName), target: "≤ 10 s"}
	if b := r.bench(flushPkg, flushName); b != nil {
		if v, ok := b.metric("ns/op"); ok {
			s := v / 1e9
			flush.measured = fmt.Sprintf("%.2f s", s)
			flush.ratio, flush.result = ratioLE(s, targetFlushSeconds)
			if o.flushCounters != 1_000_000 {
				flush.result = "info"
			}
		}
	}
	rows = append(rows, missing(flush, o.skipGoBench))

	// End to end, mode (a) vs baseline (target 3), and mode (b) for information.
	for _, key := range []string{keyAckRedis, keyPersistent} {
		rr := r.run(key)
		base := r.baselineOf(rr)
		label := "(a) ack after Redis"
		if key == keyPersistent {
			label = "(b) persistent queue"
		}
		for _, sig := range []string{"logs", "traces", "combined"} {
			unit := map[string]string{"logs": "log records", "traces": "spans", "combined": "logs+spans"}[sig]
			row := targetRow{id: "3", what: fmt.Sprintf("e2e %s: %s per collector CPU-second vs baseline", label, unit), target: "≥ 0.85×"}
			if key == keyPersistent {
				row.id, row.target = "3*", "(other mode, info)"
			}
			var got, want float64
			if rr != nil && base != nil {
				if sig == "combined" {
					a, c := combined(rr)
					ba, bc := combined(base)
					got, want = safeDiv(a, c), safeDiv(ba, bc)
				} else if l := rr.load(sig); l != nil {
					got, want = l.perCPUSecond(), baselineRate(base, sig)
				}
			}
			if got > 0 && want > 0 {
				v := got / want
				row.measured = fmt.Sprintf("%.3f× (%s vs %s /CPU-s)", v, formatNumber(got), formatNumber(want))
				if sig != "combined" {
					row.measured += roundSpread(rr.load(sig), base.load(sig))
				}
				row.ratio, row.result = ratioGE(v, targetE2ERatio)
				if key == keyPersistent {
					row.result = "info"
				}
			}
			rows = append(rows, missing(row, o.skipE2E || key == keyPersistent))
		}
	}

	// Memory under saturation, default settings (the sample config).
	for _, key := range []string{keyAckRedis, keyPersistent, keyBaseline} {
		rr := r.run(key)
		row := targetRow{id: "5", what: "collector peak RSS (VmHWM) under saturation, " + key, target: "≤ 256 MiB"}
		switch key {
		case keyAckRedis:
			row.what = "collector peak RSS (VmHWM) under saturation, sample config (a)"
		case keyPersistent:
			row.id, row.what, row.target = "5*", "collector peak RSS, (b) persistent queue", "(info)"
		default:
			row.id, row.what, row.target = "5*", "collector peak RSS, baseline", "(info)"
		}
		if rr != nil && rr.peakRSS > 0 {
			peak := max(rr.peakRSS, rr.peakRSSProbe)
			row.measured = mib(peak) + " MiB"
			if rr.probe != nil {
				row.what += fmt.Sprintf(", incl. probe %d×%d in flight", r.opts.probeWorkers, r.opts.batchSize)
			}
			row.ratio, row.result = ratioLE(float64(peak), targetRSSBytes)
			if key != keyAckRedis {
				row.result = "info"
			}
		}
		rows = append(rows, missing(row, o.skipE2E || key != keyAckRedis))
	}

	// Nothing lost or counted twice: accepted == counted + still in Redis,
	// for every analytics configuration (modes a and b, variants).
	for _, rr := range r.e2e {
		if !rr.cfg.analytics {
			continue
		}
		key := rr.cfg.key
		for _, l := range rr.loads {
			row := targetRow{id: "✓", what: fmt.Sprintf("%s, %s: accepted = counted in PostgreSQL + left in Redis", key, l.signal.unit), target: "exact"}
			if l.countsOK {
				row.measured = fmt.Sprintf("%.0f = %d + %d", l.acceptedTotal, l.counted, l.inRedis)
				row.result = "PASS"
				if float64(l.counted+l.inRedis) != l.acceptedTotal {
					row.measured = fmt.Sprintf("%.0f ≠ %d + %d", l.acceptedTotal, l.counted, l.inRedis)
					row.result = "FAIL"
				}
				row.ratio = fmt.Sprintf("%.4f", safeDiv(float64(l.counted+l.inRedis), l.acceptedTotal))
			}
			rows = append(rows, missing(row, false))
		}
	}
	return rows
}

func (r *report) printProblems(w io.Writer) {
	var b strings.Builder
	if r.interrupted != "" {
		fmt.Fprintf(&b, "  run interrupted: %s\n", r.interrupted)
	}
	for _, rr := range r.e2e {
		if rr.err != nil {
			fmt.Fprintf(&b, "  e2e %s: %s\n", rr.cfg.key, indent(errString(rr.err)))
		}
		for _, l := range rr.loads {
			if l.telemetrygenErr != nil {
				fmt.Fprintf(&b, "  e2e %s: %s\n", rr.cfg.key, indent(errString(l.telemetrygenErr)))
			}
			if l.telemetrygenErrorLogs > 0 {
				fmt.Fprintf(&b, "  e2e %s: telemetrygen %s logged %d error lines (export failures)\n", rr.cfg.key, l.signal.name, l.telemetrygenErrorLogs)
			}
			if l.refused+l.failed > 0 || l.exportFailed > 0 {
				fmt.Fprintf(&b, "  e2e %s: %s: receiver refused %.0f, failed %.0f; exporter failed %.0f\n",
					rr.cfg.key, l.signal.name, l.refused, l.failed, l.exportFailed)
			}
		}
		for _, is := range rr.logIssues {
			fmt.Fprintf(&b, "  e2e %s collector log (%d×): %s\n", rr.cfg.key, is.count, truncate(is.line, 1500))
		}
	}
	for _, e := range r.benchErrs {
		fmt.Fprintf(&b, "  go benchmarks: %s\n", indent(e))
	}
	if b.Len() == 0 {
		fmt.Fprintf(w, "no errors, no warn/error lines in the collector logs\n")
		return
	}
	fmt.Fprintf(w, "\n-- problems --\n%s", b.String())
}

func (r *report) bench(pkg, name string) *benchLine {
	for i := range r.benches {
		if r.benches[i].pkg == pkg && r.benches[i].name == name {
			return &r.benches[i]
		}
	}
	return nil
}

func missing(t targetRow, skipped bool) targetRow {
	if t.result != "" {
		return t
	}
	t.measured, t.ratio = "-", "-"
	t.result = "MISSING"
	if skipped {
		t.result = "skipped"
	}
	return t
}

// baselineOf returns the baseline figures rr is compared with: those of the
// slices run alongside it (paired schedule), else the baseline's run.
func (r *report) baselineOf(rr *runResult) *runResult {
	if rr != nil && rr.pairedBase != nil {
		return rr.pairedBase
	}
	return r.run(keyBaseline)
}

func baselineRate(base *runResult, signal string) float64 {
	if base == nil {
		return 0
	}
	if l := base.load(signal); l != nil {
		return l.perCPUSecond()
	}
	return 0
}

func combined(rr *runResult) (accepted, cpu float64) {
	if rr == nil {
		return 0, 0
	}
	for _, l := range rr.loads {
		accepted += l.accepted
		cpu += l.cpuSeconds
	}
	return accepted, cpu
}

func ratioGE(v, target float64) (ratio, result string) {
	ratio = fmt.Sprintf("%.3f", v/target)
	if v >= target {
		return ratio, "PASS"
	}
	return ratio, "FAIL"
}

func ratioLE(v, target float64) (ratio, result string) {
	ratio = fmt.Sprintf("%.3f", v/target)
	if v <= target {
		return ratio, "PASS"
	}
	return ratio, "FAIL"
}

func formatRatio(v, base float64) string {
	if v <= 0 || base <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", float64(b)/(1<<20))
}

// formatNumber prints large values with an SI suffix and small ones with 4
// significant digits.
func formatNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return fmt.Sprintf("%.2fG", v/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

func shortPkg(pkg string) string {
	if s, ok := strings.CutPrefix(pkg, modulePath+"/"); ok {
		return s
	}
	return pkg
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// formatMetric prints ns/op as a duration, anything else as a number.
func formatMetric(m benchMetric) string {
	if m.unit == "ns/op" {
		return time.Duration(m.value).Round(durationPrecision(m.value)).String() + "/op"
	}
	return formatNumber(m.value) + " " + m.unit
}

func durationPrecision(ns float64) time.Duration {
	switch {
	case ns >= 1e9:
		return time.Millisecond
	case ns >= 1e6:
		return time.Microsecond
	case ns >= 1e3:
		return 10 * time.Nanosecond
	default:
		return time.Nanosecond
	}
}

// roundSpread returns " rounds min–max×": the lowest and highest ratio of
// one round of l to the same round of the baseline, or "" without rounds.
func roundSpread(l, base *loadResult) string {
	if l == nil || base == nil {
		return ""
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, rate := range l.roundRates {
		if i >= len(base.roundRates) || base.roundRates[i] <= 0 {
			break
		}
		v := rate / base.roundRates[i]
		lo, hi = min(lo, v), max(hi, v)
	}
	if math.IsInf(lo, 1) {
		return ""
	}
	return fmt.Sprintf(", rounds %.2f–%.2f×", lo, hi)
}
