// Package grafana_test checks the Grafana provisioning of deploy/grafana: the
// files parse and refer to each other, and every query of the dashboard,
// with Grafana's macros expanded, returns the expected rows from a
// PostgreSQL database that pg_flush created.
package grafana_test

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// grafanaQuery is what Grafana knows when it runs one panel query: the time
// range, the panel's interval and the selected values of the variables.
type grafanaQuery struct {
	from, to time.Time
	// interval is $__interval: Grafana's auto interval, at least the panel's
	// "interval" (min interval).
	interval time.Duration
	// vars are the selected values of multi-value variables, by name.
	vars map[string][]string
}

// macroRE matches a data source macro call the way Grafana's PostgreSQL
// macro engine does: $name(args), args without ")".
var (
	macroRE = regexp.MustCompile(`\$(__[_a-zA-Z0-9]+)\(([^)]*)\)`)
	// leftoverRE finds any $name still in the SQL after expansion.
	leftoverRE = regexp.MustCompile(`\$[_a-zA-Z][_a-zA-Z0-9]*`)
	varRE      = regexp.MustCompile(`\$([a-zA-Z][_a-zA-Z0-9]*)`)
)

// expand turns a dashboard query into the SQL Grafana sends to PostgreSQL,
// in Grafana's order, covering exactly the macros the dashboard uses:
//
//  1. Template variables, in the browser: $name of a multi-value (or
//     include-All) variable becomes its selected values, each quoted as an
//     SQL literal (” for a quote inside) and joined with ",", so that
//     "x IN ($name)" lists them. "All" without a custom all value selects
//     every value of the variable.
//  2. $__interval, in the backend: the interval in Grafana's short form
//     (1h, 2h, 1d).
//  3. The PostgreSQL macros, in the backend; times are UTC RFC 3339:
//     $__timeFilter(col)        col BETWEEN 'from' AND 'to'
//     $__timeFrom(), $__timeTo() 'from', 'to'
//     $__timeGroupAlias(col, i) floor(extract(epoch from col)/s)*s AS "time",
//     s the interval i in seconds
//
// Anything else left that looks like a macro or a variable is an error, so a
// panel that starts using another macro fails the test until it is covered
// here.
func expand(sql string, q grafanaQuery) (string, error) {
	var errs []error
	sql = varRE.ReplaceAllStringFunc(sql, func(m string) string {
		values, ok := q.vars[m[1:]]
		if !ok {
			return m // a macro, or an unknown variable (reported below)
		}
		quoted := make([]string, len(values))
		for i, v := range values {
			quoted[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		}
		return strings.Join(quoted, ",")
	})
	interval, err := formatInterval(q.interval)
	if err != nil && strings.Contains(sql, "$__interval") {
		errs = append(errs, err)
	}
	sql = strings.ReplaceAll(sql, "$__interval", interval)

	from := "'" + q.from.UTC().Format(time.RFC3339Nano) + "'"
	to := "'" + q.to.UTC().Format(time.RFC3339Nano) + "'"
	sql = macroRE.ReplaceAllStringFunc(sql, func(m string) string {
		groups := macroRE.FindStringSubmatch(m)
		name, args := groups[1], strings.Split(groups[2], ",")
		for i := range args {
			args[i] = strings.TrimSpace(args[i])
		}
		switch {
		case name == "__timeFilter" && len(args) == 1 && args[0] != "":
			return args[0] + " BETWEEN " + from + " AND " + to
		case name == "__timeFrom" && groups[2] == "":
			return from
		case name == "__timeTo" && groups[2] == "":
			return to
		case name == "__timeGroupAlias" && len(args) == 2:
			d, err := parseInterval(strings.Trim(args[1], "'"))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", m, err))
				return m
			}
			s := strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
			return "floor(extract(epoch from " + args[0] + ")/" + s + ")*" + s + ` AS "time"`
		default:
			errs = append(errs, fmt.Errorf("macro not covered by the test's expander: %s", m))
			return m
		}
	})
	if left := leftoverRE.FindAllString(sql, -1); len(left) > 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("unexpanded macro or variable: %s", strings.Join(left, ", ")))
	}
	return sql, errors.Join(errs...)
}

// formatInterval writes d as Grafana does for the whole hours and days the
// dashboard's hourly data can have.
func formatInterval(d time.Duration) (string, error) {
	switch {
	case d <= 0:
		return "", errors.New("no $__interval given")
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d", nil
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h", nil
	default:
		return "", fmt.Errorf("$__interval %s is not whole hours", d)
	}
}

// parseInterval reads Grafana's short form back: a count and one of m, h, d.
func parseInterval(s string) (time.Duration, error) {
	units := map[byte]time.Duration{'m': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}
	if len(s) < 2 {
		return 0, fmt.Errorf("interval %q", s)
	}
	unit, ok := units[s[len(s)-1]]
	n, err := strconv.Atoi(s[:len(s)-1])
	if !ok || err != nil || n <= 0 {
		return 0, fmt.Errorf("interval %q", s)
	}
	return time.Duration(n) * unit, nil
}
