package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The Python client (clients/python) and the notebook
// (examples/first-study.ipynb) are tested here, against a demo gateway
// the test starts, because only this package can start one in-process.
// They need Debian's python3 with python3-pandas, python3-venv and, for the
// notebook, jupyter-nbconvert, python3-ipykernel and python3-matplotlib
// (.ci/run installs them); without them the tests skip, except in CI (CI
// set), where they fail.

// repoRoot is the repository, two levels above this package.
const repoRoot = "../.."

// needTool skips, or in CI fails, the test with why.
func needTool(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// pythonWithPandas is the first python3 that imports pandas: the one
// GATEWAY_PYTHON names, the one on PATH, Debian's.
func pythonWithPandas(t *testing.T) string {
	t.Helper()
	for _, py := range []string{os.Getenv("GATEWAY_PYTHON"), "python3", "/usr/bin/python3"} {
		if py == "" {
			continue
		}
		if err := exec.Command(py, "-c", "import pandas").Run(); err == nil {
			return py
		}
	}
	needTool(t, "no python3 with pandas (apt-get install python3-pandas)")
	return ""
}

// demoEnv starts a demo and returns the environment its Python callers
// find it by: GATEWAY_URL, GATEWAY_TOKEN (the internal researcher's) and
// GATEWAY_CREDENTIALS, the credentials file with everyone's tokens.
func demoEnv(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	stop := startDemo(t, dir, freeAddr(t))
	t.Cleanup(stop)
	path := filepath.Join(dir, "demo-credentials.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return append(os.Environ(), "GATEWAY_URL="+c.BaseURL, "GATEWAY_TOKEN="+c.Tokens["researcher_internal"],
		"GATEWAY_CREDENTIALS="+path)
}

// copyTree copies the directory src to dst, leaving out build output.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if name := d.Name(); d.IsDir() && (name == "build" || name == "__pycache__" || filepath.Ext(name) == ".egg-info") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	t.Logf("%s %v:\n%s", name, args, out)
}

// TestPythonClient installs the client with pip, as the README says, into
// a virtual environment that sees Debian's pandas, and runs its unittest
// suite against a demo, from a directory without the sources so that the
// installed package is what is tested.
func TestPythonClient(t *testing.T) {
	py := pythonWithPandas(t)
	if err := exec.Command(py, "-m", "venv", "--help").Run(); err != nil {
		needTool(t, "python3 has no venv module (apt-get install python3-venv)")
	}
	env := demoEnv(t)
	tmp := t.TempDir()
	src, venv, work := filepath.Join(tmp, "src"), filepath.Join(tmp, "venv"), filepath.Join(tmp, "work")
	copyTree(t, filepath.Join(repoRoot, "clients", "python"), src)
	copyTree(t, filepath.Join(repoRoot, "clients", "python", "tests"), filepath.Join(work, "tests"))
	runCmd(t, tmp, env, py, "-m", "venv", "--system-site-packages", venv)
	// Offline: build with the setuptools and wheel already there.
	runCmd(t, tmp, env, filepath.Join(venv, "bin", "pip"), "install", "--quiet", "--no-index", "--no-build-isolation", src)
	runCmd(t, work, env, filepath.Join(venv, "bin", "python"), "-c",
		"import gateway_client, sys; assert gateway_client.__file__.startswith(sys.prefix), gateway_client.__file__")
	runCmd(t, work, env, filepath.Join(venv, "bin", "python"), "-m", "unittest", "discover", "-v", "-s", "tests", "-t", ".")
}

// TestNotebook executes examples/first-study.ipynb headless against a
// demo; any cell that raises fails the test.
func TestNotebook(t *testing.T) {
	pythonWithPandas(t)
	if err := exec.Command("jupyter", "nbconvert", "--version").Run(); err != nil {
		needTool(t, "jupyter nbconvert is missing (apt-get install jupyter-nbconvert python3-ipykernel python3-matplotlib)")
	}
	env := demoEnv(t)
	out := t.TempDir()
	runCmd(t, filepath.Join(repoRoot, "examples"), env, "jupyter", "nbconvert", "--to", "notebook", "--execute",
		"--ExecutePreprocessor.timeout=300", "--output-dir", out, "--output", "executed", "first-study.ipynb")
	if _, err := os.Stat(filepath.Join(out, "executed.ipynb")); err != nil {
		t.Fatal(err)
	}
}
