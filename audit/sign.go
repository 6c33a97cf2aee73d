package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"
)

// The signature algorithms of chain heads, prune records and exports.
const (
	sigSM2     = "sm2-sm3" // SM2 with SM3 and the default user ID (GB/T 32918.2)
	sigECDSA   = "ecdsa-p256-sha256"
	sigEd25519 = "ed25519"
)

// headSigner signs with the configured key.
type headSigner struct {
	s   crypto.Signer
	alg string
	pub []byte // PKIX DER of the public key
}

func newHeadSigner(s crypto.Signer) (*headSigner, error) {
	pub := s.Public()
	alg, err := sigAlgFor(pub)
	if err != nil {
		return nil, err
	}
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode signer's public key: %w", err)
	}
	return &headSigner{s: s, alg: alg, pub: der}, nil
}

// sigAlgFor names the one algorithm this package uses with pub's key type.
func sigAlgFor(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch {
		case sm2.IsSM2PublicKey(k):
			return sigSM2, nil
		case k.Curve == elliptic.P256():
			return sigECDSA, nil
		}
	case ed25519.PublicKey:
		return sigEd25519, nil
	}
	return "", fmt.Errorf("unsupported signing key %T: use SM2, ECDSA P-256 or Ed25519", pub)
}

func (s *headSigner) sign(msg []byte) ([]byte, error) {
	var (
		sig []byte
		err error
	)
	switch s.alg {
	case sigSM2:
		sig, err = s.s.Sign(rand.Reader, msg, sm2.NewSM2SignerOption(true, nil))
	case sigECDSA:
		d := sha256.Sum256(msg)
		sig, err = s.s.Sign(rand.Reader, d[:], crypto.SHA256)
	case sigEd25519:
		sig, err = s.s.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", s.alg, err)
	}
	return sig, nil
}

// verifier checks signatures stored in the log: against a trusted key when
// there is one, else against the key stored beside each signature.
type verifier struct {
	trusted    crypto.PublicKey
	trustedDER []byte
}

func newVerifier(pub crypto.PublicKey) (*verifier, error) {
	if isNilKey(pub) {
		return &verifier{}, nil
	}
	if _, err := sigAlgFor(pub); err != nil {
		return nil, err
	}
	der, err := smx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return &verifier{trusted: pub, trustedDER: der}, nil
}

// isNilKey reports whether pub holds no key, including a typed nil such as
// a nil *ecdsa.PublicKey.
func isNilKey(pub crypto.PublicKey) bool {
	if pub == nil {
		return true
	}
	v := reflect.ValueOf(pub)
	switch v.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Interface, reflect.Map:
		return v.IsNil()
	}
	return false
}

// check returns "" when sig is a valid alg signature of msg by pubDER (and
// pubDER is the trusted key, if there is one), else why not.
func (v *verifier) check(alg string, pubDER, msg, sig []byte) string {
	key := v.trusted
	if key != nil {
		if !bytes.Equal(pubDER, v.trustedDER) {
			return "signed with a key other than the gateway's"
		}
	} else {
		k, err := smx509.ParsePKIXPublicKey(pubDER)
		if err != nil {
			return "unreadable public key"
		}
		key = k
	}
	if !verifySignature(key, alg, msg, sig) {
		return "signature does not verify"
	}
	return ""
}

// verifySignature checks sig with the algorithm that goes with pub's key
// type, which alg must name.
func verifySignature(pub crypto.PublicKey, alg string, msg, sig []byte) bool {
	want, err := sigAlgFor(pub)
	if err != nil || want != alg {
		return false
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if alg == sigSM2 {
			return sm2.VerifyASN1WithSM2(k, nil, msg, sig)
		}
		d := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, d[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	}
	return false
}

// What heads and prune records sign: a tag, then length-prefixed fields.
const (
	headTag  = "hospital-gateway/audit-head/v1"
	pruneTag = "hospital-gateway/audit-prune/v1"
)

func headMessage(seq int64, h Digest, signedUS int64) []byte {
	var enc encoder
	enc.str(headTag)
	enc.int(seq)
	enc.bytes(h)
	enc.int(signedUS)
	return enc.buf
}

func pruneMessage(w watermark) []byte {
	var enc encoder
	enc.str(pruneTag)
	enc.int(w.firstSeq)
	enc.bytes(w.prevHash)
	enc.int(w.prunedUS)
	enc.int(w.entries)
	return enc.buf
}

// signHead stores a signature of the chain head (seq, h) inside tx.
func (l *Log) signHead(ctx context.Context, tx *sql.Tx, seq int64, h Digest) (signedHead, error) {
	now := l.cfg.Now().UnixMicro()
	sig, err := l.signer.sign(headMessage(seq, h, now))
	if err != nil {
		return signedHead{}, fmt.Errorf("sign audit head %d: %w", seq, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_heads (seq, hash, signed_us, sig_alg, public_key, signature)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING`,
		seq, []byte(h), now, l.signer.alg, l.signer.pub, sig)
	if err != nil {
		return signedHead{}, fmt.Errorf("store signed audit head %d: %w", seq, err)
	}
	return signedHead{seq: seq, hash: h, signedUS: now, sigAlg: l.signer.alg, publicKey: l.signer.pub, signature: sig}, nil
}

// ErrNoSigner is returned by operations that need the log's signing key
// when Config.Signer was nil.
var ErrNoSigner = errors.New("audit log has no signing key")

// ErrEmpty is returned by Checkpoint when the log has no entries to sign.
var ErrEmpty = errors.New("audit log is empty: nothing to checkpoint")

// Checkpoint is a signed head of the chain as auditors keep it outside the
// gateway: the log had Size entries (counting pruned ones), the last of
// them hashing to Head, when the gateway signed it at Time. A later
// verification with VerifyOptions.Since proves that the log still extends
// it: entry Size must still hash to Head.
type Checkpoint struct {
	Size int64     `json:"size"`
	Head Digest    `json:"head"`
	Time time.Time `json:"time"`
	// SignatureAlgorithm names the signature scheme, such as "sm2-sm3".
	SignatureAlgorithm string `json:"signature_algorithm"`
	// PublicKey is the signer's key, hex of PKIX DER.
	PublicKey string `json:"public_key"`
	// Signature is hex, over the same message as the stored signed head.
	Signature string `json:"signature"`
}

func (h signedHead) checkpoint() Checkpoint {
	return Checkpoint{Size: h.seq, Head: h.hash, Time: time.UnixMicro(h.signedUS).UTC(), SignatureAlgorithm: h.sigAlg,
		PublicKey: hex.EncodeToString(h.publicKey), Signature: hex.EncodeToString(h.signature)}
}

// check returns "" when c is signed by the trusted key, else why not.
func (c Checkpoint) check(v *verifier) string {
	key, err1 := hex.DecodeString(c.PublicKey)
	sig, err2 := hex.DecodeString(c.Signature)
	if err1 != nil || err2 != nil || len(c.Head) != hashSize || c.Size < 0 {
		return "checkpoint is malformed"
	}
	return v.check(c.SignatureAlgorithm, key, headMessage(c.Size, c.Head, c.Time.UnixMicro()), sig)
}

// Checkpoint signs the current head of the chain, unless it is signed
// already, and returns the newest signed head. It fails with ErrEmpty when
// the log has no entries.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	if l.signer == nil {
		return Checkpoint{}, ErrNoSigner
	}
	// Most calls, from KeepSigned, find the head signed already: look
	// without taking the write lock first.
	if h, err := signedTip(ctx, l.db); err != nil || h != nil {
		if err != nil {
			return Checkpoint{}, fmt.Errorf("checkpoint audit log: %w", err)
		}
		return h.checkpoint(), nil
	}
	if err := l.lock(ctx); err != nil {
		return Checkpoint{}, err
	}
	defer l.unlock()
	tx, err := l.beginWrite(ctx)
	if err != nil {
		return Checkpoint{}, err
	}
	defer tx.Rollback()
	h, err := signedTip(ctx, tx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint audit log: %w", err)
	}
	if h != nil {
		return h.checkpoint(), nil
	}
	var seq int64
	var hash []byte
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Checkpoint{}, ErrEmpty
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint audit log: %w", err)
	}
	sh, err := l.signHead(ctx, tx, seq, hash)
	if err != nil {
		return Checkpoint{}, err
	}
	if err := tx.Commit(); err != nil {
		return Checkpoint{}, fmt.Errorf("commit audit checkpoint: %w", err)
	}
	return sh.checkpoint(), nil
}

// signedTip returns the signed head of the newest entry, nil when the
// newest entry is not signed or there is none.
func signedTip(ctx context.Context, q queryRower) (*signedHead, error) {
	var h signedHead
	var hash []byte
	err := q.QueryRowContext(ctx, `SELECT h.seq, h.hash, h.signed_us, h.sig_alg, h.public_key, h.signature
		FROM audit_heads h WHERE h.seq = (SELECT max(seq) FROM audit_entries)`).Scan(
		&h.seq, &hash, &h.signedUS, &h.sigAlg, &h.publicKey, &h.signature)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read signed audit head: %w", err)
	}
	h.hash = hash
	return &h, nil
}

// KeepSigned signs the head every Config.SignInterval until ctx ends, so
// that entries stay unsigned for at most about that long however few are
// appended. Failures go to onError, which may be nil, and signing goes on
// at the next tick. The caller runs it in a goroutine it waits for.
func (l *Log) KeepSigned(ctx context.Context, onError func(error)) {
	if l.signer == nil {
		if onError != nil {
			onError(ErrNoSigner)
		}
		return
	}
	t := time.NewTicker(l.cfg.SignInterval)
	defer t.Stop()
	for {
		if _, err := l.Checkpoint(ctx); err != nil && !errors.Is(err, ErrEmpty) && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close signs the head, so that entries since the last signature are
// covered too. It does not close the database, which the caller owns.
func (l *Log) Close(ctx context.Context) error {
	if l.signer == nil {
		return nil
	}
	if _, err := l.Checkpoint(ctx); err != nil && !errors.Is(err, ErrEmpty) {
		return err
	}
	return nil
}
