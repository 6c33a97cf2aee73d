package release

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/sandbox"
)

// analyses remembers accepted analyses, so that a question asked again (the
// same SQL, say with another epsilon, or a study's script rerun) is not
// parsed and printed by DuckDB again: the analysis takes two or three
// DuckDB calls, about 1 ms, a third of a small query's fixed cost.
//
// The analysis is a pure function of the SQL and the scope (sandbox), so
// the key is both, in full: any change of a grant's columns, a dataset's
// grade or policy changes the scope and misses. The key also names the
// grants, so that one researcher's cache never speeds up, and so never
// reveals, another's question. Refusals are not kept; they are cheap to
// redo and their errors may depend on the context.
type analyses struct {
	mu sync.Mutex
	// max bounds the entries; when full, an arbitrary half is dropped.
	max int
	m   map[[32]byte]*sandbox.Query
}

func newAnalyses(max int) *analyses {
	return &analyses{max: max, m: map[[32]byte]*sandbox.Query{}}
}

// analyze is sandbox.Analyze through the cache. It returns a query of
// the caller's own, which it may change (admit applies the grade rule and
// the rank to it).
func (a *analyses) analyze(ctx context.Context, p sandbox.Parser, sqlText string, grants []catalog.Grant, scope sandbox.Scope) (*sandbox.Query, error) {
	key, err := analysisKey(sqlText, grants, scope)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	q, ok := a.m[key]
	a.mu.Unlock()
	if ok {
		return copyQuery(q), nil
	}
	q, err = sandbox.Analyze(ctx, p, sqlText, scope)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	if len(a.m) >= a.max {
		n := 0
		for k := range a.m {
			if n >= a.max/2 {
				break
			}
			delete(a.m, k)
			n++
		}
	}
	a.m[key] = copyQuery(q)
	a.mu.Unlock()
	return q, nil
}

func analysisKey(sqlText string, grants []catalog.Grant, scope sandbox.Scope) ([32]byte, error) {
	ids := make([]string, len(grants))
	for i, g := range grants {
		ids[i] = g.ID
	}
	b, err := json.Marshal(struct {
		SQL    string
		Grants []string
		Scope  sandbox.Scope
	}{sqlText, ids, scope})
	if err != nil {
		return [32]byte{}, fmt.Errorf("key the analysis: %w", err)
	}
	return sha256.Sum256(b), nil
}

// copyQuery is a copy of q whose fields and lists can be changed without
// changing q.
func copyQuery(q *sandbox.Query) *sandbox.Query {
	c := *q
	c.Groups = slices.Clone(q.Groups)
	for i := range c.Groups {
		c.Groups[i].Public = slices.Clone(q.Groups[i].Public)
	}
	c.Aggs = slices.Clone(q.Aggs)
	c.Outputs = slices.Clone(q.Outputs)
	c.Order = slices.Clone(q.Order)
	c.Datasets = slices.Clone(q.Datasets)
	c.Columns = slices.Clone(q.Columns)
	if q.Rank != nil {
		r := *q.Rank
		c.Rank = &r
	}
	if q.Counted != nil {
		r := *q.Counted
		c.Counted = &r
	}
	return &c
}
