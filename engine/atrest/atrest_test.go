package atrest_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine/atrest"
)

var schema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "score", Type: arrow.PrimitiveTypes.Float64},
	{Name: "flag", Type: arrow.FixedWidthTypes.Boolean},
	{Name: "day", Type: arrow.FixedWidthTypes.Date32},
}, nil)

// write makes a file of batches*rows rows, large enough to span frames.
func write(t *testing.T, path string, k atrest.Key, batches, rows int) {
	t.Helper()
	w, err := atrest.Create(path, k, schema, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for n := 0; n < batches; n++ {
		for i := 0; i < rows; i++ {
			id := int64(n*rows + i)
			b.Field(0).(*array.Int64Builder).Append(id)
			if id%7 == 0 {
				b.Field(1).(*array.StringBuilder).AppendNull()
			} else {
				b.Field(1).(*array.StringBuilder).Append("patient record text padding to make the file large")
			}
			b.Field(2).(*array.Float64Builder).Append(float64(id) / 3)
			b.Field(3).(*array.BooleanBuilder).Append(id%2 == 0)
			b.Field(4).(*array.Date32Builder).Append(arrow.Date32(id % 20000))
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func readAll(path string, k atrest.Key) (int64, error) {
	r, err := atrest.Open(path, k, memory.DefaultAllocator)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	var n int64
	for r.Next() {
		rec := r.RecordBatch()
		ids := rec.Column(0).(*array.Int64)
		for i := 0; i < ids.Len(); i++ {
			if ids.Value(i) != n {
				return n, errors.New("rows out of order")
			}
			n++
		}
	}
	return n, r.Err()
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []atrest.Cipher{atrest.SM4GCM, atrest.AES256GCM} {
		t.Run(string(c), func(t *testing.T) {
			k, err := atrest.NewKey(c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "t.gwat")
			write(t, path, k, 5, 20000)
			n, err := readAll(path, k)
			if err != nil || n != 100000 {
				t.Fatalf("read %d rows: %v", n, err)
			}
			if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
				t.Errorf("temporary file left behind")
			}
		})
	}
}

func TestTampering(t *testing.T) {
	k, _ := atrest.NewKey(atrest.SM4GCM)
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.gwat")
	write(t, orig, k, 5, 20000) // about 6 MB: several frames
	data, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := atrest.NewKey(atrest.SM4GCM)
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		key    atrest.Key
		want   error
	}{
		{"wrong key", func(b []byte) []byte { return b }, other, atrest.ErrWrongKey},
		{"bit flip in header", func(b []byte) []byte { b[10] ^= 1; return b }, k, nil},
		{"bit flip in a later frame", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }, k, atrest.ErrCorrupt},
		{"truncated mid-frame", func(b []byte) []byte { return b[:len(b)/2] }, k, atrest.ErrCorrupt},
		{"last frame dropped", func(b []byte) []byte { return b[:len(b)-100] }, k, atrest.ErrCorrupt},
		{"appended garbage", func(b []byte) []byte { return append(b, 1, 2, 3) }, k, atrest.ErrCorrupt},
		{"empty", func(b []byte) []byte { return nil }, k, atrest.ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".gwat")
			if err := os.WriteFile(path, tc.mutate(append([]byte(nil), data...)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := readAll(path, tc.key)
			if err == nil {
				t.Fatal("tampered file read without error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFrameSwap(t *testing.T) {
	k, _ := atrest.NewKey(atrest.SM4GCM)
	dir := t.TempDir()
	a := filepath.Join(dir, "a.gwat")
	write(t, a, k, 5, 20000)
	data, _ := os.ReadFile(a)
	// Splice the first frame of a second file (same key) into the first.
	b := filepath.Join(dir, "b.gwat")
	write(t, b, k, 5, 20000)
	other, _ := os.ReadFile(b)
	hdr := 4 + 2 + len("sm4-gcm") + 16
	spliced := append(append([]byte(nil), data[:hdr]...), other[hdr:]...)
	path := filepath.Join(dir, "spliced.gwat")
	os.WriteFile(path, spliced, 0o600)
	if _, err := readAll(path, k); err == nil {
		t.Fatal("frames moved between files were accepted")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, _ := atrest.NewKey(atrest.SM4GCM)
	path := filepath.Join(dir, "keys", "data.key")
	if err := atrest.WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	got, err := atrest.LoadKeyFile(path)
	if err != nil || string(got.Bytes) != string(k.Bytes) || got.Cipher != k.Cipher {
		t.Fatalf("load: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := atrest.LoadKeyFile(path); err == nil {
		t.Fatal("a world-readable key file was accepted")
	}
	if got.String() == string(k.Bytes) || len(got.String()) > 30 {
		t.Fatalf("String() leaks key material: %s", got)
	}
}
