package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/hospital/gateway/engine/atrest"
)

// The gateway's two secrets live in the key directory (options.Keys), never
// in the data directory: whoever copies the data directory, or a backup of
// it, must get neither the key that decrypts the tables nor the key that
// signs the audit log. Either may come from the environment instead, so
// that a secrets manager can hand it over without a file.
const (
	dataKeyEnv  = "GATEWAY_DATA_KEY"  // "sm4-gcm:HEX", as in data.key
	auditKeyEnv = "GATEWAY_AUDIT_KEY" // hex of the SM2 private key's DER, as in audit.key
)

// The files of the key directory.
const (
	dataKeyFile  = "data.key"
	auditKeyFile = "audit.key"
	auditPubFile = "audit.pub" // the public half, for auditors to take a copy of
)

// keysBeside is the default key directory of data directory dir: a sibling
// named DIR-keys, so that the demo starts with no extra step while its keys
// stay out of the data directory. Production configurations name their own.
func keysBeside(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = filepath.Clean(dir)
	}
	return abs + "-keys"
}

// checkKeyPlacement refuses a key directory inside the data directory, and a
// data directory that still holds keys, as gateways before the key
// directory kept them in DIR/keys.
func checkKeyPlacement(dataDir, keys string) error {
	d, err1 := filepath.Abs(dataDir)
	k, err2 := filepath.Abs(keys)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("resolve data and key directories: %w", err)
	}
	if rel, err := filepath.Rel(d, k); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("key directory %s is inside the data directory %s: name one on separate storage (keys: in the configuration, --keys on the command line)", keys, dataDir)
	}
	old := filepath.Join(dataDir, "keys")
	for _, f := range []string{dataKeyFile, auditKeyFile} {
		if _, err := os.Stat(filepath.Join(old, f)); err == nil {
			return fmt.Errorf("%s holds the gateway's keys, which must not sit with the data: move them out (mv %s/* %s/ && rmdir %s) and start again",
				old, old, keys, old)
		}
	}
	return nil
}

// dataKey reads the data-at-rest key from GATEWAY_DATA_KEY or keys/data.key,
// creating the file on first start.
func dataKey(keys string) (atrest.Key, error) {
	if v := os.Getenv(dataKeyEnv); v != "" {
		k, err := atrest.ParseKey(v)
		if err != nil {
			return atrest.Key{}, fmt.Errorf("%s: %w", dataKeyEnv, err)
		}
		return k, nil
	}
	path := filepath.Join(keys, dataKeyFile)
	k, err := atrest.LoadKeyFile(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return atrest.Key{}, err
	}
	if k, err = atrest.NewKey(atrest.SM4GCM); err != nil {
		return atrest.Key{}, err
	}
	if err := atrest.WriteKeyFile(path, k); err != nil {
		return atrest.Key{}, err
	}
	return k, nil
}

// auditKey loads the SM2 key that signs audit chain heads from
// GATEWAY_AUDIT_KEY or keys/audit.key, creating the file (and audit.pub,
// for auditors) on first start.
func auditKey(keys string) (*sm2.PrivateKey, error) {
	if v := os.Getenv(auditKeyEnv); v != "" {
		k, err := parseAuditKey(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", auditKeyEnv, err)
		}
		return k, nil
	}
	path := filepath.Join(keys, auditKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := parseAuditKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("audit signing key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	k, err := sm2.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate audit signing key: %w", err)
	}
	der, err := smx509.MarshalSM2PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode audit signing key: %w", err)
	}
	pub, err := smx509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode audit public key: %w", err)
	}
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	// The public key first: a signing key without it would leave auditors
	// nothing to verify with.
	if err := os.WriteFile(filepath.Join(keys, auditPubFile), []byte(hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write audit public key: %w", err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(der)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write audit signing key: %w", err)
	}
	return k, nil
}

func parseAuditKey(s string) (*sm2.PrivateKey, error) {
	der, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	k, err := smx509.ParseSM2PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse SM2 key: %w", err)
	}
	return k, nil
}
