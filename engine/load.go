package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine/atrest"
)

// TableFile is where a table is kept at rest under a data directory.
func TableFile(dir, dataset, table string) string {
	return filepath.Join(dir, "datasets", dataset, table+".gwat")
}

// LoadTable decrypts a table file and loads it, replacing any table of the
// same name. It returns the number of rows loaded.
func (e *Engine) LoadTable(ctx context.Context, dataset, table, path string, key atrest.Key) (int64, error) {
	r, err := atrest.Open(path, key, memory.DefaultAllocator)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer r.Close()
	if err := e.CreateTable(ctx, dataset, table, r.Schema()); err != nil {
		return 0, err
	}
	l, err := e.NewLoader(ctx, dataset, table)
	if err != nil {
		return 0, err
	}
	for r.Next() {
		if err := ctx.Err(); err != nil {
			return 0, errors.Join(err, l.Close())
		}
		if err := l.Append(r.RecordBatch()); err != nil {
			return 0, errors.Join(fmt.Errorf("load %s.%s: %w", dataset, table, err), l.Close())
		}
	}
	if err := r.Err(); err != nil {
		return 0, errors.Join(fmt.Errorf("read %s: %w", path, err), l.Close())
	}
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("flush %s.%s: %w", dataset, table, err)
	}
	return l.Rows(), nil
}
