package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// RankCounts returns, for r = 1 .. upTo, the number of rows of
// dataset.table whose rank (RankColumn, see RankRows) is r: the number of
// patients with at least r rows. The table must be ranked and upTo below
// MaxRank. These are exact counts over the data: a plan turns them into a
// noisy histogram (privacy.Plan.Choose) and nothing else may see them.
//
// They are kept with the table's ranking, which they describe, until the
// table is loaded again, so that only the first query to choose a bound
// after a load scans the rank column. Whether a call scanned says only
// that someone asked since the load, never anything of the rows.
func (e *Engine) RankCounts(ctx context.Context, dataset, table string, upTo int64) ([]int64, error) {
	if upTo < 1 || upTo >= MaxRank {
		return nil, fmt.Errorf("rank counts of %s.%s: %d is outside 1 .. %d", dataset, table, upTo, MaxRank-1)
	}
	st := e.ranked(dataset, table)
	if st != nil {
		st.mu.Lock()
		if int64(len(st.counts)) >= upTo {
			out := slices.Clone(st.counts[:upTo])
			st.mu.Unlock()
			return out, nil
		}
		st.mu.Unlock()
	}
	out, err := e.rankCounts(ctx, dataset, table, upTo)
	if err == nil && st != nil {
		st.mu.Lock()
		if len(out) > len(st.counts) {
			st.counts = slices.Clone(out)
		}
		st.mu.Unlock()
	}
	return out, err
}

// ranked is the finished ranking of dataset.table, or nil.
func (e *Engine) ranked(dataset, table string) *rankState {
	e.mu.Lock()
	st := e.tables.ranks[tableKey(dataset, table)]
	e.mu.Unlock()
	if st == nil {
		return nil
	}
	select {
	case <-st.done:
		if st.err == nil {
			return st
		}
	default:
	}
	return nil
}

func (e *Engine) rankCounts(ctx context.Context, dataset, table string, upTo int64) ([]int64, error) {
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
