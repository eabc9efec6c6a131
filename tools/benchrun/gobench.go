package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

const (
	modulePath       = "github.com/otelcol-analytics/otelcol-analytics"
	exporterPkg      = modulePath + "/redisanalyticsexporter"
	flushPkg         = modulePath + "/pgflushextension"
	flushCountersEnv = "PGFLUSH_BENCH_COUNTERS"
)

// benchMetric is one "value unit" pair of a benchmark line.
type benchMetric struct {
	value float64
	unit  string
}

// benchLine is one parsed benchmark result line, or the median of several
// (runs > 1).
type benchLine struct {
	pkg     string
	run     string // which run of the package (settings)
	name    string // without the -GOMAXPROCS suffix
	iters   int64
	metrics []benchMetric
	runs    int
}

func (b *benchLine) metric(unit string) (float64, bool) {
	for _, m := range b.metrics {
		if m.unit == unit {
			return m.value, true
		}
	}
	return 0, false
}

// benchRun is one invocation of a package's test binary.
type benchRun struct {
	label string
	cpus  string
	env   []string
	args  []string
}

// packageRuns decides how each package's benchmarks run: the exporter's with
// GOMAXPROCS=1 on the collector CPU (Redis on the other one), the flush
// benchmark once at the target size, everything else with the defaults.
func packageRuns(pkg string, o options) []benchRun {
	switch pkg {
	case exporterPkg:
		return []benchRun{{
			label: "GOMAXPROCS=1, pinned to CPU " + o.collectorCPUs,
			cpus:  o.collectorCPUs,
			env:   []string{"GOMAXPROCS=1"},
			args:  []string{"-test.bench", ".", "-test.count", strconv.Itoa(max(1, o.benchCount))},
		}}
	case flushPkg:
		return []benchRun{{
			label: fmt.Sprintf("%s=%d, 1 iteration, production strategy", flushCountersEnv, o.flushCounters),
			env:   []string{flushCountersEnv + "=" + strconv.Itoa(o.flushCounters)},
			args:  []string{"-test.bench", "^BenchmarkFlush$/ViaUnnest$", "-test.benchtime", "1x"},
		}}
	default:
		return []benchRun{{label: "defaults", args: []string{"-test.bench", "."}}}
	}
}

var (
	benchFuncRE  = regexp.MustCompile(`(?m)^func Benchmark\w*\(`)
	testFailedRE = regexp.MustCompile(`^(--- FAIL|FAIL\b|panic:|fatal error:)`)
)

// runGoBenchmarks compiles each package that has benchmarks and runs them.
func runGoBenchmarks(ctx context.Context, sup *supervisor, o options, tmp, redisAddr string) ([]benchLine, []string) {
	var errs []string
	out, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.ImportPath}}\t{{.Dir}}", "./...").Output()
	if err != nil {
		return nil, []string{"go list: " + err.Error()}
	}
	binDir := filepath.Join(tmp, "gobench")
	if err := os.MkdirAll(binDir, 0o750); err != nil {
		return nil, []string{err.Error()}
	}
	var lines []benchLine
	for pkgLine := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		pkg, dir, ok := strings.Cut(pkgLine, "\t")
		if !ok || !hasBenchmarks(dir) || ctx.Err() != nil {
			continue
		}
		base := strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(pkg, modulePath), "/"), "/", "_")
		if base == "" {
			base = "root"
		}
		bin := filepath.Join(binDir, base+".test")
		logf("go test -c %s", pkg)
		build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, pkg) //nolint:gosec // pkg comes from `go list ./...`
		if b, err := build.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("%s: compile: %v\n%s", pkg, err, b))
			continue
		}
		for i, r := range packageRuns(pkg, o) {
			env := append(os.Environ(), "REDIS_ENDPOINT="+redisAddr, "POSTGRES_DSN="+o.postgresDSN)
			env = append(env, r.env...)
			args := append([]string{bin, "-test.run", "^$", "-test.benchmem", "-test.timeout", "10m"}, r.args...)
			logf("benchmarks %s (%s)", pkg, r.label)
			c, err := sup.start(fmt.Sprintf("gobench-%s-%d", base, i), r.cpus, dir, env, args...)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", pkg, err))
				continue
			}
			if err := waitExit(ctx, c, 11*time.Minute); err != nil {
				sup.stop(c, 5*time.Second)
				errs = append(errs, fmt.Sprintf("%s: %v", pkg, err))
				continue
			}
			parsed, failures := parseBenchOutput(c.logPath, pkg, r.label)
			for i := range parsed {
				logf("  %s", formatBenchLine(&parsed[i]))
			}
			lines = append(lines, medians(parsed)...)
			if c.exitCode() != 0 || len(failures) > 0 {
				errs = append(errs, fmt.Sprintf("%s (%s): exit status %d\n%s", pkg, r.label, c.exitCode(),
					strings.Join(append(failures, c.logTail(15)), "\n")))
			}
		}
	}
	return lines, errs
}

func hasBenchmarks(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
	for _, f := range files {
		b, err := os.ReadFile(f) //nolint:gosec // a test file of this repository
		if err == nil && benchFuncRE.Match(b) {
			return true
		}
	}
	return false
}

// parseBenchOutput reads `go test -bench` output: result lines and failures.
func parseBenchOutput(path, pkg, run string) (lines []benchLine, failures []string) {
	data, err := os.ReadFile(path) //nolint:gosec // a log under our temp dir
	if err != nil {
		return nil, []string{err.Error()}
	}
	for text := range strings.SplitSeq(string(data), "\n") {
		if testFailedRE.MatchString(text) {
			failures = append(failures, text)
		}
	}
	r := benchfmt.NewReader(bytes.NewReader(data), path)
	for r.Scan() {
		res, ok := r.Result().(*benchfmt.Result)
		if !ok {
			continue // unit metadata, or a line that is not a result
		}
		bl := benchLine{pkg: pkg, run: run, name: "Benchmark" + trimProcs(string(res.Name.Full())), iters: int64(res.Iters)}
		for _, v := range res.Values {
			m := benchMetric{value: v.Value, unit: v.Unit}
			if v.OrigUnit != "" { // benchfmt tidied it (ns/op -> sec/op): keep what go test printed
				m = benchMetric{value: v.OrigValue, unit: v.OrigUnit}
			}
			bl.metrics = append(bl.metrics, m)
		}
		lines = append(lines, bl)
	}
	if err := r.Err(); err != nil {
		failures = append(failures, err.Error())
	}
	return lines, failures
}

// trimProcs drops the -GOMAXPROCS suffix of a benchmark name.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

// medians merges the lines of each benchmark run more than once (-test.count)
// into one line holding the median of every metric and of the iterations, in
// the order the benchmarks first appear. A host's transient slowdowns then
// move the figure less than they move one run.
func medians(lines []benchLine) []benchLine {
	var out []benchLine
	index := map[string]int{}
	groups := [][]benchLine{}
	for _, l := range lines {
		key := l.pkg + "\x00" + l.run + "\x00" + l.name
		i, ok := index[key]
		if !ok {
			i = len(groups)
			index[key] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], l)
	}
	for _, g := range groups {
		m := g[0]
		m.runs = len(g)
		m.metrics = slices.Clone(m.metrics)
		if len(g) > 1 {
			m.iters = int64(median(g, func(l benchLine) (float64, bool) { return float64(l.iters), true }))
			for j := range m.metrics {
				unit := m.metrics[j].unit
				m.metrics[j].value = median(g, func(l benchLine) (float64, bool) { return l.metric(unit) })
			}
		}
		out = append(out, m)
	}
	return out
}

// median returns the median of the values get finds in lines (the mean of
// the two middle ones for an even count).
func median(lines []benchLine, get func(benchLine) (float64, bool)) float64 {
	vs := make([]float64, 0, len(lines))
	for _, l := range lines {
		if v, ok := get(l); ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2
	}
	return vs[len(vs)/2]
}

func formatBenchLine(b *benchLine) string {
	parts := make([]string, 0, len(b.metrics))
	for _, m := range b.metrics {
		parts = append(parts, formatMetric(m))
	}
	return fmt.Sprintf("%s  %d×  %s", b.name, b.iters, strings.Join(parts, "  "))
}
