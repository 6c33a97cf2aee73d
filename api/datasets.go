package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
)

// postDataset registers (or reloads) a dataset from files on the server,
// named in a JSON manifest (the YAML manifest's fields).
func (s *Server) postDataset(c *gin.Context) {
	p := person(c)
	var m catalog.Manifest
	if err := c.ShouldBindJSON(&m); err != nil {
		s.refuse(c, p, "dataset.register", badJSON(err))
		return
	}
	for t, f := range m.Files {
		if !filepath.IsAbs(f) {
			s.refuse(c, p, "dataset.register", fault.E(fault.Invalid, "file of table %s must be an absolute path on the server", t))
			return
		}
	}
	s.register(c, p, m)
}

// uploadDataset registers a dataset from uploaded files: a multipart form
// with a "manifest" field (JSON) and one file part per table, named
// "table:NAME", whose file name ends in .parquet, .csv or .arrow.
func (s *Server) uploadDataset(c *gin.Context) {
	p := person(c)
	var m catalog.Manifest
	if err := json.Unmarshal([]byte(c.PostForm("manifest")), &m); err != nil {
		s.refuse(c, p, "dataset.register", fault.Wrap(fault.Invalid, err, "the form needs a manifest field holding the manifest as JSON"))
		return
	}
	if s.cfg.Registrar == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway does not register datasets over the API"))
		return
	}
	tmp, err := os.MkdirTemp(s.cfg.Registrar.Dir, ".upload-")
	if err != nil {
		s.fail(c, fmt.Errorf("upload area: %w", err))
		return
	}
	defer os.RemoveAll(tmp)
	form, err := c.MultipartForm()
	if err != nil {
		s.refuse(c, p, "dataset.register", fault.Wrap(fault.Invalid, err, "send a multipart form"))
		return
	}
	m.Files = map[string]string{}
	for field, files := range form.File {
		table, ok := strings.CutPrefix(field, "table:")
		if !ok || len(files) != 1 {
			continue
		}
		ext := strings.ToLower(filepath.Ext(files[0].Filename))
		dst := filepath.Join(tmp, table+ext)
		if err := saveUpload(func() (multipartFile, error) { return files[0].Open() }, dst); err != nil {
			s.fail(c, err)
			return
		}
		m.Files[table] = dst
	}
	s.register(c, p, m)
}

func saveUpload(open func() (multipartFile, error), dst string) error {
	src, err := open()
	if err != nil {
		return fmt.Errorf("read upload: %w", err)
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("store upload: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return fmt.Errorf("store upload: %w", err)
	}
	return f.Close()
}

type multipartFile = interface {
	io.Reader
	io.Closer
}

func (s *Server) register(c *gin.Context, p catalog.Person, m catalog.Manifest) {
	if s.cfg.Registrar == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway does not register datasets over the API"))
		return
	}
	r, err := s.cfg.Registrar.Register(c.Request.Context(), m, p.ID, io.Discard)
	if err != nil {
		if fault.KindOf(err) == fault.Internal {
			err = fault.Wrap(fault.Invalid, err, "the dataset could not be registered: %v", err)
		}
		s.refuse(c, p, "dataset.register", err)
		return
	}
	if s.cfg.Quota != nil {
		s.cfg.Quota.Forget(m.Name)
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "dataset.register", Dataset: m.Name, Grade: string(m.Grade), Outcome: "ok",
		Detail: detail(map[string]any{"rows": r.Dataset.Rows, "units": r.Dataset.Units, "bytes": r.Bytes, "needs_regrade": r.Dataset.NeedsRegrade})})
	c.JSON(http.StatusCreated, r)
}

// confirmGrade is a steward's (re-)grading: it sets the grade and clears
// the re-grade flag (Art. 7).
func (s *Server) confirmGrade(c *gin.Context) {
	p := person(c)
	var body struct {
		Grade  catalog.Grade `json:"grade"`
		Reason string        `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "dataset.grade", badJSON(err))
		return
	}
	d, err := s.cfg.Store.Regrade(c.Request.Context(), c.Param("name"), body.Grade, p.ID, body.Reason)
	if err != nil {
		s.refuse(c, p, "dataset.grade", err)
		return
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "dataset.grade", Dataset: d.Name, Grade: string(d.Grade), Outcome: "ok",
		Detail: detail(map[string]any{"grade": d.Grade, "reason": body.Reason})})
	c.JSON(http.StatusOK, d)
}

// getReport is the Article 6 catalog report.
func (s *Server) getReport(c *gin.Context) {
	ds, err := s.cfg.Store.Datasets(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"datasets": catalog.Report(ds)})
}
