package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hospital/gateway/metadb"
)

// A backup (Art. 22(2)) is a folder: metadata.db, an online snapshot of the
// SQLite metadata store taken with VACUUM INTO (consistent while the
// gateway runs: one transaction's view); datasets/, the encrypted table
// files as they are on disk, still sealed with the data key; and
// backup.json, which lists every file with its SHA-256. The keys are never
// in it: they are kept separately (see the README), and a restore needs
// the same key directory. With PostgreSQL the metadata is backed up with
// PostgreSQL's own tools (pg_dump, or base backups with WAL archiving);
// the backup then holds the table files only.

// backupManifest is backup.json.
type backupManifest struct {
	CreatedAt time.Time         `json:"created_at"`
	Metadata  string            `json:"metadata"` // "sqlite" or "postgres (not included)"
	Files     map[string]string `json:"files"`    // path in the backup -> SHA-256
}

func runBackup(ctx context.Context, args []string, stdout io.Writer) error {
	flags := newFlags("backup")
	var o options
	dataFlags(flags, &o)
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"backup needs the folder to write, as in gateway backup --dir DIR OUT"}
	}
	if err := o.existing(); err != nil {
		return err
	}
	out := flags.Arg(0)
	if err := os.Mkdir(out, 0o700); err != nil {
		return fmt.Errorf("create backup folder (it must not exist yet): %w", err)
	}
	m := backupManifest{CreatedAt: time.Now().UTC(), Files: map[string]string{}}
	if isPostgres(o.Metadata) {
		m.Metadata = "postgres (not included: back it up with pg_dump or base backups)"
	} else {
		m.Metadata = "sqlite"
		meta, err := metadb.Open(ctx, o.Metadata)
		if err != nil {
			return err
		}
		dst, err := filepath.Abs(filepath.Join(out, "metadata.db"))
		if err != nil {
			meta.Close()
			return err
		}
		_, err = meta.Writer().ExecContext(ctx, "VACUUM INTO '"+strings.ReplaceAll(dst, "'", "''")+"'")
		meta.Close()
		if err != nil {
			return fmt.Errorf("snapshot the metadata store: %w", err)
		}
	}
	src := filepath.Join(o.Dir, "datasets")
	if err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".part") {
			return err
		}
		rel, err := filepath.Rel(o.Dir, path)
		if err != nil {
			return err
		}
		return copyFile(path, filepath.Join(out, rel))
	}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("copy table files: %w", err)
	}
	if err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, path)
		sum, err := sha256File(path)
		m.Files[filepath.ToSlash(rel)] = sum
		return err
	}); err != nil {
		return fmt.Errorf("checksum backup: %w", err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "backup.json"), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write backup.json: %w", err)
	}
	fmt.Fprintf(stdout, "backed up %s (%d files, metadata: %s) to %s; the keys are not in it\n", o.Dir, len(m.Files), m.Metadata, out)
	return nil
}

func runRestore(ctx context.Context, args []string, stdout io.Writer) error {
	flags := newFlags("restore")
	var o options
	dataFlags(flags, &o)
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() != 1 {
		return usageError{"restore needs the backup folder, as in gateway restore --dir NEWDIR BACKUP"}
	}
	o.defaults()
	in := flags.Arg(0)
	b, err := os.ReadFile(filepath.Join(in, "backup.json"))
	if err != nil {
		return fmt.Errorf("read backup.json: %w", err)
	}
	var m backupManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("backup.json: %w", err)
	}
	for rel, want := range m.Files {
		got, err := sha256File(filepath.Join(in, filepath.FromSlash(rel)))
		if err != nil || got != want {
			return fmt.Errorf("backup file %s is missing or changed; nothing was restored", rel)
		}
	}
	if _, err := os.Stat(filepath.Join(o.Dir, "datasets")); err == nil {
		return fmt.Errorf("%s already holds datasets; restore into a new directory", o.Dir)
	}
	if m.Metadata == "sqlite" {
		if isPostgres(o.Metadata) {
			return fmt.Errorf("the backup holds an SQLite store; restore it with --metadata pointing to a file, then migrate")
		}
		if _, err := os.Stat(o.Metadata); err == nil {
			return fmt.Errorf("%s already exists; restore into a new directory", o.Metadata)
		}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	for rel := range m.Files {
		dst := filepath.Join(o.Dir, filepath.FromSlash(rel))
		if rel == "metadata.db" {
			dst = o.Metadata
		}
		if err := copyFile(filepath.Join(in, filepath.FromSlash(rel)), dst); err != nil {
			return fmt.Errorf("restore %s: %w", rel, err)
		}
	}
	fmt.Fprintf(stdout, "restored %d files into %s; start it with the same key directory (--keys) as the gateway it came from\n", len(m.Files), o.Dir)
	return nil
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
