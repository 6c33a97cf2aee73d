package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/emmansun/gmsm/smx509"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
)

func dialectOf(s *catalog.Store) audit.Dialect {
	if s.Dialect() == catalog.Postgres {
		return audit.Postgres
	}
	return audit.SQLite
}

// auditKey loads the SM2 key that signs audit chain heads, creating it (and
// its public half, for outside verifiers) on first start.
func auditKey(dir string) (*sm2.PrivateKey, error) {
	path := filepath.Join(dir, "keys", "audit.key")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
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
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create key directory: %w", err)
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(der)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write audit signing key: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "keys", "audit.pub"), []byte(hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("write audit public key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit signing key: %w", err)
	}
	der, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	k, err := smx509.ParseSM2PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("audit signing key %s: %w", path, err)
	}
	return k, nil
}

func openAudit(ctx context.Context, store *catalog.Store, key *sm2.PrivateKey) (*audit.Log, error) {
	d := dialectOf(store)
	if err := audit.Migrate(ctx, store.DB(), d); err != nil {
		return nil, err
	}
	return audit.New(ctx, store.DB(), audit.Config{Dialect: d, Signer: key})
}

// runAuditVerify checks the audit log: exit status 0 when intact, 1 naming
// the first bad entry when not.
func runAuditVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("audit verify")
	var opts options
	dataFlags(fs, &opts)
	pubPath := fs.String("public-key", "", "the gateway's audit public key (default DIR/keys/audit.pub)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	local := opts.Metadata == ""
	opts.defaults()
	if _, err := os.Stat(opts.Metadata); local && err != nil {
		return fmt.Errorf("no metadata store at %s: %w", opts.Metadata, err)
	}
	if *pubPath == "" {
		*pubPath = filepath.Join(opts.Dir, "keys", "audit.pub")
	}
	// The public key is optional here: without it, heads are checked
	// against the keys stored beside them.
	var pub *ecdsa.PublicKey
	if _, err := os.Stat(*pubPath); err == nil {
		if pub, err = loadPublicKey(*pubPath); err != nil {
			return err
		}
	}
	store, err := catalog.Open(ctx, opts.Metadata)
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := audit.VerifyDB(ctx, store.DB(), dialectOf(store), audit.VerifyOptions{PublicKey: pub, Tail: audit.LiveTail(audit.Config{})})
	if err != nil {
		return err
	}
	if !rep.OK() {
		fmt.Fprintf(stdout, "audit log BROKEN at entry %d: %s\n", rep.FirstBad.Seq, rep.FirstBad.Reason)
		return fmt.Errorf("audit log verification failed at entry %d", rep.FirstBad.Seq)
	}
	fmt.Fprintf(stdout, "audit log intact: %d entries from %d, %d signed heads checked, head %s\n",
		rep.Entries, rep.FirstSeq, rep.SignedHeadsChecked, rep.Head)
	return nil
}

// runCheckExport verifies a signed audit export (JSON or CSV) with the
// gateway's public key alone, as an outside reviewer would.
func runCheckExport(args []string, stdout io.Writer) error {
	fs := newFlags("audit check-export")
	pubPath := fs.String("public-key", "", "the gateway's audit public key file (keys/audit.pub)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() != 1 || *pubPath == "" {
		return usageError{"audit check-export --public-key FILE EXPORT"}
	}
	pub, err := loadPublicKey(*pubPath)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("read export: %w", err)
	}
	if strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
		var r audit.Export
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("read export: %w", err)
		}
		if err := audit.VerifyExport(r, pub); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "export verified: %d entries from %s to %s\n", len(r.Entries), r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
		return nil
	}
	if err := audit.VerifyCSV(b, pub); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "csv export verified")
	return nil
}

// runPrune deletes audit entries older than --before whose retention date
// has passed; entries still within retention make it refuse, and the
// remaining chain keeps verifying.
func runPrune(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	fs := newFlags("audit prune")
	var opts options
	dataFlags(fs, &opts)
	before := fs.String("before", "", "prune entries older than this date (YYYY-MM-DD)")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	t, err := time.Parse(time.DateOnly, *before)
	if err != nil {
		return usageError{"--before takes a date such as 2025-01-01"}
	}
	g, err := openGateway(ctx, opts, log)
	if err != nil {
		return err
	}
	defer g.Close()
	n, err := g.audit.Prune(ctx, t)
	if err != nil {
		return err
	}
	detail, _ := json.Marshal(map[string]any{"before": *before, "pruned": n})
	if _, err := g.audit.Append(ctx, audit.Entry{Actor: "operator", Action: "audit.prune", Outcome: "ok", Detail: detail}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pruned %d audit entries older than %s\n", n, *before)
	return nil
}

// loadPublicKey reads the gateway's audit public key (hex of PKIX DER), as
// written to keys/audit.pub.
func loadPublicKey(path string) (*ecdsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	der, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	k, err := smx509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s is not an SM2 key", path)
	}
	return pub, nil
}
