package api

// A protected answer can be sent in three shapes: JSON (the default), CSV
// and an Arrow IPC stream. Every shape is encoded from the one
// release.Result, after the release committed: the answer, its receipt and
// its audit entry are the same whichever shape the caller asked for, and
// asking for another shape never runs the query again.
//
// CSV has no room for anything but the table, so the privacy report, the
// budget, the query id and the receipt go in response headers (see
// answerHeaders); an Arrow stream carries them as schema metadata as well,
// with each column's noise scale and interval on its field.

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/engine"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/release"
)

// The media types an answer is offered in.
const (
	mediaJSON  = "application/json"
	mediaCSV   = "text/csv"
	mediaArrow = "application/vnd.apache.arrow.stream"
)

// Response headers that carry what a CSV or Arrow body cannot. Each JSON
// value is on one line, with non-ASCII characters escaped.
const (
	headerPrivacy = "Gateway-Privacy"  // the privacy report, JSON
	headerBudget  = "Gateway-Budget"   // the grant's budget after the release, JSON
	headerQueryID = "Gateway-Query-Id" // the answer's query id
	headerGrantID = "Gateway-Grant-Id"
	headerGrade   = "Gateway-Grade"
	headerCached  = "Gateway-Cached"  // "true" when the answer was a repeat, at no cost
	headerReceipt = "Gateway-Receipt" // the receipt, JSON, when the gateway signs answers
)

// formatNames are the values of the format query parameter, which
// overrides Accept for clients that cannot set headers.
var formatNames = map[string]string{"json": mediaJSON, "csv": mediaCSV, "arrow": mediaArrow}

// answerFormat picks the shape of an answer: the format query parameter
// when given, else the acceptable type with the highest quality in Accept,
// else JSON. A type the gateway does not offer is not an error: the
// answer comes as JSON, which says what it is in Content-Type.
func answerFormat(c *gin.Context) (string, error) {
	if f := c.Query("format"); f != "" {
		m, ok := formatNames[strings.ToLower(f)]
		if !ok {
			return "", fault.E(fault.Invalid, "format %q is not offered; use json, csv or arrow", f)
		}
		return m, nil
	}
	best, bestQ := mediaJSON, 0.0
	for _, part := range strings.Split(c.GetHeader("Accept"), ",") {
		media, params, _ := strings.Cut(part, ";")
		media = strings.ToLower(strings.TrimSpace(media))
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		var offer string
		switch media {
		case mediaJSON, "application/*", "*/*":
			offer = mediaJSON
		case mediaCSV, "text/*":
			offer = mediaCSV
		case mediaArrow:
			offer = mediaArrow
		}
		if offer != "" && q > bestQ {
			best, bestQ = offer, q
		}
	}
	return best, nil
}

// writeAnswer sends res in the shape media.
func writeAnswer(c *gin.Context, media string, res *release.Result) error {
	c.Header("Vary", "Accept")
	if media == mediaJSON || res.DryRun { // an estimate has no rows: always JSON
		body, err := res.JSON()
		if err != nil {
			return err
		}
		c.Data(http.StatusOK, "application/json; charset=utf-8", body)
		return nil
	}
	headers, err := answerHeaders(res)
	if err != nil {
		return err
	}
	var body []byte
	contentType := media
	switch media {
	case mediaCSV:
		var a release.Answer
		if a, err = res.Answer(); err == nil {
			body, err = answerCSV(a)
		}
		contentType = "text/csv; charset=utf-8; header=present"
	case mediaArrow:
		body, err = answerArrow(res, headers)
	}
	if err != nil {
		return err
	}
	for k, v := range headers {
		c.Header(k, v)
	}
	c.Data(http.StatusOK, contentType, body)
	return nil
}

// answerHeaders are the response headers of a CSV or Arrow answer, keyed
// by header name.
func answerHeaders(res *release.Result) (map[string]string, error) {
	a, err := res.Answer()
	if err != nil {
		return nil, err
	}
	h := map[string]string{
		headerQueryID: a.QueryID,
		headerGrantID: a.GrantID,
		headerGrade:   string(a.Grade),
		headerCached:  strconv.FormatBool(res.Cached),
	}
	values := map[string]any{headerPrivacy: a.Privacy, headerBudget: res.Budget}
	if a.Receipt != nil {
		values[headerReceipt] = a.Receipt
	}
	for k, v := range values {
		s, err := headerJSON(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		h[k] = s
	}
	return h, nil
}

// headerJSON is v as JSON fit for a header value: one line, ASCII only
// (column names may not be).
func headerJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, r := range string(b) {
		switch {
		case r < utf8.RuneSelf:
			out.WriteRune(r)
		case r <= 0xFFFF:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		}
	}
	return out.String(), nil
}

// answerCSV is a header row of column names, then the protected rows. A
// NULL is an empty field.
func answerCSV(a release.Answer) ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	record := make([]string, len(a.Columns))
	for i, col := range a.Columns {
		record[i] = col.Name
	}
	if err := w.Write(record); err != nil {
		return nil, err
	}
	for _, row := range a.Rows {
		for i := range record {
			s, err := csvField(row[i])
			if err != nil {
				return nil, fmt.Errorf("encode column %s: %w", a.Columns[i].Name, err)
			}
			record[i] = s
		}
		if err := w.Write(record); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

func csvField(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// Keys of the Arrow schema metadata; each JSON value is as in the JSON
// answer.
const (
	metaQueryID = "gateway.query_id"
	metaGrantID = "gateway.grant_id"
	metaGrade   = "gateway.grade"
	metaCached  = "gateway.cached"
	metaPrivacy = "gateway.privacy" // JSON
	metaBudget  = "gateway.budget"  // JSON
	metaReceipt = "gateway.receipt" // JSON, when the gateway signs answers
	metaType    = "gateway.type"    // on each field: the column's SQL type
	metaCI95    = "gateway.ci95"    // on each aggregate field: half-width of the 95% interval
	metaScale   = "gateway.noise_scale"
)

// answerArrow is an Arrow IPC stream of one record batch holding the
// protected rows, typed from the answer's SQL column types, with what
// headers carry as schema metadata.
func answerArrow(res *release.Result, headers map[string]string) ([]byte, error) {
	a, err := res.Answer()
	if err != nil {
		return nil, err
	}
	meta := map[string]string{
		metaQueryID: a.QueryID, metaGrantID: a.GrantID, metaGrade: string(a.Grade), metaCached: headers[headerCached],
		metaPrivacy: headers[headerPrivacy], metaBudget: headers[headerBudget],
	}
	if r, ok := headers[headerReceipt]; ok {
		meta[metaReceipt] = r
	}
	fields := make([]arrow.Field, len(a.Columns))
	for i, col := range a.Columns {
		fm := map[string]string{metaType: col.Type}
		if cr, ok := a.Privacy.Columns[col.Name]; ok {
			fm[metaCI95] = strconv.FormatFloat(cr.CI95, 'g', -1, 64)
			fm[metaScale] = strconv.FormatFloat(cr.NoiseScale, 'g', -1, 64)
		}
		fields[i] = arrow.Field{Name: col.Name, Type: arrowType(col), Nullable: true, Metadata: arrow.MetadataFrom(fm)}
	}
	schema := arrow.NewSchema(fields, func() *arrow.Metadata { m := arrow.MetadataFrom(meta); return &m }())

	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for _, row := range a.Rows {
		for i, v := range row {
			if err := appendArrow(b.Field(i), v); err != nil {
				return nil, fmt.Errorf("encode column %s: %w", a.Columns[i].Name, err)
			}
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("write arrow batch: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("close arrow stream: %w", err)
	}
	return buf.Bytes(), nil
}

// arrowType is the Arrow type of a column of the SQL type col.Type.
// DECIMALs come as doubles (the answer holds them as JSON numbers); types
// without an Arrow counterpart here come as strings holding their JSON.
func arrowType(col engine.Column) arrow.DataType {
	t := strings.ToUpper(col.Type)
	switch {
	case t == "BOOLEAN":
		return arrow.FixedWidthTypes.Boolean
	case t == "TINYINT":
		return arrow.PrimitiveTypes.Int8
	case t == "SMALLINT":
		return arrow.PrimitiveTypes.Int16
	case t == "INTEGER":
		return arrow.PrimitiveTypes.Int32
	case t == "BIGINT":
		return arrow.PrimitiveTypes.Int64
	case t == "UTINYINT":
		return arrow.PrimitiveTypes.Uint8
	case t == "USMALLINT":
		return arrow.PrimitiveTypes.Uint16
	case t == "UINTEGER":
		return arrow.PrimitiveTypes.Uint32
	case t == "UBIGINT":
		return arrow.PrimitiveTypes.Uint64
	case t == "FLOAT":
		return arrow.PrimitiveTypes.Float32
	case t == "DOUBLE", strings.HasPrefix(t, "DECIMAL"):
		return arrow.PrimitiveTypes.Float64
	case t == "DATE":
		return arrow.FixedWidthTypes.Date32
	case strings.HasPrefix(t, "TIMESTAMP"):
		return &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	}
	return arrow.BinaryTypes.String
}

// appendArrow appends one answer value, as the JSON answer holds it, to b.
func appendArrow(b array.Builder, v any) error {
	if v == nil {
		b.AppendNull()
		return nil
	}
	switch b := b.(type) {
	case *array.StringBuilder:
		if s, ok := v.(string); ok {
			b.Append(s)
			return nil
		}
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Append(string(j))
		return nil
	case *array.BooleanBuilder:
		if x, ok := v.(bool); ok {
			b.Append(x)
			return nil
		}
	case *array.Float64Builder:
		if x, ok := v.(float64); ok {
			b.Append(x)
			return nil
		}
	case *array.Float32Builder:
		if x, ok := v.(float64); ok {
			b.Append(float32(x))
			return nil
		}
	case *array.Date32Builder:
		if s, ok := v.(string); ok {
			if t, err := time.Parse(time.DateOnly, s); err == nil {
				b.Append(arrow.Date32FromTime(t))
				return nil
			}
		}
	case *array.TimestampBuilder:
		if s, ok := v.(string); ok {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				t, err = time.Parse(time.DateOnly, s)
			}
			if err == nil {
				b.Append(arrow.Timestamp(t.UTC().UnixMicro()))
				return nil
			}
		}
	default:
		if x, ok := v.(float64); ok && x == math.Trunc(x) {
			return appendInteger(b, x)
		}
	}
	return fmt.Errorf("value %v (%T) does not fit %s", v, v, b.Type())
}

// appendInteger appends a whole number to an integer builder.
func appendInteger(b array.Builder, x float64) error {
	switch b := b.(type) {
	case *array.Int8Builder:
		b.Append(int8(x))
	case *array.Int16Builder:
		b.Append(int16(x))
	case *array.Int32Builder:
		b.Append(int32(x))
	case *array.Int64Builder:
		b.Append(int64(x))
	case *array.Uint8Builder:
		b.Append(uint8(x))
	case *array.Uint16Builder:
		b.Append(uint16(x))
	case *array.Uint32Builder:
		b.Append(uint32(x))
	case *array.Uint64Builder:
		b.Append(uint64(x))
	default:
		return fmt.Errorf("no encoding for %s", b.Type())
	}
	return nil
}
