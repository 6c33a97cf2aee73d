package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emmansun/gmsm/smx509"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/metadb"
)

// runAuditVerify checks the audit log: exit status 0 when intact, 1 naming
// the first bad entry when not.
func runAuditVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("audit verify")
	var opts options
	dataFlags(fs, &opts)
	pubPath := fs.String("public-key", "", "the gateway's audit public key, the auditor's own copy (default KEYS/audit.pub)")
	since := fs.String("since", "", "a checkpoint (from gateway audit checkpoint, the webhook or --save) the log must still extend")
	save := fs.String("save", "", "after a successful check, write the newest signed head to this file as a checkpoint")
	tail := audit.LiveTail(audit.Config{})
	fs.DurationVar(&tail.Age, "max-unsigned", tail.Age, "how old the entries after the last signed head may be (0: the log must end at a signed head)")
	fs.Int64Var(&tail.Entries, "max-unsigned-entries", tail.Entries, "how many entries may follow the last signed head")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := opts.existing(); err != nil {
		return err
	}
	if *pubPath == "" {
		*pubPath = filepath.Join(opts.Keys, auditPubFile)
		if _, err := os.Stat(*pubPath); err != nil {
			return fmt.Errorf("no audit public key at %s: give your own copy with --public-key FILE", *pubPath)
		}
	}
	pub, err := loadPublicKey(*pubPath)
	if err != nil {
		return err
	}
	vo := audit.VerifyOptions{PublicKey: pub, Tail: tail}
	if *since != "" {
		cp, err := loadCheckpoint(*since)
		if err != nil {
			return err
		}
		vo.Since = &cp
	}
	meta, err := metadb.Open(ctx, opts.Metadata)
	if err != nil {
		return err
	}
	defer meta.Close()
	rep, err := audit.VerifyDB(ctx, meta.Writer(), meta.Dialect(), vo)
	if err != nil {
		return err
	}
	if !rep.OK() {
		fmt.Fprintf(stdout, "audit log BROKEN at entry %d: %s\n", rep.FirstBad.Seq, rep.FirstBad.Reason)
		return fmt.Errorf("audit log verification failed at entry %d", rep.FirstBad.Seq)
	}
	fmt.Fprintf(stdout, "audit log intact: %d entries from %d, %d signed heads checked with %s, last signed head %d, %d entries after it, head %s\n",
		rep.Entries, rep.FirstSeq, rep.SignedHeadsChecked, *pubPath, rep.LastSignedSeq, rep.Unsigned, rep.Head)
	if vo.Since != nil {
		fmt.Fprintf(stdout, "extends the checkpoint of %d entries signed at %s\n", vo.Since.Size, vo.Since.Time.Format(time.RFC3339))
	}
	if *save != "" {
		if rep.LastHead == nil {
			return fmt.Errorf("no signed head to save in %s", *save)
		}
		if err := writeCheckpoint(*save, *rep.LastHead); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "checkpoint of %d entries saved in %s\n", rep.LastHead.Size, *save)
	}
	return nil
}

// runAuditCheckpoint signs the audit log's head and prints it as a
// checkpoint, for auditors to keep outside the gateway and give to
// gateway audit verify --since.
func runAuditCheckpoint(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("audit checkpoint")
	var opts options
	dataFlags(fs, &opts)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := opts.existing(); err != nil {
		return err
	}
	if err := checkKeyPlacement(opts.Dir, opts.Keys); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(opts.Keys, auditKeyFile)); err != nil && os.Getenv(auditKeyEnv) == "" {
		return fmt.Errorf("no audit signing key in %s and %s is not set: give the gateway's key directory with --keys", opts.Keys, auditKeyEnv)
	}
	key, err := auditKey(opts.Keys)
	if err != nil {
		return err
	}
	meta, err := metadb.Open(ctx, opts.Metadata)
	if err != nil {
		return err
	}
	defer meta.Close()
	l, err := audit.Open(ctx, meta, audit.Config{Signer: key})
	if err != nil {
		return err
	}
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// loadCheckpoint reads a checkpoint as audit checkpoint prints it, or as
// the webhook posts it ({"kind": "audit.checkpoint", "checkpoint": {...}}).
func loadCheckpoint(path string) (audit.Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("read checkpoint: %w", err)
	}
	var msg struct {
		audit.Checkpoint
		Wrapped *audit.Checkpoint `json:"checkpoint"`
	}
	if err := json.Unmarshal(b, &msg); err != nil {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	cp := msg.Checkpoint
	if msg.Wrapped != nil {
		cp = *msg.Wrapped
	}
	if cp.Size <= 0 || len(cp.Head) == 0 || cp.Signature == "" {
		return audit.Checkpoint{}, fmt.Errorf("checkpoint %s has no size, head or signature", path)
	}
	return cp, nil
}

// writeCheckpoint replaces path with cp, atomically.
func writeCheckpoint(path string, cp audit.Checkpoint) error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// runCheckExport verifies a signed audit export (JSON or CSV) with the
// gateway's public key alone, as an outside reviewer would.
func runCheckExport(args []string, stdout io.Writer) error {
	fs := newFlags("audit check-export")
	pubPath := fs.String("public-key", "", "the gateway's audit public key file (KEYS/audit.pub)")
	if err := parseFlags(fs, args); err != nil {
		return err
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
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	t, err := time.Parse(time.DateOnly, *before)
	if err != nil {
		return usageError{"--before takes a date such as 2025-01-01"}
	}
	if err := opts.existing(); err != nil {
		return err
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
// written to KEYS/audit.pub.
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
