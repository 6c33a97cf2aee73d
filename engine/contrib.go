package engine

import (
	"context"
	"errors"
	"fmt"
)

// RankCounts returns, for r = 1 .. upTo, the number of rows of
// dataset.table whose rank (RankColumn, see RankRows) is r: the number of
// patients with at least r rows. The table must be ranked and upTo below
// MaxRank. These are exact counts over the data: a plan turns them into a
// noisy histogram (privacy.Plan.Choose) and nothing else may see them.
func (e *Engine) RankCounts(ctx context.Context, dataset, table string, upTo int64) ([]int64, error) {
	if upTo < 1 || upTo >= MaxRank {
		return nil, fmt.Errorf("rank counts of %s.%s: %d is outside 1 .. %d", dataset, table, upTo, MaxRank-1)
	}
	ctx, done := e.guard.track(ctx)
	defer done()
	rows, err := e.db.QueryContext(ctx, fmt.Sprintf("SELECT %s::BIGINT, count(*) FROM %s.%s WHERE %s <= %d GROUP BY ALL",
		ident(RankColumn), ident(dataset), ident(table), ident(RankColumn), upTo))
	if err != nil {
		return nil, fmt.Errorf("rank counts of %s.%s: %w", dataset, table, classify(ctx, err))
	}
	out := make([]int64, upTo)
	for rows.Next() {
		var r, n int64
		if err := rows.Scan(&r, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("rank counts of %s.%s: %w", dataset, table, err)
		}
		if r >= 1 && r <= upTo {
			out[r-1] = n
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("rank counts of %s.%s: %w", dataset, table, classify(ctx, err))
	}
	return out, nil
}
