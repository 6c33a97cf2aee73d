// Package atrest keeps the gateway's tables encrypted on disk. DuckDB in
// this build can read but not securely write encrypted database files, so
// the gateway stores each table as an Arrow IPC stream that it encrypts
// itself, and DuckDB holds plaintext only in memory: Create and Writer
// encrypt record batches into a table file, Open and Reader decrypt them
// back for loading. Core data is sealed with SM4-GCM, the national block
// cipher and the default; AES-256-GCM is the alternative for non-core
// data. Keys live in owner-only key files (WriteKeyFile, LoadKeyFile) or
// come from the environment (ParseKey), as "cipher:HEX".
//
// A table file (format version 1; integers are big-endian) is a header
// followed by frames:
//
//	header:
//	  magic       4 bytes  "GWAT"
//	  version     1 byte   1
//	  name length 1 byte   n, 1..32
//	  cipher      n bytes  "sm4-gcm" or "aes-256-gcm"
//	  file id     16 bytes random
//	  check nonce 12 bytes random
//	  key check   16 bytes AEAD tag over no plaintext, with the header
//	                       up to the file id as associated data
//	  checksum    4 bytes  CRC-32C of all the header bytes before it
//	frame, repeated:
//	  flag        1 byte   1 for the final frame, else 0
//	  length      4 bytes  length of the sealed data, at most 1 MiB + 16
//	  nonce       12 bytes random, fresh for each frame
//	  sealed      AEAD ciphertext and 16-byte tag of up to 1 MiB of the
//	              plaintext Arrow IPC stream
//
// Each frame is sealed with associated data file id || frame index (8
// bytes, from 0) || flag, so frames cannot be reordered, dropped,
// duplicated, moved between files or cut off at the end without the read
// failing with ErrCorrupt; nothing may follow the final frame. The
// checksum tells a damaged header (ErrCorrupt) from a key that does not
// open the file (ErrWrongKey, found by the key check before any frame is
// read). Batches that Reader returns come only from authenticated frames,
// but a table is complete only when Next returns false and Err is nil.
//
// Writer writes to path+".tmp", syncs it and renames it over path on
// Close, so nothing half-written is ever visible at path. Key material
// never appears in errors or in formatted or logged Keys.
package atrest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/emmansun/gmsm/sm4"
)

// Cipher names the AEAD cipher of a key and of the files it seals.
type Cipher string

// The supported ciphers.
const (
	// SM4GCM is SM4 (GB/T 32907) in GCM mode with 16-byte keys, required
	// for core data and the default.
	SM4GCM Cipher = "sm4-gcm"
	// AES256GCM is AES in GCM mode with 32-byte keys.
	AES256GCM Cipher = "aes-256-gcm"
	// DefaultCipher is the cipher NewKey uses when given none.
	DefaultCipher = SM4GCM
)

// KeySize returns the key length in bytes for c, or an error if c is not
// a supported cipher.
func (c Cipher) KeySize() (int, error) {
	switch c {
	case SM4GCM:
		return 16, nil
	case AES256GCM:
		return 32, nil
	}
	return 0, fmt.Errorf("atrest: unknown cipher %q (want %s or %s)", string(c), SM4GCM, AES256GCM)
}

var (
	// ErrCorrupt means a table file is damaged, truncated, tampered with
	// or not a table file at all.
	ErrCorrupt = errors.New("table file is corrupt or was tampered with")
	// ErrWrongKey means the key does not open the table file.
	ErrWrongKey = errors.New("the key does not open this table file")
	// ErrInsecureKeyFile means a key file may be read by its group or by
	// others.
	ErrInsecureKeyFile = errors.New("key file is accessible by group or others")
)

const (
	magic        = "GWAT"
	version      = 1
	maxNameLen   = 32
	idSize       = 16
	nonceSize    = 12
	tagSize      = 16
	crcSize      = 4
	frameSize    = 1 << 20 // plaintext bytes per frame
	frameHdrSize = 1 + 4 + nonceSize
	flagMore     = 0
	flagFinal    = 1
	maxKeyFile   = 4096
)

// headerChecksum is the CRC-32C that ends a file header.
func headerChecksum(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

// Key is a data-at-rest key: Bytes holds 16 bytes for SM4GCM and 32 for
// AES256GCM. Formatting a Key with fmt, logging it with log/slog or
// marshalling it to JSON shows only its cipher.
type Key struct {
	Cipher Cipher
	Bytes  []byte
}

// NewKey returns a new random key for c, or for DefaultCipher if c is
// empty.
func NewKey(c Cipher) (Key, error) {
	if c == "" {
		c = DefaultCipher
	}
	n, err := c.KeySize()
	if err != nil {
		return Key{}, err
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("atrest: generate key: %w", err)
	}
	return Key{Cipher: c, Bytes: b}, nil
}

// ParseKey reads a key written as "cipher:HEX", e.g. "sm4-gcm:" followed
// by 32 hex digits, the format of key files and of environment variables.
// Surrounding white space is ignored. Errors never quote the input.
func ParseKey(s string) (Key, error) {
	name, hx, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Key{}, errors.New(`atrest: a key must look like "sm4-gcm:HEX"`)
	}
	c := Cipher(name)
	n, err := c.KeySize()
	if err != nil {
		return Key{}, err
	}
	// hex errors quote the offending character, so they are not wrapped.
	b, err := hex.DecodeString(hx)
	if err != nil {
		return Key{}, fmt.Errorf("atrest: a %s key must be written in hex", c)
	}
	if len(b) != n {
		return Key{}, fmt.Errorf("atrest: a %s key is %d bytes (%d hex digits), got %d bytes", c, n, 2*n, len(b))
	}
	return Key{Cipher: c, Bytes: b}, nil
}

// LoadKeyFile reads a key file holding one line "cipher:HEX". It refuses,
// with ErrInsecureKeyFile, a file whose mode lets its group or others do
// anything with it.
func LoadKeyFile(path string) (Key, error) {
	// A first look, so that opening a FIFO or device cannot block.
	if st, err := os.Stat(path); err != nil {
		return Key{}, fmt.Errorf("atrest: key file: %w", err)
	} else if !st.Mode().IsRegular() {
		return Key{}, fmt.Errorf("atrest: key file %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return Key{}, fmt.Errorf("atrest: open key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Key{}, fmt.Errorf("atrest: stat key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Key{}, fmt.Errorf("atrest: key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Key{}, fmt.Errorf("atrest: %w: %s has mode %04o; run chmod 600 on it", ErrInsecureKeyFile, path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return Key{}, fmt.Errorf("atrest: read key file %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return Key{}, fmt.Errorf("atrest: key file %s is too large to be a key file", path)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return Key{}, fmt.Errorf("atrest: key file %s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k to path as "cipher:HEX" with mode 0600, creating
// missing directories with mode 0700. It writes a temporary file in the
// same directory, syncs it and renames it over path, so path holds either
// the old content or the complete key.
func WriteKeyFile(path string, k Key) error {
	if err := k.check(); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("atrest: create key directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("atrest: create key file: %w", err)
	}
	tmp := f.Name()
	data := string(k.Cipher) + ":" + hex.EncodeToString(k.Bytes) + "\n"
	_, err = f.WriteString(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atrest: write key file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("atrest: write key file %s: %w", path, err)
	}
	return nil
}

// String returns the cipher and a placeholder instead of the key bytes.
func (k Key) String() string { return string(k.Cipher) + ":<redacted>" }

// GoString is like String, for the %#v verb.
func (k Key) GoString() string { return "atrest.Key{" + k.String() + "}" }

// LogValue is like String, for log/slog.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON is like String: a Key never leaves the process as JSON.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + k.String() + `"`), nil }

// check reports whether k is usable, without revealing it.
func (k Key) check() error {
	n, err := k.Cipher.KeySize()
	if err != nil {
		return err
	}
	if len(k.Bytes) != n {
		return fmt.Errorf("atrest: a %s key is %d bytes, got %d", k.Cipher, n, len(k.Bytes))
	}
	return nil
}

// aead returns the AEAD of k.
func (k Key) aead() (cipher.AEAD, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	var (
		block cipher.Block
		err   error
	)
	switch k.Cipher {
	case SM4GCM:
		block, err = sm4.NewCipher(k.Bytes)
	default:
		block, err = aes.NewCipher(k.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("atrest: init %s: %w", k.Cipher, err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("atrest: init %s: %w", k.Cipher, err)
	}
	return a, nil
}

// frameAD is the associated data of a frame.
func frameAD(dst []byte, id []byte, index uint64, flag byte) []byte {
	dst = append(dst[:0], id...)
	dst = binary.BigEndian.AppendUint64(dst, index)
	return append(dst, flag)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}
