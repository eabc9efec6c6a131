package query

import (
	"slices"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// AttrKind is what an attribute dimension or filter reads from an event.
type AttrKind uint8

const (
	// EventName is the event type (event:name).
	EventName AttrKind = iota + 1
	// EventUser is the user id (event:user); only the per-user family has it.
	EventUser
)

// Attribute is an event attribute that a dimension groups by or a filter
// tests. A property attribute (event:props:<key>) would add a kind and carry
// its key here.
type Attribute struct {
	Kind AttrKind
}

// Name returns the attribute's name in requests.
func (a Attribute) Name() string {
	switch a.Kind {
	case EventName:
		return "event:name"
	case EventUser:
		return "event:user"
	default:
		return "unknown"
	}
}

// attributes are the attribute names a request may use, as dimensions and
// in filters.
var attributes = map[string]Attribute{
	"event:name": {Kind: EventName},
	"event:user": {Kind: EventUser},
}

// parseAttribute returns the attribute named name.
func parseAttribute(name string) (Attribute, bool) {
	a, ok := attributes[name]
	return a, ok
}

// attributeNames lists the attribute names, for error messages.
func attributeNames() []string {
	names := make([]string, 0, len(attributes))
	for n := range attributes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// valueOf returns the attribute's value in counter c, and whether c's
// family carries it.
func (a Attribute) valueOf(c protocol.Counter) (string, bool) {
	switch a.Kind {
	case EventName:
		return c.EventType, true
	case EventUser:
		return c.UserID, c.Family == protocol.UserDaily
	default:
		return "", false
	}
}
