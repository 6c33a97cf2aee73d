package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hospital/gateway/ingest"
)

// uploadManifest registers m into the running gateway at base through
// POST /v1/datasets/upload, streaming each table's file as a part
// "table:NAME", and prints what the gateway answers.
func uploadManifest(ctx context.Context, base, token string, m ingest.Manifest, stdout io.Writer) error {
	files := m.Files
	m.Files = nil // the server names the uploaded files itself
	manifest, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	var total int64
	for t, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("table %s: %w", t, err)
		}
		total += st.Size()
	}
	pr, pw := io.Pipe()
	form := multipart.NewWriter(pw)
	sent := &counter{}
	go func() {
		pw.CloseWithError(writeForm(form, manifest, files, sent))
	}()
	stop := showProgress(sent, total)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/v1/datasets/upload", pr)
	if err != nil {
		pr.Close()
		return fmt.Errorf("--url %s: %w", base, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", form.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		pr.Close()
		return fmt.Errorf("register into %s: %w", base, err)
	}
	defer resp.Body.Close()
	stop()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the gateway's answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("the gateway refused the registration (%s): %s", e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("the gateway answered %s", resp.Status)
	}
	var r ingest.Registered
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("read the gateway's answer: %w", err)
	}
	d := r.Dataset
	if r.Regraded {
		fmt.Fprintf(stdout, "row count changed by more than %.0f%%: %s is flagged for re-grading (Art. 7)\n", 100*m.RegradeShare, m.Name)
	}
	if r.Pending != nil {
		fmt.Fprintf(stdout, "the new grade or policy lowers protection (%s): it waits for an approver's verification of change %s; the old protection stays in force\n",
			strings.Join(r.Pending.Lowers, ", "), r.Pending.ID)
	}
	fmt.Fprintf(stdout, "registered %s (%s) at %s: %d rows, %d patients, %d bytes read in %s; served now\n",
		d.Name, d.Grade, base, d.Rows, d.Units, r.Bytes, r.Took.Round(time.Millisecond))
	return nil
}

func writeForm(form *multipart.Writer, manifest []byte, files map[string]string, sent *counter) error {
	if err := form.WriteField("manifest", string(manifest)); err != nil {
		return err
	}
	for t, path := range files {
		part, err := form.CreateFormFile("table:"+t, filepath.Base(path))
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("table %s: %w", t, err)
		}
		_, err = io.Copy(io.MultiWriter(part, sent), f)
		f.Close()
		if err != nil {
			return fmt.Errorf("send %s: %w", path, err)
		}
	}
	return form.Close()
}

// counter counts the bytes written through it.
type counter struct{ n atomic.Int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}
