package protocol

import "fmt"

// GuardKind names what a cardinality cap bounds. Each cap is a Redis set per
// UTC day that the apply script fills up to its limit, shared by every
// collector: a member that finds the set full is folded into OverflowValue
// for that day, in the same atomic call that counts it.
type GuardKind uint8

const (
	// GuardEventTypes bounds the distinct event types per day; a type over
	// the cap is counted as the event type OverflowValue in every family.
	GuardEventTypes GuardKind = iota + 1
	// GuardPropertyValues bounds the distinct values of one property per
	// day; a value over the cap is counted as the value OverflowValue.
	GuardPropertyValues
	// GuardUsers bounds the distinct users per day; a user over the cap is
	// counted as the user OverflowValue.
	GuardUsers
)

// String returns the kind's name, used as the reason of overflow metrics.
func (k GuardKind) String() string {
	switch k {
	case GuardEventTypes:
		return "event_types"
	case GuardPropertyValues:
		return "property_values"
	case GuardUsers:
		return "users"
	default:
		return fmt.Sprintf("guard(%d)", uint8(k))
	}
}

// Guard is one membership check of an apply call: may Member join the set
// of its kind (and Attribute, the property, for GuardPropertyValues) for the
// day that starts at hour Day, which holds at most Limit members.
type Guard struct {
	Kind      GuardKind
	Attribute string
	Member    string
	// Day is the day's first hour since the Unix epoch (a multiple of 24).
	Day   int64
	Limit int64
}

// AppendGuardKey appends the key of the set that g checks against:
//
//	{prefix}:seen:types:{YYYY-MM-DD}
//	{prefix}:seen:values:{property}:{YYYY-MM-DD}
//	{prefix}:seen:users:{YYYY-MM-DD}
func (s Schema) AppendGuardKey(dst []byte, g Guard) []byte {
	dst = append(dst, s.prefix...)
	switch g.Kind {
	case GuardPropertyValues:
		dst = append(dst, "seen:values:"...)
		dst = AppendEscape(dst, g.Attribute)
		dst = append(dst, ':')
	case GuardUsers:
		dst = append(dst, "seen:users:"...)
	default:
		dst = append(dst, "seen:types:"...)
	}
	return appendDate(dst, floorDiv(g.Day, 24))
}

// GuardKey returns the key of the set that g checks against.
func (s Schema) GuardKey(g Guard) string { return string(s.AppendGuardKey(nil, g)) }

// CounterGuards are the guards (1-based positions in the call, 0 for none)
// that decide which key a counter increments. Type folds the event type; Dim
// folds the counter's other label: the property value (PropertyDaily,
// PropertyHourly) or the user (UserDaily).
type CounterGuards struct {
	Type int
	Dim  int
}

// Folded returns c with the labels that failed guards fold: the event type
// (foldType) and the property value or user (foldDim) become OverflowValue.
func (c Counter) Folded(foldType, foldDim bool) Counter {
	if foldType {
		c.EventType = OverflowValue
	}
	if foldDim {
		switch c.Family {
		case UserDaily:
			c.UserID = OverflowValue
		case PropertyDaily, PropertyHourly:
			c.Value = OverflowValue
		default:
		}
	}
	return c
}

// hasDim reports whether the family has a label that a Dim guard folds.
func (f Family) hasDim() bool {
	return f == UserDaily || f == PropertyDaily || f == PropertyHourly
}
