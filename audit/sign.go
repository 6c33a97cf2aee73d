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
	"errors"
	"fmt"
	"reflect"

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
func (l *Log) signHead(ctx context.Context, tx *sql.Tx, seq int64, h Digest) error {
	now := l.cfg.Now().UnixMicro()
	sig, err := l.signer.sign(headMessage(seq, h, now))
	if err != nil {
		return fmt.Errorf("sign audit head %d: %w", seq, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_heads (seq, hash, signed_us, sig_alg, public_key, signature)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING`,
		seq, []byte(h), now, l.signer.alg, l.signer.pub, sig)
	if err != nil {
		return fmt.Errorf("store signed audit head %d: %w", seq, err)
	}
	return nil
}

// ErrNoSigner is returned by operations that need the log's signing key
// when Config.Signer was nil.
var ErrNoSigner = errors.New("audit log has no signing key")

// Checkpoint signs the current head of the chain now, unless it is signed
// already or the log is empty.
func (l *Log) Checkpoint(ctx context.Context) error {
	if l.signer == nil {
		return ErrNoSigner
	}
	if err := l.lock(ctx); err != nil {
		return err
	}
	defer l.unlock()
	tx, err := l.beginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var seq int64
	var h []byte
	err = tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1`).Scan(&seq, &h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoint audit log: %w", err)
	}
	var signed int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM audit_heads WHERE seq = $1`, seq).Scan(&signed); err != nil {
		return fmt.Errorf("checkpoint audit log: %w", err)
	}
	if signed > 0 {
		return nil
	}
	if err := l.signHead(ctx, tx, seq, h); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit audit checkpoint: %w", err)
	}
	return nil
}

// Close signs the head, so that entries since the last signature are
// covered too. It does not close the database, which the caller owns.
func (l *Log) Close(ctx context.Context) error {
	if l.signer == nil {
		return nil
	}
	return l.Checkpoint(ctx)
}
