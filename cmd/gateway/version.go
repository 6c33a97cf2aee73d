package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/hospital/gateway/engine"
)

// version is the gateway's release, set at build time with
// -ldflags "-X main.version=v1.2.3"; otherwise it comes from the module's
// build information (a VCS revision when built from a clone).
var version = ""

// gatewayVersion is version, or what the build information says.
func gatewayVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel-" + rev + modified
	}
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}

// runVersion prints the gateway's version, the DuckDB library it embeds
// and the Go toolchain.
func runVersion(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	e, err := engine.Open(ctx, engine.Config{Threads: 1})
	if err != nil {
		return err
	}
	defer e.Close()
	res, err := e.Query(ctx, "SELECT version()", 1)
	if err != nil {
		return fmt.Errorf("ask DuckDB its version: %w", err)
	}
	duck := "unknown"
	if len(res.Rows) == 1 {
		duck = fmt.Sprint(res.Rows[0][0])
	}
	fmt.Fprintf(stdout, "gateway %s\nduckdb %s\n%s %s/%s\n", gatewayVersion(), duck, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
