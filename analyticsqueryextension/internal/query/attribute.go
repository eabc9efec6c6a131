package query

import (
	"slices"
	"strings"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// AttrKind is what an attribute dimension or filter reads from an event.
type AttrKind uint8

const (
	// EventName is the event type (event:name).
	EventName AttrKind = iota + 1
	// EventUser is the user id (event:user); only the per-user family has it.
	EventUser
	// EventProp is the value of one property (event:props:<key>); only the
	// property families have it.
	EventProp
)

// propsPrefix starts the name of a property attribute: event:props:<key>.
const propsPrefix = "event:props:"

// Attribute is an event attribute that a dimension groups by or a filter
// tests.
type Attribute struct {
	Kind AttrKind
	// Key is the property of an EventProp attribute.
	Key string
}

// Name returns the attribute's name in requests.
func (a Attribute) Name() string {
	switch a.Kind {
	case EventName:
		return "event:name"
	case EventUser:
		return "event:user"
	case EventProp:
		return propsPrefix + a.Key
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

// parseAttribute returns the attribute named name: one of attributes, or
// event:props:<key> with a key that is not empty.
func parseAttribute(name string) (Attribute, bool) {
	if key, ok := strings.CutPrefix(name, propsPrefix); ok {
		return Attribute{Kind: EventProp, Key: key}, key != ""
	}
	a, ok := attributes[name]
	return a, ok
}

// attributeError explains why name is not an attribute; what is the start
// of the message ("cannot filter on", "unknown dimension").
func attributeError(field, what, name string, others ...string) *FieldError {
	if name == propsPrefix {
		return fieldErr(field, "%q names no property; expected event:props:<key>, e.g. \"event:props:model\"", name)
	}
	return fieldErr(field, "%s %q; expected one of %s", what, name, quoteList(append(others, attributeNames()...)))
}

// attributeNames lists the attribute names, for error messages.
func attributeNames() []string {
	names := make([]string, 0, len(attributes)+1)
	for n := range attributes {
		names = append(names, n)
	}
	names = append(names, propsPrefix+"<key>")
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
	case EventProp:
		return c.Value, (c.Family == protocol.PropertyDaily || c.Family == protocol.PropertyHourly) && c.Attribute == a.Key
	default:
		return "", false
	}
}
