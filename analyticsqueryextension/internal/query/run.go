package query

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/otelcol-analytics/otelcol-analytics/internal/protocol"
)

// ErrUnstable is returned when flushes moved counts during every attempt of
// a query (MaxAttempts): the query could not read a consistent state.
var ErrUnstable = errors.New("flushes kept moving counts from Redis to PostgreSQL while the query read; retry the request")

// usersChunk bounds the user ids of one visitors lookup in PostgreSQL.
const usersChunk = 5000

// Runner runs queries against a flusher's Redis and PostgreSQL.
type Runner struct {
	// Backends returns the flusher's connections, or an error while it is
	// not connected.
	Backends func() (protocol.Backends, error)
	// MaxCells bounds the result rows of a query before its limit.
	MaxCells int
	// MaxAttempts bounds the reads of one query that a concurrent STAGE
	// invalidates.
	MaxAttempts int
}

// Result is the response of a query.
type Result struct {
	Results []Row `json:"results"`
	Meta    Meta  `json:"meta"`
	Query   echo  `json:"query"`
}

// Row is one result row: the dimension values and the metric values, in the
// order the query asked for them.
type Row struct {
	Dimensions []string `json:"dimensions"`
	Metrics    []int64  `json:"metrics"`
}

// Meta describes how a result was read.
type Meta struct {
	// TotalRows is the number of rows before the limit.
	TotalRows int `json:"total_rows"`
	// Tables are the PostgreSQL tables read.
	Tables []string `json:"tables"`
	// PendingCounters is the number of pending counters read in Redis;
	// StagingEntries the number of staging entries, of which
	// StagingCommitted were committed to PostgreSQL already (and counted
	// from there).
	PendingCounters  int `json:"pending_counters"`
	StagingEntries   int `json:"staging_entries"`
	StagingCommitted int `json:"staging_committed"`
	// Attempts is the number of reads the query needed (a STAGE during a
	// read makes it read again).
	Attempts int `json:"attempts"`
}

// Run answers q with every count PostgreSQL holds plus every count still in
// Redis, each exactly once (invariant 8 of internal/protocol): it reads the
// flush generation, the staging entries and the pending counters of the
// query's families, then PostgreSQL in one REPEATABLE READ snapshot (the
// aggregates, and which of the staging entries read the ledger holds: those
// are counted from PostgreSQL), then the generation again. A changed
// generation means a STAGE moved counts during the reads: it reads again,
// at most MaxAttempts times, and then returns ErrUnstable.
func (r *Runner) Run(ctx context.Context, q *Query) (*Result, error) {
	p, err := newPlan(q)
	if err != nil {
		return nil, err
	}
	b, err := r.Backends()
	if err != nil {
		return nil, err
	}
	store := protocol.NewReadStore(b.Redis, b.Schema)
	for attempt := 1; attempt <= max(1, r.MaxAttempts); attempt++ {
		res, stable, err := r.attempt(ctx, p, store, b)
		if err != nil {
			return nil, err
		}
		if stable {
			res.Meta.Attempts = attempt
			return res, nil
		}
	}
	return nil, ErrUnstable
}

// redisCount is a Redis counter that counts for a part.
type redisCount struct {
	part *part
	protocol.CounterValue
}

// group accumulates one result row.
type group struct {
	dims     []string
	events   int64
	visitors int64
	// redisUsers are the users Redis holds for the group, of which those
	// PostgreSQL does not hold add to visitors.
	redisUsers map[string]struct{}
	// sums holds the value of each sum metric; overflow is the first sum
	// metric whose value does not fit 64 bits.
	sums     map[Metric]int64
	overflow Metric
}

// addSum adds v to the group's sum metric m, noting an overflow.
func (g *group) addSum(m Metric, v int64) {
	if g.sums == nil {
		g.sums = make(map[Metric]int64)
	}
	s := g.sums[m]
	if (v > 0 && s > math.MaxInt64-v) || (v < 0 && s < math.MinInt64-v) {
		if g.overflow == "" {
			g.overflow = m
		}
		return
	}
	g.sums[m] = s + v
}

// sumOverflow reports a sum metric that does not fit 64 bits in some group.
func sumOverflow(q *Query, groups map[string]*group) *FieldError {
	for _, g := range groups {
		if g.overflow != "" {
			return fieldErr(fieldIndex("metrics", slices.Index(q.Metrics, g.overflow)),
				"%s exceeds 64 bits in a result row; narrow date_range or use a finer time dimension", g.overflow)
		}
	}
	return nil
}

// attempt reads both stores once; stable is false when a STAGE ran
// meanwhile.
func (r *Runner) attempt(ctx context.Context, p *plan, store *protocol.ReadStore, b protocol.Backends) (_ *Result, stable bool, _ error) {
	gen, err := store.Generation(ctx)
	if err != nil {
		return nil, false, err
	}
	var counts []redisCount
	collect := func(dst *[]redisCount) func(protocol.CounterValue) {
		return func(cv protocol.CounterValue) {
			if pt := p.partOf(cv.Counter); pt != nil {
				*dst = append(*dst, redisCount{part: pt, CounterValue: cv})
			}
		}
	}
	keep := func(c protocol.Counter) bool { return p.partOf(c) != nil }
	ids, err := store.StagingIDs(ctx)
	if err != nil {
		return nil, false, err
	}
	staged := make(map[string][]redisCount, len(ids))
	for _, id := range ids {
		var entry []redisCount
		if serr := store.StagedCounters(ctx, id, keep, collect(&entry)); serr != nil {
			return nil, false, serr
		}
		staged[id] = entry
	}
	pending, err := store.PendingCounters(ctx, keep, collect(&counts))
	if err != nil {
		return nil, false, err
	}
	res := &Result{Query: p.q.echo, Meta: Meta{Tables: p.tables(), PendingCounters: pending, StagingEntries: len(ids)}}

	groups := make(map[string]*group)
	// topTotal is the number of rows of a top-users query, which reads only
	// its candidates into groups.
	topTotal := -1
	err = pgx.BeginTxFunc(ctx, b.Postgres, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		committed, lerr := committedIDs(ctx, tx, ids)
		if lerr != nil {
			return lerr
		}
		res.Meta.StagingCommitted = len(committed)
		for _, id := range ids {
			if _, ok := committed[id]; !ok {
				counts = append(counts, staged[id]...)
			}
		}
		if p.topUsers {
			var terr error
			topTotal, terr = r.topUsers(ctx, tx, p, counts, groups)
			return terr
		}
		for _, pt := range p.parts {
			if aerr := r.aggregate(ctx, tx, p, pt, groups); aerr != nil {
				return aerr
			}
		}
		addRedis(p, counts, groups)
		for _, pt := range p.parts {
			if pt.visitors {
				if derr := dropUsersInPostgres(ctx, tx, p, pt, groups); derr != nil {
					return derr
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	after, err := store.Generation(ctx)
	if err != nil {
		return nil, false, err
	}
	if after != gen {
		return nil, false, nil
	}
	if topTotal < 0 && len(groups) > r.MaxCells {
		return nil, false, tooManyRows(r.MaxCells)
	}
	if ferr := sumOverflow(p.q, groups); ferr != nil {
		return nil, false, ferr
	}
	if len(p.q.Dimensions) == 0 && len(groups) == 0 {
		groups[""] = &group{dims: []string{}}
	}
	res.Results, res.Meta.TotalRows = rows(p.q, groups)
	if topTotal >= 0 {
		res.Meta.TotalRows = topTotal
	}
	return res, true, nil
}

func tooManyRows(maxCells int) *FieldError {
	return fieldErr("dimensions", "the query has more than %d result rows (max_cells); narrow date_range, add filters or use a coarser time dimension", maxCells)
}

// committedIDs returns which of the flush ids the ledger holds.
func committedIDs(ctx context.Context, tx pgx.Tx, ids []string) (map[string]struct{}, error) {
	out := make(map[string]struct{})
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, `SELECT flush_id FROM analytics_flush_ledger WHERE flush_id = ANY($1::text[])`, ids)
	if err != nil {
		return nil, fmt.Errorf("postgres read flush ledger: %w", err)
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		out[id] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres read flush ledger: %w", err)
	}
	return out, nil
}

// scanTargets returns scan destinations for the query's dimensions (int8
// bucket starts and text attributes) and a function that renders the
// scanned values.
func scanTargets(q *Query) ([]any, func() []string) {
	buckets := make([]int64, len(q.Dimensions))
	texts := make([]string, len(q.Dimensions))
	dest := make([]any, len(q.Dimensions))
	for i, d := range q.Dimensions {
		if d.IsTime() {
			dest[i] = &buckets[i]
		} else {
			dest[i] = &texts[i]
		}
	}
	render := func() []string {
		vals := make([]string, len(q.Dimensions))
		for i, d := range q.Dimensions {
			if d.IsTime() {
				vals[i] = formatBucket(d.Time, buckets[i])
			} else {
				vals[i] = texts[i]
			}
		}
		return vals
	}
	return dest, render
}

// aggregate adds PostgreSQL's metrics of pt to groups.
func (r *Runner) aggregate(ctx context.Context, tx pgx.Tx, p *plan, pt *part, groups map[string]*group) error {
	sql, args := pt.aggregateSQL(p.q, r.MaxCells)
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("postgres query %s: %w", pt.src.table, err)
	}
	dest, render := scanTargets(p.q)
	var events, visitors int64
	if pt.events {
		dest = append(dest, &events)
	}
	if pt.visitors {
		dest = append(dest, &visitors)
	}
	var sum string
	if pt.sum != "" {
		dest = append(dest, &sum)
	}
	n := 0
	_, err = pgx.ForEachRow(rows, dest, func() error {
		n++
		if n > r.MaxCells {
			return tooManyRows(r.MaxCells)
		}
		g := groupFor(groups, render())
		g.events += events
		g.visitors += visitors
		if pt.sum != "" {
			v, perr := strconv.ParseInt(sum, 10, 64)
			if perr != nil {
				// A sum that numeric holds but int64 does not.
				g.overflow = cmp.Or(g.overflow, pt.sum)
				return nil
			}
			g.addSum(pt.sum, v)
		}
		return nil
	})
	if err != nil {
		if fe, ok := errors.AsType[*FieldError](err); ok {
			return fe
		}
		return fmt.Errorf("postgres query %s: %w", pt.src.table, err)
	}
	return nil
}

// addRedis adds the Redis counts to their groups: events, and the users
// that visitors may add.
func addRedis(p *plan, counts []redisCount, groups map[string]*group) {
	for _, rc := range counts {
		g := groupFor(groups, p.groupOf(rc.Counter))
		if rc.part.events {
			g.events += rc.Count
		}
		if rc.part.sum != "" {
			g.addSum(rc.part.sum, rc.Count)
		}
		if rc.part.visitors && rc.Count > 0 {
			if g.redisUsers == nil {
				g.redisUsers = make(map[string]struct{})
			}
			g.redisUsers[rc.Counter.UserID] = struct{}{}
		}
	}
}

// dropUsersInPostgres removes from each group's Redis users those that
// PostgreSQL holds in the same group (counted by its distinct count
// already), then adds the rest to visitors.
func dropUsersInPostgres(ctx context.Context, tx pgx.Tx, p *plan, pt *part, groups map[string]*group) error {
	set := make(map[string]struct{})
	for _, g := range groups {
		for u := range g.redisUsers {
			set[u] = struct{}{}
		}
	}
	users := make([]string, 0, len(set))
	for u := range set {
		users = append(users, u)
	}
	slices.Sort(users)
	for chunk := range slices.Chunk(users, usersChunk) {
		sql, args := pt.usersSQL(p.q, chunk)
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("postgres look up users: %w", err)
		}
		dest, render := scanTargets(p.q)
		var user string
		dest = append(dest, &user)
		_, err = pgx.ForEachRow(rows, dest, func() error {
			if g, ok := groups[groupKey(render())]; ok {
				delete(g.redisUsers, user)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("postgres look up users: %w", err)
		}
	}
	for _, g := range groups {
		g.visitors += int64(len(g.redisUsers))
		g.redisUsers = nil
	}
	return nil
}

// groupKey encodes dimension values unambiguously (length-prefixed).
func groupKey(dims []string) string {
	var b strings.Builder
	for _, d := range dims {
		b.WriteString(strconv.Itoa(len(d)))
		b.WriteByte(':')
		b.WriteString(d)
	}
	return b.String()
}

func groupFor(groups map[string]*group, dims []string) *group {
	k := groupKey(dims)
	g, ok := groups[k]
	if !ok {
		g = &group{dims: dims}
		groups[k] = g
	}
	return g
}
