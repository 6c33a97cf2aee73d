package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryCommandHelp: every command and subcommand answers --help with
// its usage, its flags and an example, and succeeds.
func TestEveryCommandHelp(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name := range commands {
		for _, h := range []string{"--help", "-h"} {
			t.Run(name+" "+h, func(t *testing.T) {
				var out bytes.Buffer
				args := append(strings.Fields(name), h)
				if err := run(context.Background(), args, &out, log); err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				s := out.String()
				if !strings.Contains(s, "Usage: gateway "+name) || !strings.Contains(s, "Example:\n  gateway "+strings.Fields(name)[0]) {
					t.Fatalf("%v printed:\n%s", args, s)
				}
				if name != "version" && !strings.Contains(s, "Flags:\n") {
					t.Fatalf("%v lists no flags:\n%s", args, s)
				}
			})
		}
	}
	for _, group := range []string{"dataset", "audit", "catalog", "federation"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{group, "--help"}, &out, log); err != nil || !strings.Contains(out.String(), "Subcommands:") {
			t.Errorf("%s --help: %v %q", group, err, out.String())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help", "audit", "prune"}, &out, log); err != nil || !strings.Contains(out.String(), "--before") {
		t.Errorf("help audit prune: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"dataset", "frobnicate"}, &out, log); err == nil || !strings.Contains(err.Error(), "--help") {
		t.Errorf("an unknown subcommand: %v", err)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, nil); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "gateway ") || !strings.Contains(s, "\nduckdb v") {
		t.Fatalf("version printed %q", s)
	}
}

// TestMissingStoreNamesDir: a command that reads a gateway says which
// --dir it looked in instead of creating an empty store there.
func TestMissingStoreNamesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nowhere")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, args := range [][]string{
		{"catalog", "report", "--dir", dir},
		{"audit", "verify", "--dir", dir},
		{"audit", "checkpoint", "--dir", dir},
		{"audit", "prune", "--before", "2020-01-01", "--dir", dir},
		{"dataset", "register", "--as", "steward", "--dir", dir, "testdata/clinic.yaml"},
	} {
		err := run(context.Background(), args, io.Discard, log)
		if err == nil || !strings.Contains(err.Error(), "--dir") || !strings.Contains(err.Error(), dir) {
			t.Errorf("%v: %v", args, err)
		}
	}
}

// TestInit: init creates the store and keys outside the data directory and
// prints the first admin's and approver's secrets, once.
func TestInit(t *testing.T) {
	base := t.TempDir()
	dir, keys := filepath.Join(base, "data"), filepath.Join(base, "keys")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"init", "--dir", dir, "--keys", keys}, &out, log); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "enr_"); n != 2 {
		t.Fatalf("init printed %d secrets:\n%s", n, out.String())
	}
	for _, f := range []string{dataKeyFile, auditKeyFile, auditPubFile} {
		if !fileExists(filepath.Join(keys, f)) || fileExists(filepath.Join(dir, f)) {
			t.Errorf("%s is not in the key directory alone", f)
		}
	}
	err := run(context.Background(), []string{"init", "--dir", dir, "--keys", keys}, io.Discard, log)
	if err == nil || !strings.Contains(err.Error(), "already has") {
		t.Fatalf("a second init: %v", err)
	}
	if err := run(context.Background(), []string{"audit", "verify", "--dir", dir, "--keys", keys}, io.Discard, log); err != nil {
		t.Fatalf("the installer's entries do not verify: %v", err)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
