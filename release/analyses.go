package release

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"

	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/policy"
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
// the rank to it). datasets are the datasets the scope's sources were
// built from, as read from the store (see analysisKey).
func (a *analyses) analyze(ctx context.Context, p sandbox.Parser, sqlText string, grants []catalog.Grant, scope sandbox.Scope, datasets map[string]catalog.Dataset) (*sandbox.Query, error) {
	key, err := analysisKey(sqlText, grants, scope, datasets)
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

// analysisKey is the SHA-256 of everything the analysis reads: the SQL,
// the grants' IDs and every source of the scope, each field prefixed by
// its length. A source's table and policy are its dataset's, so they are
// keyed by the dataset's PolicyDigest, the digest of the stored text both
// were decoded from (scopeOf takes them from the dataset unchanged), and
// by the table's name; a source whose dataset has no digest is keyed by
// its policy and table in full, as JSON.
func analysisKey(sqlText string, grants []catalog.Grant, scope sandbox.Scope, datasets map[string]catalog.Dataset) ([32]byte, error) {
	h := sha256.New()
	var n [8]byte
	field := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		io.WriteString(h, s)
	}
	count := func(c int) { field(strconv.Itoa(c)) }
	field(sqlText)
	count(len(grants))
	for _, g := range grants {
		field(g.ID)
	}
	count(len(scope.Sources))
	for _, src := range scope.Sources {
		field(src.Dataset)
		field(string(src.Grade))
		field(src.Table.Name)
		if d, ok := datasets[src.Dataset]; ok && d.PolicyDigest != [32]byte{} {
			h.Write(d.PolicyDigest[:])
		} else {
			b, err := json.Marshal(struct {
				Table  policy.Table
				Policy policy.Policy
			}{src.Table, src.Policy})
			if err != nil {
				return [32]byte{}, fmt.Errorf("key the analysis: %w", err)
			}
			field(string(b))
		}
		if src.Columns == nil {
			field("*") // every column; a scope's names are never "*"
		} else {
			cols := slices.Sorted(maps.Keys(src.Columns))
			count(len(cols))
			for _, c := range cols {
				field(c)
				field(strconv.FormatBool(src.Columns[c]))
			}
		}
		names := slices.Sorted(maps.Keys(src.Types))
		count(len(names))
		for _, c := range names {
			field(c)
			field(src.Types[c])
		}
		coded := slices.Sorted(maps.Keys(src.Codes))
		count(len(coded))
		for _, c := range coded {
			field(c)
			count(len(src.Codes[c]))
			for _, v := range src.Codes[c] {
				field(v)
			}
		}
	}
	var key [32]byte
	h.Sum(key[:0])
	return key, nil
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
