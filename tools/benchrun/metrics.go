package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// promSnapshot holds the collector's own metrics, summed over labels, by name.
type promSnapshot map[string]float64

// get returns the metric's value, also under the `_total` suffix that some
// collector versions append to counters.
func (p promSnapshot) get(name string) float64 {
	if v, ok := p[name]; ok {
		return v
	}
	return p[name+"_total"]
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape reads the Prometheus text exposition at url.
func scrape(ctx context.Context, url string) (promSnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	snap := promSnapshot{}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			v := sampleValue(m)
			snap[name] += v
			for _, l := range m.GetLabel() {
				if l.GetName() == "data_type" {
					snap[name+"{data_type="+l.GetValue()+"}"] += v
				}
			}
		}
	}
	return snap, nil
}

// sampleValue is a counter's, a gauge's or an untyped sample's value (the
// collector's own metrics the driver reads are of these types).
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	default:
		return 0
	}
}

// healthy reports whether the health check extension answers 200.
func healthy(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s", errNotReady, resp.Status)
	}
	return nil
}
