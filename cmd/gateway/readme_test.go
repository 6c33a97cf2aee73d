package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// A README shell block: its first line in the file, its commands, and the
// reason it is not run, when the line before its fence is
// <!-- skip: reason -->.
type shellBlock struct {
	line int
	text string
	skip string
}

var (
	fence     = regexp.MustCompile("^(\\s*)```(sh|bash)\\s*$")
	fenceEnd  = regexp.MustCompile("^\\s*```\\s*$")
	skipNote  = regexp.MustCompile(`^\s*<!--\s*skip:\s*(.+?)\s*-->\s*$`)
	errorCode = regexp.MustCompile(`"code":\s*"([a-z_]+)"`)
)

// shellBlocks reads the ```sh and ```bash blocks of a Markdown file.
func shellBlocks(t *testing.T, path string) []shellBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []shellBlock
	var cur *shellBlock
	var indent, prev string
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
		line := sc.Text()
		switch {
		case cur != nil && fenceEnd.MatchString(line):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(line, indent) + "\n"
		case fence.MatchString(line):
			indent = fence.FindStringSubmatch(line)[1]
			cur = &shellBlock{line: n + 1}
			if m := skipNote.FindStringSubmatch(prev); m != nil {
				cur.skip = m[1]
			}
		}
		if strings.TrimSpace(line) != "" {
			prev = line
		}
	}
	if cur != nil {
		t.Fatalf("%s: the block at line %d is not closed", path, cur.line)
	}
	return out
}

// TestReadmeShellBlocks runs the README's shell blocks, in order and in one
// shell (so that a variable set in one serves the next), against a demo
// gateway, from a folder laid out as a fresh clone. A block that cannot run
// here says why in a <!-- skip: reason --> line before it. Two things are
// replaced, and only these: the demo's address 127.0.0.1:8080 by the
// test's, and the system-wide install path by a temporary one; and GOBIN
// points go install at a temporary folder.
func TestReadmeShellBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway and runs a demo")
	}
	for _, tool := range []string{"bash", "curl", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the README's commands need %s: %v", tool, err)
		}
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	blocks := shellBlocks(t, filepath.Join(repo, "README.md"))
	bin := buildGateway(t)
	work := t.TempDir()
	entries, err := os.ReadDir(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ".git" || strings.HasPrefix(e.Name(), "gateway-data") || strings.HasPrefix(e.Name(), "federation-data") {
			continue
		}
		if err := os.Symlink(filepath.Join(repo, e.Name()), filepath.Join(work, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	addr := freeAddr(t)
	demo := startProc(t, bin, addr, "demo", "--dir", filepath.Join(work, "gateway-data"), "--addr", addr, "--patients", "2000")
	defer demo.stop(t, syscall.SIGTERM)

	replace := strings.NewReplacer("127.0.0.1:8080", addr, "/usr/local/bin/gateway", filepath.Join(work, "bin", "gateway"))
	var script strings.Builder
	script.WriteString("set -eo pipefail\n")
	var run []shellBlock
	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("README line %d: skipped: %s", b.line, b.skip)
			continue
		}
		run = append(run, b)
		fmt.Fprintf(&script, "echo; echo '::block %d::'\n%s", len(run)-1, replace.Replace(b.text))
	}
	if len(run) == 0 {
		t.Fatal("every shell block of the README is skipped")
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"), "GOBIN="+filepath.Join(work, "bin"))
	out, runErr := cmd.CombinedOutput()
	outputs := map[int]string{}
	last := -1
	for _, part := range strings.Split(string(out), "::block ")[1:] {
		var i int
		fmt.Sscanf(part, "%d::", &i)
		outputs[i] = part[strings.Index(part, "::")+2:]
		last = i
	}
	if runErr != nil {
		t.Fatalf("README line %d failed: %v\n%s\n--- output:\n%s", run[last].line, runErr, run[last].text, outputs[last])
	}
	for i, b := range run {
		got := outputs[i]
		t.Logf("README line %d:\n%.300s", b.line, strings.TrimSpace(got))
		// A block whose comments show a refusal must get that refusal;
		// any other must get none.
		want := errorCode.FindStringSubmatch(b.text)
		switch {
		case want != nil && !strings.Contains(got, `"code":"`+want[1]+`"`):
			t.Errorf("README line %d: want a %s refusal, got:\n%s", b.line, want[1], got)
		case want == nil && strings.Contains(got, `"error":`):
			t.Errorf("README line %d answered an error:\n%s\n%s", b.line, b.text, got)
		}
	}
	t.Logf("ran %d of the README's %d shell blocks", len(run), len(blocks))
}
