package sdkload

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Protocol is the OTLP transport of the SDK exporter, named as in
// OTEL_EXPORTER_OTLP_PROTOCOL.
type Protocol string

const (
	// ProtocolHTTP is OTLP/HTTP with protobuf bodies (otlploghttp).
	ProtocolHTTP Protocol = "http/protobuf"
	// ProtocolGRPC is OTLP/gRPC (otlploggrpc).
	ProtocolGRPC Protocol = "grpc"
)

// Validate reports an unknown protocol.
func (p Protocol) Validate() error {
	switch p {
	case ProtocolHTTP, ProtocolGRPC:
		return nil
	default:
		return fmt.Errorf("invalid protocol %q, expected one of %q", string(p), []Protocol{ProtocolHTTP, ProtocolGRPC})
	}
}

const (
	defaultInstances       = 1
	defaultTick            = 10 * time.Millisecond
	defaultEventName       = "sdk_load"
	defaultUsers           = 100
	defaultShutdownTimeout = 30 * time.Second
	defaultServiceName     = "sdkload"
)

// Options describe one load run. Endpoint, Rate and Duration are required;
// the zero value of every other field selects its default.
type Options struct {
	// Endpoint is the collector's OTLP receiver as host:port (its HTTP or
	// gRPC port, after Protocol). The exporter connects without TLS.
	Endpoint string
	// Protocol selects the SDK exporter. default: ProtocolHTTP.
	Protocol Protocol
	// Instances is the number of independent LoggerProviders, each with its
	// own batch processor and exporter, as separate application instances
	// have. default: 1.
	Instances int
	// Rate is the number of records each instance emits per second.
	Rate int
	// Duration is how long each instance emits. An instance emits at most
	// Rate × Duration records and stops at Duration even if it fell behind.
	Duration time.Duration
	// Tick is the pacing period: each tick emits the records due since the
	// last one, never more than two ticks' worth at once, so an emitter
	// that stalls does not flood the SDK queue afterwards. default: 10ms.
	Tick time.Duration
	// EventNames are the records' event names, used in turn.
	// default: ["sdk_load"].
	EventNames []string
	// Users is the number of distinct user.id values, used in turn.
	// default: 100.
	Users int
	// ShutdownTimeout bounds each instance's ForceFlush and Shutdown
	// together; records still queued then are lost. default: 30 seconds.
	ShutdownTimeout time.Duration
	// ServiceName is the resource's service.name. default: "sdkload".
	ServiceName string
}

var (
	errNoEndpoint  = errors.New(`"Endpoint" must be set`)
	errNoRate      = errors.New(`"Rate" must be positive`)
	errNoDuration  = errors.New(`"Duration" must be positive`)
	errNegative    = errors.New(`"Instances", "Tick", "Users" and "ShutdownTimeout" must not be negative`)
	errEmptyEvents = errors.New(`"EventNames" must not contain an empty name`)
)

// withDefaults returns o with every zero optional field set to its default.
func (o Options) withDefaults() Options {
	if o.Protocol == "" {
		o.Protocol = ProtocolHTTP
	}
	if o.Instances == 0 {
		o.Instances = defaultInstances
	}
	if o.Tick == 0 {
		o.Tick = defaultTick
	}
	if len(o.EventNames) == 0 {
		o.EventNames = []string{defaultEventName}
	}
	if o.Users == 0 {
		o.Users = defaultUsers
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = defaultShutdownTimeout
	}
	if o.ServiceName == "" {
		o.ServiceName = defaultServiceName
	}
	return o
}

// validate checks o after withDefaults and reports every problem.
func (o Options) validate() error {
	var errs []error
	if o.Endpoint == "" {
		errs = append(errs, errNoEndpoint)
	}
	if err := o.Protocol.Validate(); err != nil {
		errs = append(errs, err)
	}
	if o.Rate <= 0 {
		errs = append(errs, errNoRate)
	}
	if o.Duration <= 0 {
		errs = append(errs, errNoDuration)
	}
	if o.Instances < 0 || o.Tick < 0 || o.Users < 0 || o.ShutdownTimeout < 0 {
		errs = append(errs, errNegative)
	}
	if slices.Contains(o.EventNames, "") {
		errs = append(errs, errEmptyEvents)
	}
	return errors.Join(errs...)
}

// total is the number of records one instance emits when it keeps up.
func (o Options) total() int64 {
	return int64(o.Rate) * int64(o.Duration) / int64(time.Second)
}

// perTick is the number of records due per tick (at least one).
func (o Options) perTick() int64 {
	return max(1, int64(o.Rate)*int64(o.Tick)/int64(time.Second))
}
