package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeConfig starts gateway serve from a YAML file on a registered-data
// directory and checks it answers.
func TestServeConfig(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	os.WriteFile(cfg, []byte("addr: "+addr+"\ndir: "+dir+"\nquery_timeout: 5s\nmax_groups: 500\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg}, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v1/openapi.json")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("openapi: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("tls_cert: x.pem\n"), 0o600)
	if err := run(context.Background(), []string{"serve", "--config", bad}, io.Discard, nil); err == nil {
		t.Fatal("half a TLS configuration was accepted")
	}
}

// TestConfigKeysAndSigning reads the key directory, the audit signing
// periods and the process memory limit from the YAML, and refuses a
// period or a size that is not one.
func TestConfigKeysAndSigning(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("dir: /srv/gateway/data\nkeys: /mnt/gateway-keys\naudit:\n  sign_interval: 3s\n  checkpoint_every: 30m\n"), 0o600)
	o, _, err := loadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if o.Keys != "/mnt/gateway-keys" || o.SignInterval != 3*time.Second || o.CheckpointEvery != 30*time.Minute {
		t.Fatalf("options %+v", o)
	}
	os.WriteFile(good, []byte("process_memory_limit: 6GB\n"), 0o600)
	if o, _, err := loadConfig(good); err != nil || o.ProcessMemoryLimit != "6GB" {
		t.Fatalf("process_memory_limit: %q %v", o.ProcessMemoryLimit, err)
	}
	for _, bad := range []string{"audit:\n  sign_interval: soon\n", "audit:\n  checkpoint_every: -1h\n", "process_memory_limit: plenty\n"} {
		path := filepath.Join(dir, "bad.yaml")
		os.WriteFile(path, []byte(bad), 0o600)
		if _, _, err := loadConfig(path); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

// TestConfigPathsRelativeToFile: a configuration's paths are read from its
// own folder, whatever the working directory.
func TestConfigPathsRelativeToFile(t *testing.T) {
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "grades.yaml"), []byte(readFile(t, "../../grades.yaml")), 0o600)
	cfg := filepath.Join(etc, "gateway.yaml")
	os.WriteFile(cfg, []byte("dir: data\nkeys: ../keys\nmetadata: data/meta.db\ngrade_rules: grades.yaml\nimport_dirs: [incoming]\n"), 0o600)
	o, _, err := loadConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{o.Dir: filepath.Join(etc, "data"), o.Keys: filepath.Join(filepath.Dir(etc), "keys"),
		o.Metadata: filepath.Join(etc, "data", "meta.db"), o.ImportDirs[0]: filepath.Join(etc, "incoming")}
	for got, w := range want {
		if got != w {
			t.Errorf("path %s, want %s", got, w)
		}
	}
	os.WriteFile(cfg, []byte("metadata: postgres://gateway@db/gateway\n"), 0o600)
	if o, _, _ := loadConfig(cfg); o.Metadata != "postgres://gateway@db/gateway" {
		t.Errorf("a PostgreSQL URL became %s", o.Metadata)
	}
}

// TestBusyPortFailsFirst: serve binds its address before loading datasets,
// so a busy port fails at once.
func TestBusyPortFailsFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	base := t.TempDir()
	cfg := filepath.Join(base, "gateway.yaml")
	os.WriteFile(cfg, []byte("addr: "+ln.Addr().String()+"\ndir: data\nkeys: keys\n"), 0o600)
	var logs bytes.Buffer
	err = run(context.Background(), []string{"serve", "--config", cfg}, io.Discard, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil || !strings.Contains(err.Error(), "listen on "+ln.Addr().String()) {
		t.Fatalf("serve on a busy port: %v", err)
	}
	if strings.Contains(logs.String(), "dataset loaded") {
		t.Fatalf("datasets loaded before the port was bound:\n%s", logs.String())
	}
}
