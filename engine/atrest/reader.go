package atrest

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Reader decrypts a table file batch by batch. A Reader is not safe for
// concurrent use.
type Reader struct {
	f      *os.File
	frames *frameReader
	ipc    *ipc.Reader
	err    error
	done   bool
	closed bool
}

// Open opens the table file at path with k. It checks the header and the
// key, failing with ErrCorrupt or ErrWrongKey, and reads the schema. A nil
// mem means memory.DefaultAllocator.
func Open(path string, k Key, mem memory.Allocator) (*Reader, error) {
	a, err := k.aead()
	if err != nil {
		return nil, err
	}
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("atrest: open table file: %w", err)
	}
	id, err := readHeader(f, k.Cipher, a)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("atrest: open %s: %w", path, err)
	}
	fr := &frameReader{r: f, aead: a, id: id, buf: make([]byte, frameHdrSize+frameSize+tagSize)}
	r, err := ipc.NewReader(fr, ipc.WithAllocator(mem))
	if err != nil {
		f.Close()
		if fr.err != nil {
			err = fr.err
		} else {
			err = fmt.Errorf("%w: read schema: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("atrest: open %s: %w", path, err)
	}
	return &Reader{f: f, frames: fr, ipc: r}, nil
}

// readHeader reads and checks the file header and returns the file id.
func readHeader(r io.Reader, c Cipher, a cipher.AEAD) ([]byte, error) {
	hdr := make([]byte, 6, 6+maxNameLen+idSize+nonceSize+tagSize+crcSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, shortRead(err, "the file is too short to be a table file")
	}
	if string(hdr[:4]) != magic {
		return nil, fmt.Errorf("%w: not a table file", ErrCorrupt)
	}
	if hdr[4] != version {
		return nil, fmt.Errorf("%w: unsupported format version %d", ErrCorrupt, hdr[4])
	}
	n := int(hdr[5])
	if n == 0 || n > maxNameLen {
		return nil, fmt.Errorf("%w: invalid cipher name length %d", ErrCorrupt, n)
	}
	hdr = hdr[:6+n+idSize+nonceSize+tagSize+crcSize]
	if _, err := io.ReadFull(r, hdr[6:]); err != nil {
		return nil, shortRead(err, "the header is cut off")
	}
	body := hdr[:len(hdr)-crcSize]
	if headerChecksum(body) != binary.BigEndian.Uint32(hdr[len(body):]) {
		return nil, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	if name := Cipher(hdr[6 : 6+n]); name != c {
		return nil, fmt.Errorf("%w: the file is sealed with %q, the key is for %s", ErrWrongKey, string(name), c)
	}
	prefix := 6 + n + idSize
	nonce, tag := hdr[prefix:prefix+nonceSize], hdr[prefix+nonceSize:prefix+nonceSize+tagSize]
	if _, err := a.Open(nil, nonce, tag, hdr[:prefix]); err != nil {
		return nil, ErrWrongKey
	}
	return hdr[prefix-idSize : prefix], nil
}

// shortRead turns a failed io.ReadFull into ErrCorrupt when the file
// ended early, and into a read error otherwise.
func shortRead(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	return fmt.Errorf("read table file: %w", err)
}

// Schema returns the schema of the table.
func (r *Reader) Schema() *arrow.Schema { return r.ipc.Schema() }

// Next advances to the next batch and reports whether there is one. When
// it returns false, Err tells whether the whole table was read.
func (r *Reader) Next() bool {
	if r.done || r.closed {
		return false
	}
	if r.ipc.Next() {
		return true
	}
	r.done = true
	switch err := r.ipc.Err(); {
	case r.frames.err != nil:
		r.err = r.frames.err
	case err != nil:
		r.err = fmt.Errorf("%w: decode stream: %w", ErrCorrupt, err)
	default:
		r.err = r.frames.finish()
	}
	return false
}

// RecordBatch returns the current batch. It is valid until the next call
// to Next or Close; Retain it to keep it longer.
func (r *Reader) RecordBatch() arrow.RecordBatch { return r.ipc.RecordBatch() }

// Err returns the error that ended reading, nil if the whole table was
// read and authenticated. Errors from damaged files wrap ErrCorrupt.
func (r *Reader) Err() error {
	if r.err != nil {
		return fmt.Errorf("atrest: read %s: %w", r.f.Name(), r.err)
	}
	return nil
}

// Close releases the reader and closes the file.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.ipc.Release()
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("atrest: close table file: %w", err)
	}
	return nil
}

// frameReader presents the authenticated plaintext of the frames as an
// io.Reader.
type frameReader struct {
	r     io.Reader
	aead  cipher.AEAD
	id    []byte
	index uint64
	// buf holds a frame: header, then sealed data opened in place.
	buf   []byte
	plain []byte // unread plaintext of the current frame
	final bool   // the final frame has been opened
	ad    []byte
	err   error
}

func (fr *frameReader) Read(p []byte) (int, error) {
	for len(fr.plain) == 0 {
		if fr.err != nil {
			return 0, fr.err
		}
		if fr.final {
			return 0, io.EOF
		}
		fr.err = fr.next()
	}
	n := copy(p, fr.plain)
	fr.plain = fr.plain[n:]
	return n, nil
}

// next reads and opens the next frame.
func (fr *frameReader) next() error {
	hdr := fr.buf[:frameHdrSize]
	if _, err := io.ReadFull(fr.r, hdr); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the file ends before its final frame, at frame %d", ErrCorrupt, fr.index)
		}
		return shortRead(err, fmt.Sprintf("frame %d is cut off", fr.index))
	}
	flag := hdr[0]
	if flag != flagMore && flag != flagFinal {
		return fmt.Errorf("%w: frame %d has an invalid flag", ErrCorrupt, fr.index)
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	if n < tagSize || n > frameSize+tagSize {
		return fmt.Errorf("%w: frame %d has an invalid length", ErrCorrupt, fr.index)
	}
	sealed := fr.buf[frameHdrSize : frameHdrSize+int(n)]
	if _, err := io.ReadFull(fr.r, sealed); err != nil {
		return shortRead(err, fmt.Sprintf("frame %d is cut off", fr.index))
	}
	fr.ad = frameAD(fr.ad, fr.id, fr.index, flag)
	plain, err := fr.aead.Open(sealed[:0], hdr[5:frameHdrSize], sealed, fr.ad)
	if err != nil {
		return fmt.Errorf("%w: frame %d does not authenticate", ErrCorrupt, fr.index)
	}
	fr.index++
	if flag == flagFinal {
		var b [1]byte
		switch n, err := io.ReadFull(fr.r, b[:]); {
		case n > 0:
			return fmt.Errorf("%w: data after the final frame", ErrCorrupt)
		case err != io.EOF:
			return fmt.Errorf("read table file: %w", err)
		}
		fr.final = true
	}
	fr.plain = plain
	return nil
}

// finish checks, once the IPC stream has ended, that the file ends with
// it: the final frame was read and holds nothing more.
func (fr *frameReader) finish() error {
	var b [1]byte
	for {
		n, err := fr.Read(b[:])
		if n > 0 {
			return fmt.Errorf("%w: data after the end of the stream", ErrCorrupt)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
