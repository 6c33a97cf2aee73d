package atrest

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Writer encrypts record batches into a table file. Only one Writer may
// write a given path at a time. A Writer is not safe for concurrent use.
type Writer struct {
	path, tmp string
	f         *os.File
	seal      *sealer
	ipc       *ipc.Writer
	err       error // first failure; the file will not be committed
	closed    bool
}

// Create starts the table file path for batches with the given schema,
// sealed with k. The data goes to path+".tmp" until Close moves it to
// path; a stale temporary file from an earlier crash is replaced. A nil
// mem means memory.DefaultAllocator.
func Create(path string, k Key, schema *arrow.Schema, mem memory.Allocator) (*Writer, error) {
	a, err := k.aead()
	if err != nil {
		return nil, err
	}
	if schema == nil {
		return nil, errors.New("atrest: create table file: schema is nil")
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	hdr, id, err := newHeader(k.Cipher, a)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("atrest: remove stale temporary file: %w", err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("atrest: create table file: %w", err)
	}
	w := &Writer{path: path, tmp: tmp, f: f, seal: newSealer(f, a, id)}
	if _, err := f.Write(hdr); err != nil {
		w.discard()
		return nil, fmt.Errorf("atrest: write header of %s: %w", path, err)
	}
	w.ipc = ipc.NewWriter(w.seal, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	return w, nil
}

// newHeader returns a fresh file header for cipher c and its file id.
func newHeader(c Cipher, a cipher.AEAD) (hdr, id []byte, err error) {
	hdr = make([]byte, 0, 6+len(c)+idSize+nonceSize+tagSize+crcSize)
	hdr = append(hdr, magic...)
	hdr = append(hdr, version, byte(len(c)))
	hdr = append(hdr, c...)
	prefix := len(hdr) + idSize
	hdr = hdr[:prefix+nonceSize]
	if _, err := rand.Read(hdr[prefix-idSize:]); err != nil {
		return nil, nil, fmt.Errorf("atrest: generate file id: %w", err)
	}
	hdr = a.Seal(hdr, hdr[prefix:prefix+nonceSize], nil, hdr[:prefix])
	hdr = binary.BigEndian.AppendUint32(hdr, headerChecksum(hdr))
	return hdr, hdr[prefix-idSize : prefix], nil
}

// Write appends a batch, which must have the schema given to Create. After
// a failed Write the file cannot be completed: Close discards it and
// returns the error.
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if w.closed {
		return errors.New("atrest: write to a closed table writer")
	}
	if w.err != nil {
		return w.err
	}
	if err := w.ipc.Write(rec); err != nil {
		w.err = fmt.Errorf("atrest: write batch to %s: %w", w.path, err)
		return w.err
	}
	return nil
}

// Close ends the stream, seals the final frame, syncs the file and renames
// it to the path given to Create. If anything failed, now or in an earlier
// Write, it removes the temporary file instead, leaves path untouched and
// returns the first error.
func (w *Writer) Close() error {
	if w.closed {
		return errors.New("atrest: table writer already closed")
	}
	if w.err != nil {
		w.discard()
		return w.err
	}
	w.closed = true
	err := w.ipc.Close()
	if err != nil {
		err = fmt.Errorf("end stream: %w", err)
	} else if err = w.seal.final(); err == nil {
		if err = w.f.Sync(); err != nil {
			err = fmt.Errorf("sync: %w", err)
		}
	}
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	if err == nil {
		if err = os.Rename(w.tmp, w.path); err != nil {
			err = fmt.Errorf("rename: %w", err)
		}
	}
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("atrest: finish %s: %w", w.path, err)
	}
	if err := syncDir(filepath.Dir(w.path)); err != nil {
		return fmt.Errorf("atrest: finish %s: %w", w.path, err)
	}
	return nil
}

// Abort discards the table file being written, leaving path untouched.
// It is a no-op after Close or Abort.
func (w *Writer) Abort() {
	if !w.closed {
		w.discard()
	}
}

// discard closes and removes the temporary file.
func (w *Writer) discard() {
	w.closed = true
	if w.ipc != nil {
		w.seal.err = errAborted // the stream's tail goes nowhere
		w.ipc.Close()
	}
	w.f.Close()
	os.Remove(w.tmp)
}

var errAborted = errors.New("atrest: table writer aborted")

// sealer cuts the plaintext IPC stream into frames and writes them sealed.
type sealer struct {
	f     *os.File
	aead  cipher.AEAD
	id    []byte
	index uint64
	// buf holds a frame: header, then plaintext sealed in place.
	buf []byte
	n   int // plaintext bytes in buf
	ad  []byte
	err error
}

func newSealer(f *os.File, a cipher.AEAD, id []byte) *sealer {
	return &sealer{f: f, aead: a, id: id, buf: make([]byte, frameHdrSize+frameSize+tagSize)}
}

// Write buffers p, sealing each frame once it is full and more follows,
// so that the final frame is never sealed before Close.
func (s *sealer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if s.err != nil {
			return written, s.err
		}
		if s.n == frameSize {
			s.err = s.flush(flagMore)
			continue
		}
		c := copy(s.buf[frameHdrSize+s.n:frameHdrSize+frameSize], p)
		s.n += c
		p = p[c:]
		written += c
	}
	return written, nil
}

// final seals what is buffered as the final frame.
func (s *sealer) final() error {
	if s.err != nil {
		return s.err
	}
	s.err = s.flush(flagFinal)
	return s.err
}

func (s *sealer) flush(flag byte) error {
	nonce := s.buf[5:frameHdrSize]
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("generate nonce: %w", err)
	}
	plain := s.buf[frameHdrSize : frameHdrSize+s.n]
	s.ad = frameAD(s.ad, s.id, s.index, flag)
	sealed := s.aead.Seal(plain[:0], nonce, plain, s.ad)
	s.buf[0] = flag
	binary.BigEndian.PutUint32(s.buf[1:5], uint32(len(sealed)))
	if _, err := s.f.Write(s.buf[:frameHdrSize+len(sealed)]); err != nil {
		return fmt.Errorf("write frame %d: %w", s.index, err)
	}
	s.index++
	s.n = 0
	return nil
}
