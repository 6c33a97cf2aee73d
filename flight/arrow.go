package flight

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight/flightsql"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/release"
)

// batchRows is the most rows one record batch of an answer holds.
const batchRows = 8192

// Schema metadata keys of an answer.
const (
	MetaQueryID = "gateway.query_id"
	MetaGrantID = "gateway.grant_id"
	MetaGrade   = "gateway.grade"
	MetaPrivacy = "gateway.privacy" // the privacy report, JSON as over REST
	MetaBudget  = "gateway.budget"  // the grant's balance after the release, JSON
	MetaCached  = "gateway.cached"  // "true" when the answer is a free repeat
	MetaReceipt = "gateway.receipt" // the signed receipt, JSON, when signed
)

// arrowType is the Arrow type an answer column of DuckDB type t is sent
// as; types without an exact counterpart here are sent as text.
func arrowType(t string) arrow.DataType {
	switch strings.ToUpper(strings.TrimSpace(t)) {
	case "BIGINT", "INTEGER", "SMALLINT", "TINYINT":
		return arrow.PrimitiveTypes.Int64
	case "DOUBLE", "FLOAT", "REAL":
		return arrow.PrimitiveTypes.Float64
	case "DATE":
		return arrow.FixedWidthTypes.Date32
	case "BOOLEAN":
		return arrow.FixedWidthTypes.Boolean
	}
	return arrow.BinaryTypes.String
}

// schemaOf is the Arrow schema of a released answer: its columns, each
// with its DuckDB type name, and the privacy report, budget and receipt
// as metadata.
func schemaOf(res *release.Result) (*arrow.Schema, error) {
	a, err := res.Answer()
	if err != nil {
		return nil, err
	}
	fields := make([]arrow.Field, len(a.Columns))
	for i, c := range a.Columns {
		md := flightsql.NewColumnMetadataBuilder().TypeName(c.Type).Metadata()
		fields[i] = arrow.Field{Name: c.Name, Type: arrowType(c.Type), Nullable: true, Metadata: md}
	}
	keys := []string{MetaQueryID, MetaGrantID, MetaGrade, MetaCached}
	vals := []string{a.QueryID, a.GrantID, string(a.Grade), strconv.FormatBool(res.Cached)}
	for k, v := range map[string]any{MetaPrivacy: a.Privacy, MetaBudget: res.Budget, MetaReceipt: a.Receipt} {
		if k == MetaReceipt && a.Receipt == nil {
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		keys, vals = append(keys, k), append(vals, string(b))
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md), nil
}

// records are an answer's rows as record batches of schema.
func records(mem memory.Allocator, schema *arrow.Schema, rows [][]any) ([]arrow.RecordBatch, error) {
	var out []arrow.RecordBatch
	fail := func(err error) ([]arrow.RecordBatch, error) {
		for _, r := range out {
			r.Release()
		}
		return nil, err
	}
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for start := 0; ; start += batchRows {
		end := min(start+batchRows, len(rows))
		for _, row := range rows[start:end] {
			if len(row) != len(schema.Fields()) {
				return fail(fmt.Errorf("answer row has %d cells for %d columns", len(row), len(schema.Fields())))
			}
			for i, v := range row {
				if err := appendValue(b.Field(i), v); err != nil {
					return fail(fmt.Errorf("answer column %s: %w", schema.Field(i).Name, err))
				}
			}
		}
		out = append(out, b.NewRecordBatch())
		if end >= len(rows) {
			break // an empty answer is one empty batch
		}
	}
	return out, nil
}

// appendValue appends one answer cell, as decoded from the stored JSON
// answer (numbers are float64, dates text).
func appendValue(b array.Builder, v any) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	switch b := b.(type) {
	case *array.Int64Builder:
		f, ok := number(v)
		if !ok || f != math.Trunc(f) || math.Abs(f) >= 1<<63 {
			return fmt.Errorf("value %v is not an integer", v)
		}
		b.Append(int64(f))
	case *array.Float64Builder:
		f, ok := number(v)
		if !ok {
			return fmt.Errorf("value %v is not a number", v)
		}
		b.Append(f)
	case *array.BooleanBuilder:
		t, ok := v.(bool)
		if !ok {
			return fmt.Errorf("value %v is not a boolean", v)
		}
		b.Append(t)
	case *array.Date32Builder:
		s, _ := v.(string)
		if len(s) < 10 {
			return fmt.Errorf("value %v is not a date", v)
		}
		t, err := time.Parse(time.DateOnly, s[:10])
		if err != nil {
			return fmt.Errorf("value %v is not a date", v)
		}
		b.Append(arrow.Date32FromTime(t))
	case *array.StringBuilder:
		b.Append(text(v))
	default:
		return fmt.Errorf("no encoding for %T", b)
	}
	return nil
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func text(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case float64:
		return strconv.FormatFloat(s, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
