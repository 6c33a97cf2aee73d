package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const entryColumns = `seq, time_us, actor, role, action, dataset, grade, outcome, detail, retain_until_us, hash_alg, prev_hash, hash`

func scanEntry(rows *sql.Rows) (Entry, error) {
	var e Entry
	var t, retain int64
	var detail string
	var prev, h []byte
	if err := rows.Scan(&e.Seq, &t, &e.Actor, &e.Role, &e.Action, &e.Dataset, &e.Grade, &e.Outcome, &detail,
		&retain, &e.Algorithm, &prev, &h); err != nil {
		return Entry{}, err
	}
	e.Time, e.RetainUntil = time.UnixMicro(t).UTC(), time.UnixMicro(retain).UTC()
	e.Detail, e.PrevHash, e.Hash = json.RawMessage(detail), prev, h
	return e, nil
}

// Filter selects entries for List. Empty fields match everything.
type Filter struct {
	Actor string
	// Dataset matches entries about this dataset, alone or among several.
	Dataset string
	Action  string
	Outcome string
	// From and To bound the entries' time: From <= Time < To.
	From, To time.Time
	// AfterSeq returns entries after this seq, for paging.
	AfterSeq int64
	// Limit caps the result (default 1000, at most 10000).
	Limit int
}

// List returns the entries matching f in seq order.
func (l *Log) List(ctx context.Context, f Filter) ([]Entry, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	f.Limit = min(f.Limit, 10000)
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	add("seq > ?", f.AfterSeq)
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Dataset != "" {
		// Several datasets are stored joined with commas.
		find := "instr"
		if l.cfg.Dialect == Postgres {
			find = "strpos"
		}
		add("(dataset = ? OR "+find+"(',' || dataset || ',', ',' || ? || ',') > 0)", f.Dataset)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if !f.From.IsZero() {
		add("time_us >= ?", f.From.UnixMicro())
	}
	if !f.To.IsZero() {
		add("time_us < ?", f.To.UnixMicro())
	}
	args = append(args, f.Limit)
	q := `SELECT ` + entryColumns + ` FROM audit_entries WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY seq LIMIT $` + strconv.Itoa(len(args))
	rows, err := l.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit entries: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit entries: %w", err)
	}
	return out, nil
}
