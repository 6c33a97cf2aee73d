// Package atrest keeps tables encrypted on disk. A table file is an Arrow IPC
// stream cut into frames, each sealed with an AEAD cipher: SM4-GCM, the
// national algorithm and the default for core data (Art. 11 of the 2026
// Measures), or AES-256-GCM.
//
// File format, version 1:
//
//	header: "GWAT" | version (1 byte) | cipher name length (1 byte) | cipher name | file id (16 random bytes)
//	frame:  length of sealed data (4 bytes, big endian) | nonce (12 random bytes) | sealed data
//
// Each frame holds up to 1 MiB of the plaintext IPC stream. Its associated
// data is the header, the frame's index and a flag marking the last frame,
// so frames cannot be reordered, dropped, truncated away, or moved between
// files without the read failing. A wrong key fails on the first frame.
// Files are written to a temporary name, synced, and renamed, so a reader
// never sees half a file.
package atrest

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/emmansun/gmsm/sm4"
)

// Cipher names an AEAD cipher.
type Cipher string

// The ciphers.
const (
	SM4GCM    Cipher = "sm4-gcm"
	AES256GCM Cipher = "aes-256-gcm"
)

// ErrCorrupt means a file was altered, truncated, or was not written by
// this package.
var ErrCorrupt = errors.New("table file is corrupt or was tampered with")

// ErrWrongKey means the key does not open the file.
var ErrWrongKey = errors.New("the key does not open this table file (wrong key, or the file was tampered with)")

const (
	magic     = "GWAT"
	version   = 1
	frameSize = 1 << 20
	nonceSize = 12
	idSize    = 16
)

// Key is a data-at-rest key.
type Key struct {
	Cipher Cipher
	Bytes  []byte
}

func keySize(c Cipher) (int, error) {
	switch c {
	case SM4GCM:
		return 16, nil
	case AES256GCM:
		return 32, nil
	}
	return 0, fmt.Errorf("unknown cipher %q (use %s or %s)", c, SM4GCM, AES256GCM)
}

// NewKey returns a random key for c.
func NewKey(c Cipher) (Key, error) {
	n, err := keySize(c)
	if err != nil {
		return Key{}, err
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	return Key{Cipher: c, Bytes: b}, nil
}

// String hides the key material.
func (k Key) String() string { return string(k.Cipher) + ":<redacted>" }

// ParseKey reads "cipher:HEX", the format of key files and of the
// GATEWAY_DATA_KEY variable.
func ParseKey(s string) (Key, error) {
	name, hx, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Key{}, errors.New(`key must look like "sm4-gcm:HEX"`)
	}
	c := Cipher(name)
	n, err := keySize(c)
	if err != nil {
		return Key{}, err
	}
	b, err := hex.DecodeString(hx)
	if err != nil || len(b) != n {
		return Key{}, fmt.Errorf("a %s key is %d bytes of hex", c, n)
	}
	return Key{Cipher: c, Bytes: b}, nil
}

// LoadKeyFile reads a key file, refusing one that others may read.
func LoadKeyFile(path string) (Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Key{}, fmt.Errorf("key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Key{}, fmt.Errorf("key file %s is readable by others (mode %o); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("read key file: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k to path with mode 0600, atomically.
func WriteKeyFile(path string, k Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	return writeAtomic(path, []byte(string(k.Cipher)+":"+hex.EncodeToString(k.Bytes)+"\n"), 0o600)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}

func aead(k Key) (cipher.AEAD, error) {
	n, err := keySize(k.Cipher)
	if err != nil {
		return nil, err
	}
	if len(k.Bytes) != n {
		return nil, fmt.Errorf("a %s key is %d bytes, got %d", k.Cipher, n, len(k.Bytes))
	}
	var block cipher.Block
	if k.Cipher == SM4GCM {
		block, err = sm4.NewCipher(k.Bytes)
	} else {
		block, err = aes.NewCipher(k.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("init %s: %w", k.Cipher, err)
	}
	return cipher.NewGCM(block)
}

func header(c Cipher, id []byte) []byte {
	h := []byte(magic)
	h = append(h, version, byte(len(c)))
	h = append(h, c...)
	return append(h, id...)
}

func frameAD(hdr []byte, index uint64, last bool) []byte {
	ad := make([]byte, 0, len(hdr)+9)
	ad = append(ad, hdr...)
	ad = binary.BigEndian.AppendUint64(ad, index)
	if last {
		return append(ad, 1)
	}
	return append(ad, 0)
}

// Writer writes one table file.
type Writer struct {
	path  string
	f     *os.File
	w     *bufio.Writer
	aead  cipher.AEAD
	hdr   []byte
	buf   bytes.Buffer
	index uint64
	ipc   *ipc.Writer
	err   error
}

// Create starts a table file at path with schema's columns.
func Create(path string, k Key, schema *arrow.Schema, mem memory.Allocator) (*Writer, error) {
	a, err := aead(k)
	if err != nil {
		return nil, err
	}
	id := make([]byte, idSize)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("generate file id: %w", err)
	}
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	w := &Writer{path: path, f: f, w: bufio.NewWriterSize(f, frameSize+64), aead: a, hdr: header(k.Cipher, id)}
	if _, err := w.w.Write(w.hdr); err != nil {
		f.Close()
		return nil, fmt.Errorf("write header: %w", err)
	}
	w.ipc = ipc.NewWriter(&w.buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	return w, nil
}

// Write appends a record batch.
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if w.err != nil {
		return w.err
	}
	if err := w.ipc.Write(rec); err != nil {
		w.err = fmt.Errorf("encode batch: %w", err)
		return w.err
	}
	for w.buf.Len() > frameSize {
		if err := w.seal(w.buf.Next(frameSize), false); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) seal(plain []byte, last bool) error {
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		w.err = fmt.Errorf("generate nonce: %w", err)
		return w.err
	}
	sealed := w.aead.Seal(nil, nonce, plain, frameAD(w.hdr, w.index, last))
	w.index++
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(sealed)))
	for _, b := range [][]byte{n[:], nonce, sealed} {
		if _, err := w.w.Write(b); err != nil {
			w.err = fmt.Errorf("write frame: %w", err)
			return w.err
		}
	}
	return nil
}

// Close seals the last frame, syncs, and moves the file into place. After a
// failed Write it removes the temporary file and returns the first error.
func (w *Writer) Close() error {
	if w.err == nil {
		if err := w.ipc.Close(); err != nil {
			w.err = fmt.Errorf("finish stream: %w", err)
		}
	}
	if w.err == nil {
		for w.buf.Len() > frameSize {
			w.seal(w.buf.Next(frameSize), false)
		}
	}
	if w.err == nil {
		w.seal(w.buf.Bytes(), true)
	}
	if w.err == nil {
		if err := w.w.Flush(); err != nil {
			w.err = fmt.Errorf("flush: %w", err)
		}
	}
	if w.err == nil {
		if err := w.f.Sync(); err != nil {
			w.err = fmt.Errorf("sync: %w", err)
		}
	}
	cerr := w.f.Close()
	if w.err == nil && cerr != nil {
		w.err = fmt.Errorf("close: %w", cerr)
	}
	if w.err != nil {
		os.Remove(w.path + ".tmp")
		return w.err
	}
	if err := os.Rename(w.path+".tmp", w.path); err != nil {
		return fmt.Errorf("rename %s: %w", w.path, err)
	}
	return nil
}

// Reader reads one table file.
type Reader struct {
	*ipc.Reader
	f *os.File
}

// Open opens a table file for reading.
func Open(path string, k Key, mem memory.Allocator) (*Reader, error) {
	a, err := aead(k)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open table file: %w", err)
	}
	fr := &frames{r: bufio.NewReaderSize(f, frameSize+64), aead: a}
	if err := fr.readHeader(k.Cipher); err != nil {
		f.Close()
		return nil, err
	}
	r, err := ipc.NewReader(fr, ipc.WithAllocator(mem))
	if err != nil {
		f.Close()
		if errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &Reader{Reader: r, f: f}, nil
}

// Err reports the first error of the stream, wrapped as ErrCorrupt when the
// file was damaged.
func (r *Reader) Err() error {
	err := r.Reader.Err()
	if err == nil || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKey) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// Close releases the reader and its file.
func (r *Reader) Close() error {
	r.Reader.Release()
	return r.f.Close()
}

// frames decrypts frames as an io.Reader of the plaintext IPC stream.
type frames struct {
	r     *bufio.Reader
	aead  cipher.AEAD
	hdr   []byte
	index uint64
	plain []byte
	done  bool
}

func (fr *frames) readHeader(want Cipher) error {
	fixed := make([]byte, len(magic)+2)
	if _, err := io.ReadFull(fr.r, fixed); err != nil || string(fixed[:len(magic)]) != magic {
		return fmt.Errorf("%w: not a gateway table file", ErrCorrupt)
	}
	if fixed[len(magic)] != version {
		return fmt.Errorf("%w: unknown version %d", ErrCorrupt, fixed[len(magic)])
	}
	rest := make([]byte, int(fixed[len(magic)+1])+idSize)
	if _, err := io.ReadFull(fr.r, rest); err != nil {
		return fmt.Errorf("%w: short header", ErrCorrupt)
	}
	name := Cipher(rest[:len(rest)-idSize])
	if name != want {
		return fmt.Errorf("the file is encrypted with %s, the key is for %s", name, want)
	}
	fr.hdr = append(fixed, rest...)
	return nil
}

func (fr *frames) Read(p []byte) (int, error) {
	for len(fr.plain) == 0 {
		if fr.done {
			return 0, io.EOF
		}
		if err := fr.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, fr.plain)
	fr.plain = fr.plain[n:]
	return n, nil
}

func (fr *frames) next() error {
	var n [4]byte
	if _, err := io.ReadFull(fr.r, n[:]); err != nil {
		return fmt.Errorf("%w: the file ends before its last frame", ErrCorrupt)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > frameSize+uint32(fr.aead.Overhead()) {
		return fmt.Errorf("%w: frame %d has an impossible size", ErrCorrupt, fr.index)
	}
	buf := make([]byte, nonceSize+int(size))
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		return fmt.Errorf("%w: frame %d is truncated", ErrCorrupt, fr.index)
	}
	nonce, sealed := buf[:nonceSize], buf[nonceSize:]
	for _, last := range []bool{false, true} {
		plain, err := fr.aead.Open(nil, nonce, sealed, frameAD(fr.hdr, fr.index, last))
		if err == nil {
			fr.plain, fr.done = plain, last
			fr.index++
			if last {
				if _, err := fr.r.ReadByte(); err != io.EOF {
					return fmt.Errorf("%w: data after the last frame", ErrCorrupt)
				}
			}
			return nil
		}
	}
	if fr.index == 0 {
		return ErrWrongKey
	}
	return fmt.Errorf("%w: frame %d does not authenticate", ErrCorrupt, fr.index)
}
