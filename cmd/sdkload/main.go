// Command sdkload runs internal/sdkload against a collector: several OTel Go
// SDK log pipelines at their default settings, each emitting a steady rate of
// event records, and prints what they emitted, exported and dropped and the
// latency of their export calls. With -json it prints the sdkload.Result as
// JSON (the end-to-end tests read it that way). For example, against
// `make run`:
//
//	go run ./cmd/sdkload -endpoint 127.0.0.1:4318 -instances 4 -rate 5000 -duration 10s
//
// Build it without the race detector for measurements: under -race the SDK's
// own export path is several times slower and adds to every export's latency.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/otelcol-analytics/otelcol-analytics/internal/sdkload"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sdkload:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		opts   sdkload.Options
		events string
		asJSON bool
	)
	flag.StringVar(&opts.Endpoint, "endpoint", "127.0.0.1:4318", "collector OTLP endpoint, host:port (HTTP port, or gRPC port with -protocol grpc)")
	flag.StringVar((*string)(&opts.Protocol), "protocol", string(sdkload.ProtocolHTTP), `OTLP protocol: "http/protobuf" or "grpc"`)
	flag.IntVar(&opts.Instances, "instances", 4, "independent SDK LoggerProviders (application instances)")
	flag.IntVar(&opts.Rate, "rate", 5000, "records per second per instance")
	flag.DurationVar(&opts.Duration, "duration", 10*time.Second, "how long each instance emits")
	flag.DurationVar(&opts.Tick, "tick", 0, "pacing period (0: the library default, 10ms)")
	flag.StringVar(&events, "events", "sdk:page_view,sdk:generation_completed", "comma-separated event names, used in turn")
	flag.IntVar(&opts.Users, "users", 0, "distinct user.id values (0: the library default, 100)")
	flag.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 0, "bound on each instance's final flush and shutdown (0: the library default, 30s)")
	flag.BoolVar(&asJSON, "json", false, "print the result as JSON")
	flag.Parse()
	if events != "" {
		opts.EventNames = strings.Split(events, ",")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := sdkload.Run(ctx, opts)
	if err != nil && res.Emitted == 0 {
		return err
	}
	if asJSON {
		if encErr := json.NewEncoder(os.Stdout).Encode(res); encErr != nil {
			return fmt.Errorf("encode result: %w", encErr)
		}
	} else {
		fmt.Println(res)
	}
	return err
}
