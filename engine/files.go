package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// BatchReader yields a table as Arrow record batches.
type BatchReader interface {
	Schema() *arrow.Schema
	Next() bool
	RecordBatch() arrow.RecordBatch
	Err() error
}

// OpenFile reads a Parquet (.parquet), CSV (.csv, header row, types
// inferred) or Arrow IPC (.arrow, .feather, .ipc; file or stream format)
// file as record batches. Close releases it.
func OpenFile(ctx context.Context, path string, mem memory.Allocator) (BatchReader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	fail := func(err error) (BatchReader, func() error, error) {
		f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".parquet":
		pf, err := file.NewParquetReader(f)
		if err != nil {
			return fail(err)
		}
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 65536}, mem)
		if err != nil {
			pf.Close()
			return fail(err)
		}
		rr, err := fr.GetRecordReader(ctx, nil, nil)
		if err != nil {
			pf.Close()
			return fail(err)
		}
		return rr, func() error { rr.Release(); return pf.Close() }, nil
	case ".csv":
		r := csv.NewInferringReader(f, csv.WithHeader(true), csv.WithChunk(65536), csv.WithAllocator(mem), csv.WithNullReader(true, ""))
		return &csvReader{r}, func() error { r.Release(); return f.Close() }, nil
	case ".arrow", ".feather", ".ipc":
		if fr, err := ipc.NewFileReader(f, ipc.WithAllocator(mem)); err == nil {
			return &ipcFile{r: fr}, func() error { fr.Close(); return f.Close() }, nil
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fail(err)
		}
		sr, err := ipc.NewReader(f, ipc.WithAllocator(mem))
		if err != nil {
			return fail(err)
		}
		return sr, func() error { sr.Release(); return f.Close() }, nil
	default:
		f.Close()
		return nil, nil, fmt.Errorf("%s: unsupported file type %q; use .parquet, .csv or .arrow", path, ext)
	}
}

// csvReader adapts the inferring CSV reader, whose schema is known only
// after the first batch.
type csvReader struct{ r *csv.Reader }

func (c *csvReader) Schema() *arrow.Schema          { return c.r.Schema() }
func (c *csvReader) Next() bool                     { return c.r.Next() }
func (c *csvReader) RecordBatch() arrow.RecordBatch { return c.r.RecordBatch() }
func (c *csvReader) Err() error {
	if err := c.r.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// ipcFile walks the record batches of an Arrow IPC file.
type ipcFile struct {
	r   *ipc.FileReader
	i   int
	rec arrow.RecordBatch
	err error
}

func (f *ipcFile) Schema() *arrow.Schema { return f.r.Schema() }
func (f *ipcFile) Next() bool {
	if f.i >= f.r.NumRecords() {
		return false
	}
	f.rec, f.err = f.r.RecordBatch(f.i)
	f.i++
	return f.err == nil
}
func (f *ipcFile) RecordBatch() arrow.RecordBatch { return f.rec }
func (f *ipcFile) Err() error                     { return f.err }
