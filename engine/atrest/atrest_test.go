package atrest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/hospital/gateway/engine/atrest"
)

var ciphers = []atrest.Cipher{atrest.SM4GCM, atrest.AES256GCM}

var testSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "age", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "cost", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "name", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "day", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
}, nil)

// makeBatches builds n batches of rows rows each, with nulls in every
// nullable column.
func makeBatches(t testing.TB, n, rows int) []arrow.RecordBatch {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, testSchema)
	defer b.Release()
	var (
		id   = b.Field(0).(*array.Int64Builder)
		age  = b.Field(1).(*array.Int32Builder)
		cost = b.Field(2).(*array.Float64Builder)
		name = b.Field(3).(*array.StringBuilder)
		flag = b.Field(4).(*array.BooleanBuilder)
		day  = b.Field(5).(*array.Date32Builder)
	)
	var out []arrow.RecordBatch
	for k := 0; k < n; k++ {
		for i := 0; i < rows; i++ {
			v := int64(k*rows + i)
			id.Append(v)
			if v%11 == 0 {
				age.AppendNull()
				cost.AppendNull()
				name.AppendNull()
				flag.AppendNull()
				day.AppendNull()
				continue
			}
			age.Append(int32(v % 111))
			cost.Append(float64(v) * 1.25)
			name.Append(fmt.Sprintf("patient %d, ward %d, notes %x", v, v%40, v*2654435761))
			flag.Append(v%3 == 0)
			day.Append(arrow.Date32(18000 + v%3000))
		}
		out = append(out, b.NewRecordBatch())
	}
	t.Cleanup(func() {
		for _, rec := range out {
			rec.Release()
		}
	})
	return out
}

func writeTable(t testing.TB, path string, k atrest.Key, batches []arrow.RecordBatch) {
	t.Helper()
	w, err := atrest.Create(path, k, testSchema, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range batches {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// readTable reads a whole table, returning retained batches.
func readTable(t testing.TB, path string, k atrest.Key, mem memory.Allocator) ([]arrow.RecordBatch, error) {
	t.Helper()
	r, err := atrest.Open(path, k, mem)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if !r.Schema().Equal(testSchema) {
		return nil, fmt.Errorf("schema %s", r.Schema())
	}
	var out []arrow.RecordBatch
	for r.Next() {
		rec := r.RecordBatch()
		rec.Retain()
		out = append(out, rec)
	}
	if err := r.Err(); err != nil {
		for _, rec := range out {
			rec.Release()
		}
		return nil, err
	}
	return out, nil
}

func newKey(t testing.TB, c atrest.Cipher) atrest.Key {
	t.Helper()
	k, err := atrest.NewKey(c)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	shapes := []struct {
		name          string
		batches, rows int
	}{
		{"empty table", 0, 0},
		{"one empty batch", 1, 0},
		{"one small batch", 1, 10},
		{"many batches over several frames", 7, 30_000},
		{"one batch larger than a frame", 1, 100_000},
	}
	for _, c := range ciphers {
		for _, sh := range shapes {
			t.Run(string(c)+"/"+sh.name, func(t *testing.T) {
				k := newKey(t, c)
				path := filepath.Join(t.TempDir(), "t.gwat")
				want := makeBatches(t, sh.batches, sh.rows)
				writeTable(t, path, k, want)

				mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
				defer mem.AssertSize(t, 0)
				got, err := readTable(t, path, k, mem)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("read %d batches, wrote %d", len(got), len(want))
				}
				for i := range got {
					if !array.RecordEqual(got[i], want[i]) {
						t.Errorf("batch %d differs", i)
					}
					got[i].Release()
				}
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 {
					t.Errorf("table file mode %04o, want 0600", st.Mode().Perm())
				}
				if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("temporary file left behind: %v", err)
				}
			})
		}
	}
}

func TestCiphertextHidesData(t *testing.T) {
	for _, c := range ciphers {
		t.Run(string(c), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.gwat")
			writeTable(t, path, newKey(t, c), makeBatches(t, 1, 100))
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"patient 1", "name", "ward"} {
				if bytes.Contains(data, []byte(s)) {
					t.Errorf("file contains %q in plaintext", s)
				}
			}
		})
	}
}

func TestWrongKey(t *testing.T) {
	dir := t.TempDir()
	right := newKey(t, atrest.SM4GCM)
	path := filepath.Join(dir, "t.gwat")
	writeTable(t, path, right, makeBatches(t, 2, 1000))
	cases := []struct {
		name string
		key  atrest.Key
		want error
	}{
		{"another sm4 key", newKey(t, atrest.SM4GCM), atrest.ErrWrongKey},
		{"an aes key", newKey(t, atrest.AES256GCM), atrest.ErrWrongKey},
		{"sm4 key with one bit changed", func() atrest.Key {
			k := atrest.Key{Cipher: right.Cipher, Bytes: bytes.Clone(right.Bytes)}
			k.Bytes[15] ^= 0x80
			return k
		}(), atrest.ErrWrongKey},
		{"key of the wrong length", atrest.Key{Cipher: atrest.SM4GCM, Bytes: make([]byte, 32)}, nil},
		{"unknown cipher", atrest.Key{Cipher: "des", Bytes: make([]byte, 8)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readTable(t, path, tc.key, memory.DefaultAllocator)
			if err == nil {
				t.Fatal("read with the wrong key")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			for _, k := range []atrest.Key{right, tc.key} {
				if h := hex.EncodeToString(k.Bytes); len(k.Bytes) > 0 && strings.Contains(strings.ToLower(err.Error()), h) {
					t.Fatalf("error reveals a key: %v", err)
				}
			}
		})
	}
}

// frame is the position of a frame in a table file.
type frame struct{ off, end int }

// layout parses a table file as its package documentation describes it
// and returns the header length and the frames.
func layout(t *testing.T, data []byte) (int, []frame) {
	t.Helper()
	if string(data[:4]) != "GWAT" || data[4] != 1 {
		t.Fatalf("file starts %q", data[:6])
	}
	hdr := 6 + int(data[5]) + 16 + 12 + 16 + 4
	var frames []frame
	for off := hdr; off < len(data); {
		end := off + 1 + 4 + 12 + int(binary.BigEndian.Uint32(data[off+1:]))
		frames = append(frames, frame{off, end})
		off = end
	}
	if len(frames) == 0 || frames[len(frames)-1].end != len(data) || data[frames[len(frames)-1].off] != 1 {
		t.Fatalf("cannot parse the file's frames: %v", frames)
	}
	return hdr, frames
}

// writeAndLoad writes a table of several frames and returns its bytes.
func writeAndLoad(t *testing.T, dir, name string, k atrest.Key) []byte {
	t.Helper()
	path := filepath.Join(dir, name)
	writeTable(t, path, k, makeBatches(t, 4, 30_000))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// expectCorrupt writes data to a file and checks that reading it fails
// with ErrCorrupt.
func expectCorrupt(t *testing.T, dir string, k atrest.Key, data []byte) {
	t.Helper()
	path := filepath.Join(dir, "tampered.gwat")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readTable(t, path, k, memory.DefaultAllocator)
	if err == nil {
		for _, rec := range got {
			rec.Release()
		}
		t.Fatal("tampered file read without error")
	}
	if !errors.Is(err, atrest.ErrCorrupt) {
		t.Fatalf("error %q does not wrap ErrCorrupt", err)
	}
}

func TestHeaderBitFlips(t *testing.T) {
	for _, c := range ciphers {
		t.Run(string(c), func(t *testing.T) {
			dir := t.TempDir()
			k := newKey(t, c)
			data := writeAndLoad(t, dir, "t.gwat", k)
			hdr, _ := layout(t, data)
			for off := 0; off < hdr; off++ {
				for _, bit := range []byte{0x01, 0x80} {
					t.Run(fmt.Sprintf("byte %d bit %#x", off, bit), func(t *testing.T) {
						d := bytes.Clone(data)
						d[off] ^= bit
						expectCorrupt(t, dir, k, d)
					})
				}
			}
		})
	}
}

func TestFrameTampering(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t, atrest.SM4GCM)
	data := writeAndLoad(t, dir, "a.gwat", k)
	hdr, frames := layout(t, data)
	if len(frames) < 4 {
		t.Fatalf("want at least 4 frames, got %d", len(frames))
	}
	other := writeAndLoad(t, dir, "b.gwat", k) // same key, another file
	_, otherFrames := layout(t, other)
	last := frames[len(frames)-1]
	part := func(d []byte, f frame) []byte { return d[f.off:f.end] }
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	flip := func(off int) []byte {
		d := bytes.Clone(data)
		d[off] ^= 0x04
		return d
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"flag of frame 0", flip(frames[0].off)},
		{"length of frame 1", flip(frames[1].off + 4)},
		{"nonce of frame 1", flip(frames[1].off + 10)},
		{"first ciphertext byte of frame 2", flip(frames[2].off + 17)},
		{"middle of frame 2", flip((frames[2].off + frames[2].end) / 2)},
		{"tag of frame 0", flip(frames[0].end - 1)},
		{"last byte of the file", flip(len(data) - 1)},
		{"frames 1 and 2 swapped", join(data[:frames[1].off], part(data, frames[2]), part(data, frames[1]), data[frames[2].end:])},
		{"frame 1 dropped", join(data[:frames[1].off], data[frames[1].end:])},
		{"frame 0 duplicated", join(data[:frames[0].end], part(data, frames[0]), data[frames[0].end:])},
		{"final frame dropped", data[:last.off]},
		{"final frame marked not final", func() []byte { d := bytes.Clone(data); d[last.off] = 0; return d }()},
		{"frame 0 marked final", func() []byte { d := bytes.Clone(data); d[frames[0].off] = 1; return d }()},
		{"frame 1 from another file", join(data[:frames[1].off], part(other, otherFrames[1]), data[frames[1].end:])},
		{"header of another file", join(other[:hdr], data[hdr:])},
		{"final frame of another file appended", join(data, part(other, otherFrames[len(otherFrames)-1]))},
		{"garbage appended", join(data, []byte{0})},
		{"frame with impossible length", func() []byte {
			d := bytes.Clone(data)
			binary.BigEndian.PutUint32(d[frames[1].off+1:], 1<<30)
			return d
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectCorrupt(t, dir, k, tc.data)
		})
	}
}

func TestTruncation(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t, atrest.AES256GCM)
	data := writeAndLoad(t, dir, "t.gwat", k)
	hdr, frames := layout(t, data)
	cases := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"inside magic", 3},
		{"after version", 5},
		{"inside header", hdr / 2},
		{"before checksum", hdr - 4},
		{"header only", hdr},
		{"inside frame header", hdr + 3},
		{"after frame header", hdr + 17},
		{"inside frame 0", (frames[0].off + frames[0].end) / 2},
		{"at a frame boundary", frames[1].end},
		{"inside the final frame", frames[len(frames)-1].off + 20},
		{"final tag cut", len(data) - 16},
		{"last byte missing", len(data) - 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectCorrupt(t, dir, k, data[:tc.size])
		})
	}
}

func TestWriterIsAtomic(t *testing.T) {
	k := newKey(t, atrest.SM4GCM)
	batches := makeBatches(t, 2, 100)
	other := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int8}}, nil)
	cases := []struct {
		name string
		// finish ends the writer; commit says whether path then holds the
		// new table.
		finish func(*atrest.Writer) error
		commit bool
	}{
		{"close commits", func(w *atrest.Writer) error { return w.Close() }, true},
		{"abort discards", func(w *atrest.Writer) error { w.Abort(); return nil }, false},
		{"failed write discards", func(w *atrest.Writer) error {
			b := array.NewRecordBuilder(memory.DefaultAllocator, other)
			defer b.Release()
			b.Field(0).(*array.Int8Builder).Append(1)
			rec := b.NewRecordBatch()
			defer rec.Release()
			if err := w.Write(rec); err == nil {
				return errors.New("a batch of another schema was accepted")
			}
			if err := w.Close(); err == nil {
				return errors.New("close after a failed write succeeded")
			}
			return nil
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "t.gwat")
			old := []byte("previous version")
			if err := os.WriteFile(path, old, 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := atrest.Create(path, k, testSchema, memory.DefaultAllocator)
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range batches {
				if err := w.Write(rec); err != nil {
					t.Fatal(err)
				}
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, old) {
				t.Fatal("path changed before the writer finished")
			}
			if err := tc.finish(w); err != nil {
				t.Fatal(err)
			}
			now, _ := os.ReadFile(path)
			if committed := !bytes.Equal(now, old); committed != tc.commit {
				t.Fatalf("committed %v, want %v", committed, tc.commit)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("directory holds %d entries, want only the table", len(entries))
			}
			if err := w.Close(); err == nil {
				t.Fatal("second close succeeded")
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t, atrest.SM4GCM)
	cases := []struct {
		name   string
		path   string
		key    atrest.Key
		schema *arrow.Schema
	}{
		{"missing directory", filepath.Join(dir, "no", "t.gwat"), k, testSchema},
		{"nil schema", filepath.Join(dir, "t.gwat"), k, nil},
		{"short key", filepath.Join(dir, "t.gwat"), atrest.Key{Cipher: atrest.AES256GCM, Bytes: make([]byte, 16)}, testSchema},
		{"no cipher", filepath.Join(dir, "t.gwat"), atrest.Key{Bytes: make([]byte, 16)}, testSchema},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := atrest.Create(tc.path, tc.key, tc.schema, nil)
			if err == nil {
				w.Abort()
				t.Fatal("no error")
			}
		})
	}
}

func TestNewKey(t *testing.T) {
	cases := []struct {
		name   string
		cipher atrest.Cipher
		want   atrest.Cipher
		size   int
	}{
		{"sm4", atrest.SM4GCM, atrest.SM4GCM, 16},
		{"aes", atrest.AES256GCM, atrest.AES256GCM, 32},
		{"default is sm4", "", atrest.SM4GCM, 16},
		{"unknown", "rot13", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := atrest.NewKey(tc.cipher)
			if tc.size == 0 {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := atrest.NewKey(tc.cipher)
			if a.Cipher != tc.want || len(a.Bytes) != tc.size || bytes.Equal(a.Bytes, b.Bytes) {
				t.Fatalf("keys %s (%d bytes) and %s", a, len(a.Bytes), b)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	sm4hex := "00112233445566778899aabbccddeeff"
	aeshex := sm4hex + sm4hex
	cases := []struct {
		name   string
		in     string
		cipher atrest.Cipher
		ok     bool
	}{
		{"sm4", "sm4-gcm:" + sm4hex, atrest.SM4GCM, true},
		{"aes", "aes-256-gcm:" + aeshex, atrest.AES256GCM, true},
		{"upper-case hex", "sm4-gcm:" + strings.ToUpper(sm4hex), atrest.SM4GCM, true},
		{"surrounding white space", "  sm4-gcm:" + sm4hex + "\r\n", atrest.SM4GCM, true},
		{"empty", "", "", false},
		{"no cipher", sm4hex, "", false},
		{"unknown cipher", "sm4-cbc:" + sm4hex, "", false},
		{"not hex", "sm4-gcm:" + strings.Repeat("zz", 16), "", false},
		{"odd hex digits", "sm4-gcm:" + sm4hex[1:], "", false},
		{"aes key for sm4", "sm4-gcm:" + aeshex, "", false},
		{"sm4 key for aes", "aes-256-gcm:" + sm4hex, "", false},
		{"inner space", "sm4-gcm: " + sm4hex, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k, err := atrest.ParseKey(tc.in)
			if !tc.ok {
				if err == nil {
					t.Fatalf("parsed %q", tc.in)
				}
				if strings.Contains(err.Error(), sm4hex[4:20]) || strings.Contains(err.Error(), "zz") {
					t.Fatalf("error quotes the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Cipher != tc.cipher || !strings.HasPrefix(aeshex, hex.EncodeToString(k.Bytes)) {
				t.Fatalf("parsed %s with bytes %x", k.Cipher, k.Bytes)
			}
		})
	}
}

func TestKeyFile(t *testing.T) {
	for _, c := range ciphers {
		t.Run("round trip "+string(c), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "secrets", "gateway")
			path := filepath.Join(dir, "data.key")
			k := newKey(t, c)
			if err := atrest.WriteKeyFile(path, k); err != nil {
				t.Fatal(err)
			}
			// Overwriting keeps the file private and complete.
			k = newKey(t, c)
			if err := atrest.WriteKeyFile(path, k); err != nil {
				t.Fatal(err)
			}
			got, err := atrest.LoadKeyFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Cipher != k.Cipher || !bytes.Equal(got.Bytes, k.Bytes) {
				t.Fatalf("loaded %s, wrote %s", got, k)
			}
			for p, want := range map[string]os.FileMode{path: 0o600, dir: 0o700} {
				if st, err := os.Stat(p); err != nil || st.Mode().Perm() != want {
					t.Fatalf("%s: mode %v (%v), want %04o", p, st.Mode().Perm(), err, want)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("key directory holds %d entries, want 1", len(entries))
			}
		})
	}

	modes := []struct {
		name string
		mode os.FileMode
		ok   bool
	}{
		{"owner read-write", 0o600, true},
		{"owner read-only", 0o400, true},
		{"group readable", 0o640, false},
		{"world readable", 0o644, false},
		{"world readable only", 0o604, false},
		{"group writable", 0o620, false},
		{"group executable", 0o610, false},
	}
	for _, tc := range modes {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "data.key")
			if err := atrest.WriteKeyFile(path, newKey(t, atrest.SM4GCM)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := atrest.LoadKeyFile(path)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, atrest.ErrInsecureKeyFile) {
				t.Fatalf("error %v, want ErrInsecureKeyFile", err)
			}
		})
	}

	bad := []struct {
		name  string
		setup func(path string) error
	}{
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"garbage", func(p string) error { return os.WriteFile(p, []byte("not a key\n"), 0o600) }},
		{"huge", func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("a"), 1<<20), 0o600) }},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "data.key")
			if err := tc.setup(path); err != nil {
				t.Fatal(err)
			}
			if _, err := atrest.LoadKeyFile(path); err == nil {
				t.Fatal("no error")
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		// The gateway creates a key on first start when none exists.
		_, err := atrest.LoadKeyFile(filepath.Join(t.TempDir(), "data.key"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error %v, want one wrapping fs.ErrNotExist", err)
		}
	})

	t.Run("invalid key is not written", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "data.key")
		if err := atrest.WriteKeyFile(path, atrest.Key{Cipher: atrest.SM4GCM, Bytes: []byte{1}}); err == nil {
			t.Fatal("no error")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("file written: %v", err)
		}
	})
}

func TestKeyIsNotPrinted(t *testing.T) {
	k := newKey(t, atrest.AES256GCM)
	secret := hex.EncodeToString(k.Bytes)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("loaded", "key", k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("loaded", "key", k)
	js, err := json.Marshal(struct{ Key atrest.Key }{k})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		out  string
	}{
		{"%v", fmt.Sprintf("%v", k)},
		{"%+v", fmt.Sprintf("%+v", k)},
		{"%#v", fmt.Sprintf("%#v", k)},
		{"%s", fmt.Sprintf("%s", k)}, //lint:ignore S1025 the %s verb itself is under test
		{"pointer %v", fmt.Sprintf("%v", &k)},
		{"inside a struct", fmt.Sprintf("%+v", struct{ K atrest.Key }{k})},
		{"slog", logged.String()},
		{"json", string(js)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(strings.ToLower(tc.out), secret[:8]) || strings.Contains(tc.out, fmt.Sprint(k.Bytes)) {
				t.Fatalf("key material in %q", tc.out)
			}
			if !strings.Contains(tc.out, "aes-256-gcm") {
				t.Fatalf("cipher missing from %q", tc.out)
			}
		})
	}
}

// BenchmarkWriteRead writes and reads a table of about 100 MB of Arrow
// data with each cipher; MB/s is of the plaintext IPC stream.
func BenchmarkWriteRead(b *testing.B) {
	batches := makeBatches(b, 24, 65536)
	for _, c := range ciphers {
		k := newKey(b, c)
		path := filepath.Join(b.TempDir(), "bench.gwat")
		var size int64
		b.Run(string(c)+"/write", func(b *testing.B) {
			for b.Loop() {
				writeTable(b, path, k, batches)
			}
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			size = st.Size()
			b.SetBytes(size)
		})
		b.Run(string(c)+"/read", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				r, err := atrest.Open(path, k, memory.DefaultAllocator)
				if err != nil {
					b.Fatal(err)
				}
				rows := int64(0)
				for r.Next() {
					rows += r.RecordBatch().NumRows()
				}
				if err := r.Err(); err != nil {
					b.Fatal(err)
				}
				r.Close()
				if rows != 24*65536 {
					b.Fatalf("read %d rows", rows)
				}
			}
		})
	}
}
