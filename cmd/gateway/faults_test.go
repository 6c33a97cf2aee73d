package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestFaults runs the gateway as its own process, as an operator would, and
// checks the faults of issue 16: a full disk is named and /healthz fails
// until space is freed; a process killed mid-burst leaves every reserved
// spend in the history; a shutdown mid-query lets the query answer.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway binary")
	}
	bin := buildGateway(t)
	t.Run("full disk", func(t *testing.T) { testFullDisk(t, bin) })
	t.Run("kill mid-burst", func(t *testing.T) { testKillMidBurst(t, bin) })
	t.Run("shutdown mid-query", func(t *testing.T) { testShutdownMidQuery(t, bin) })
}

// buildGateway builds this command into a temporary folder.
func buildGateway(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a gateway process.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc runs bin with args until it answers /healthz (any status).
func startProc(t *testing.T, bin, addr string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("%s exited: %v\n%s", strings.Join(args, " "), err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start\n%s", strings.Join(args, " "), p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends sig and waits for the process to end.
func (p *proc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatalf("the gateway did not stop on %v", sig)
		return nil
	}
}

// demoDir creates a demo directory (data in dir, keys in keys) and
// returns its credentials; the demo process is stopped again.
func demoDir(t *testing.T, bin, dir, keys string, patients int) creds {
	t.Helper()
	addr := freeAddr(t)
	p := startProc(t, bin, addr, "demo", "--dir", dir, "--keys", keys, "--addr", addr, "--patients", fmt.Sprint(patients))
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("demo: %v\n%s", err, p.stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "demo-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c creds
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// serveProc serves dir with the configuration lines extra, on a new
// address, and returns the process and the credentials pointed at it.
func serveProc(t *testing.T, bin, dir, keys string, c creds, extra string) (*proc, creds) {
	t.Helper()
	addr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("addr: "+addr+"\ndir: "+dir+"\nkeys: "+keys+"\n"+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	c.BaseURL = "http://" + addr
	return startProc(t, bin, addr, "serve", "--config", cfg), c
}

func getJSON(t *testing.T, c creds, who, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", c.BaseURL+path, nil)
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+c.Tokens[who])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

type history struct {
	Spent float64 `json:"epsilon_spent"`
	Sum   float64 `json:"epsilon_sum"` // the plain sum the lines add up to

	Queries []struct {
		ID      string  `json:"query_id"`
		Epsilon float64 `json:"epsilon"`
		Outcome string  `json:"outcome"`
		Refusal string  `json:"refusal"`
		Cached  bool    `json:"cached"`
	} `json:"queries"`
}

// cutOff counts h's queries charged and neither released nor refused:
// in flight, or stopped by the end of the process.
func (h history) cutOff() int {
	n := 0
	for _, q := range h.Queries {
		if q.Outcome == "charged_not_released" && q.Refusal == "" {
			n++
		}
	}
	return n
}

// historyOf is the history of who's one grant.
func historyOf(t *testing.T, c creds, who string) history {
	t.Helper()
	var b struct {
		Budgets []struct {
			GrantID string `json:"grant_id"`
		} `json:"budgets"`
	}
	if st := getJSON(t, c, who, "/v1/budgets", &b); st != 200 || len(b.Budgets) != 1 {
		t.Fatalf("budgets: %d %+v", st, b)
	}
	var h history
	if st := getJSON(t, c, who, "/v1/grants/"+b.Budgets[0].GrantID+"/history", &h); st != 200 {
		t.Fatalf("history: %d", st)
	}
	return h
}

// checkAddsUp: the history accounts for every spend of the grant.
func checkAddsUp(t *testing.T, h history) {
	t.Helper()
	sum := 0.0
	for _, q := range h.Queries {
		if !q.Cached {
			sum += q.Epsilon
		}
	}
	if math.Abs(sum-h.Sum) > 1e-9 || h.Spent > h.Sum+1e-9 {
		t.Errorf("the history's %d lines add up to epsilon %.9f; the grant's plain sum is %.9f and it has spent %.9f", len(h.Queries), sum, h.Sum, h.Spent)
	}
}

// mountTmpfs mounts a tmpfs of size MB on dir, or skips when that is not
// possible outside CI.
func mountTmpfs(t *testing.T, dir string, mb int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", mb), "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("cannot mount a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v %s", err, bytes.TrimSpace(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

// fill writes path until the volume is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// The last pages a partial write can take.
	for {
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
}

func testFullDisk(t *testing.T, bin string) {
	root := t.TempDir()
	dir, keys := filepath.Join(root, "data"), filepath.Join(root, "keys")
	mountTmpfs(t, dir, 48)
	c := demoDir(t, bin, dir, keys, 2000)
	p, c := serveProc(t, bin, dir, keys, c, "")
	sql := func(i int) string {
		return fmt.Sprintf(`{"sql": "SELECT count(*) AS n FROM patients WHERE age > %d", "epsilon": 0.001}`, i)
	}
	if st, out := post(t, c, "researcher_internal", sql(0)); st != 200 {
		t.Fatalf("before the disk is full: %d %v", st, out)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// SQLite reuses the space its write-ahead log already has; the writes
	// fail once it needs more. Every write from then on is refused.
	var status int
	var out map[string]any
	for i := 1; i <= 200 && status != http.StatusServiceUnavailable; i++ {
		status, out = post(t, c, "researcher_internal", sql(i))
		if status != 200 && status != http.StatusServiceUnavailable {
			t.Fatalf("a query on a full disk: %d %v, want 200 or 503", status, out)
		}
	}
	if status != http.StatusServiceUnavailable {
		t.Fatal("200 queries on a full disk were all answered")
	}
	e, _ := out["error"].(map[string]any)
	if e["code"] != "unavailable" || !strings.Contains(fmt.Sprint(e["message"]), "full") || !strings.Contains(fmt.Sprint(e["message"]), "free space") {
		t.Errorf("a write on a full disk: %v, want unavailable naming the full disk and what to do", out)
	}
	var health map[string]any
	if st := getJSON(t, c, "", "/healthz", &health); st != http.StatusServiceUnavailable {
		t.Errorf("/healthz on a full disk: %d %v", st, health)
	}
	t.Logf("on a full disk: %v; /healthz: %v", e["message"], health)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for getJSON(t, c, "", "/healthz", nil) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("/healthz did not recover once space was freed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, out := post(t, c, "researcher_internal", sql(300)); st != 200 {
		t.Fatalf("after space was freed: %d %v", st, out)
	}
	checkAddsUp(t, historyOf(t, c, "researcher_internal"))
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("serve: %v\n%s", err, p.stderr.String())
	}
}

// slowSQL is a query that runs for a while inside the sandbox's rules: a
// long string put through upper and lower levels times per encounter.
func slowSQL(levels int) string {
	e := "e.department || '" + strings.Repeat("x", 250) + "'"
	for range levels {
		e = "lower(upper(" + e + "))"
	}
	return "SELECT count(*) AS n FROM encounters e WHERE length(" + e + ") > 7"
}

func testKillMidBurst(t *testing.T, bin string) {
	root := t.TempDir()
	dir, keys := filepath.Join(root, "data"), filepath.Join(root, "keys")
	c := demoDir(t, bin, dir, keys, 2000)
	p, c := serveProc(t, bin, dir, keys, c, "")
	var mu sync.Mutex
	answered := map[string]bool{}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body, _ := json.Marshal(map[string]any{"sql": strings.Replace(slowSQL(2), "> 7", fmt.Sprintf("> %d", w*10000+i), 1), "epsilon": 0.001})
				req, _ := http.NewRequest("POST", c.BaseURL+"/v1/queries", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // the gateway is gone
				}
				var a struct {
					QueryID string `json:"query_id"`
				}
				json.NewDecoder(bufio.NewReader(resp.Body)).Decode(&a)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					answered[a.QueryID] = true
					mu.Unlock()
				}
			}
		})
	}
	// Kill while a query is between its reservation and its release,
	// which the history shows as charged_not_released until the commit:
	// a kill at a fixed time can fall between queries on a loaded machine.
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(30 * time.Second); historyOf(t, c, "researcher_internal").cutOff() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no query was seen between its reservation and its release")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.stop(t, syscall.SIGKILL)
	close(stop)
	wg.Wait()

	p, c = serveProc(t, bin, dir, keys, c, "")
	defer p.stop(t, syscall.SIGTERM)
	h := historyOf(t, c, "researcher_internal")
	checkAddsUp(t, h)
	outcomes := map[string]int{}
	seen := map[string]bool{}
	for _, q := range h.Queries {
		outcomes[q.Outcome]++
		seen[q.ID] = true
		if q.Outcome != "ok" && q.Outcome != "charged_not_released" {
			t.Errorf("history line %s: outcome %s", q.ID, q.Outcome)
		}
	}
	for id := range answered {
		if !seen[id] {
			t.Errorf("answer %s is not in the history", id)
		}
	}
	t.Logf("%d answers before the kill; history after the restart: %v, epsilon spent %.3f", len(answered), outcomes, h.Spent)
	if h.cutOff() == 0 {
		t.Errorf("no query was cut off by the kill (outcomes %v); the burst did not overlap it", outcomes)
	}
}

func testShutdownMidQuery(t *testing.T, bin string) {
	root := t.TempDir()
	dir, keys := filepath.Join(root, "data"), filepath.Join(root, "keys")
	c := demoDir(t, bin, dir, keys, 20000)
	// A query time limit longer than the default drain of 30 s: the drain
	// must follow it.
	p, c := serveProc(t, bin, dir, keys, c, "query_timeout: 40s\n")
	type result struct {
		status int
		out    map[string]any
		at     time.Time
	}
	res := make(chan result, 1)
	go func() {
		body, _ := json.Marshal(map[string]any{"sql": slowSQL(20), "epsilon": 0.01})
		req, _ := http.NewRequest("POST", c.BaseURL+"/v1/queries", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+c.Tokens["researcher_internal"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{status: -1, out: map[string]any{"error": err.Error()}, at: time.Now()}
			return
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		res <- result{resp.StatusCode, out, time.Now()}
	}()
	// SIGTERM once the query is charged and running, however loaded the
	// machine.
	for deadline := time.Now().Add(30 * time.Second); historyOf(t, c, "researcher_internal").cutOff() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the slow query was not seen running")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("serve on SIGTERM: %v", err)
	}
	exited := time.Now()
	r := <-res
	logs := p.stderr.String()
	if !strings.Contains(logs, "for_at_most=45s") {
		t.Errorf("the drain is not the query limit plus 5 s:\n%s", logs)
	}
	if r.status != 200 {
		t.Fatalf("the query under way at SIGTERM: %d %v", r.status, r.out)
	}
	if r.at.After(exited) {
		t.Errorf("the query answered after the process ended")
	}
	t.Logf("SIGTERM while a query ran: it answered %v later, the process ended %v later", r.at.Sub(start).Round(time.Millisecond), exited.Sub(start).Round(time.Millisecond))
	p, c = serveProc(t, bin, dir, keys, c, "")
	defer p.stop(t, syscall.SIGTERM)
	h := historyOf(t, c, "researcher_internal")
	checkAddsUp(t, h)
	id := r.out["query_id"]
	found := false
	for _, q := range h.Queries {
		if q.ID == id {
			found = q.Outcome == "ok"
		}
	}
	if !found {
		t.Errorf("the query answered during the drain is not in the history as ok: %+v", h.Queries)
	}
}
