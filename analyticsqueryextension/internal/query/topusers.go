package query

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// topUsersShape reports whether q asks for the top users by events: the
// only dimension event:user, the only metric events, event:name filters at
// most, ordered by events descending (explicitly or by default, optionally
// followed by event:user ascending, the tie-break anyway). Such a query is
// answered from PostgreSQL's top users instead of every user (topUsers).
func topUsersShape(q *Query) bool {
	if len(q.Metrics) != 1 || q.Metrics[0] != Events {
		return false
	}
	if len(q.Dimensions) != 1 || q.Dimensions[0].IsTime() || q.Dimensions[0].Attr.Kind != EventUser {
		return false
	}
	for _, c := range q.Filters {
		if c.Attr.Kind != EventName {
			return false
		}
	}
	switch len(q.Order) {
	case 0:
		return true
	case 1, 2:
		if q.Order[0] != (OrderTerm{Metric: Events, Desc: true}) {
			return false
		}
		return len(q.Order) == 1 || q.Order[1] == OrderTerm{Dimension: 0}
	}
	return false
}

// topUsers computes the groups of a top-users query (topUsersShape) with
// its Redis counts: the users R that Redis counts for, PostgreSQL's top
// K+|R| users by events (K the limit, ties by user id ascending, as rows
// orders), and PostgreSQL's events of the users of R. It is exact because
// Redis only adds: a user in neither set has K+|R| users ahead of it in
// PostgreSQL, who stay ahead with their Redis counts. max_cells bounds
// K+|R|. It returns the number of users the query matches (total_rows).
func (r *Runner) topUsers(ctx context.Context, tx pgx.Tx, p *plan, counts []redisCount, groups map[string]*group) (int, error) {
	pt := p.parts[0]
	addRedis(p, counts, groups)
	redisUsers := make([]string, 0, len(groups))
	for _, g := range groups {
		redisUsers = append(redisUsers, g.dims[0])
	}
	if p.q.Limit+len(redisUsers) > r.MaxCells {
		return 0, tooManyRows(r.MaxCells)
	}
	slices.Sort(redisUsers)

	inPostgres := make(map[string]struct{}, p.q.Limit+len(redisUsers))
	var total int64
	add := func(user string, events int64) {
		inPostgres[user] = struct{}{}
		groupFor(groups, []string{user}).events += events
	}
	sql, args := pt.topUsersSQL(p.q, p.q.Limit+len(redisUsers))
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("postgres query top users: %w", err)
	}
	var user string
	var events int64
	_, err = pgx.ForEachRow(rows, []any{&user, &events, &total}, func() error {
		add(user, events)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres query top users: %w", err)
	}

	rest := slices.DeleteFunc(slices.Clone(redisUsers), func(u string) bool { _, ok := inPostgres[u]; return ok })
	for chunk := range slices.Chunk(rest, usersChunk) {
		sql, args := pt.userEventsSQL(p.q, chunk)
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return 0, fmt.Errorf("postgres look up users: %w", err)
		}
		_, err = pgx.ForEachRow(rows, []any{&user, &events}, func() error {
			add(user, events)
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("postgres look up users: %w", err)
		}
	}
	onlyRedis := 0
	for _, u := range redisUsers {
		if _, ok := inPostgres[u]; !ok {
			onlyRedis++
		}
	}
	return int(total) + onlyRedis, nil
}

// topUsersSQL is the statement of PostgreSQL's top n users of pt by events,
// in the order rows uses (events descending, then user id by byte order),
// each with the number of users the range and filters hold.
func (pt *part) topUsersSQL(q *Query, n int) (string, []any) {
	var args sqlArgs
	sql := "SELECT " + userColumn + ", COALESCE(sum(count), 0)::int8, count(*) OVER ()::int8 FROM " + pt.src.table +
		" WHERE " + pt.where(q, &args) + " GROUP BY 1 ORDER BY 2 DESC, " + userColumn + ` COLLATE "C" LIMIT ` + args.add(int64(n))
	return sql, args
}

// userEventsSQL is the statement of the events PostgreSQL holds for each of
// users in pt's range and filters (users without rows are left out).
func (pt *part) userEventsSQL(q *Query, users []string) (string, []any) {
	var args sqlArgs
	sql := "SELECT " + userColumn + ", COALESCE(sum(count), 0)::int8 FROM " + pt.src.table + " WHERE " + pt.where(q, &args) +
		" AND " + userColumn + " = ANY(" + args.add(users) + "::text[]) GROUP BY 1"
	return sql, args
}
