package api

import (
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
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
// named in a JSON manifest (the YAML manifest's fields). Only files inside
// the configured import directories can be named.
func (s *Server) postDataset(c *gin.Context) {
	p := person(c)
	var m catalog.Manifest
	if err := c.ShouldBindJSON(&m); err != nil {
		s.refuse(c, p, "dataset.register", badJSON(err))
		return
	}
	if s.cfg.Registrar == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway does not register datasets over the API"))
		return
	}
	for t, f := range m.Files {
		real, err := s.cfg.Registrar.ImportPath(f)
		if err != nil {
			s.refuse(c, p, "dataset.register", fault.Wrap(fault.KindOf(err), err, "file of table %.64q: %s", t, fault.Message(err)))
			return
		}
		m.Files[t] = real
	}
	s.register(c, p, m)
}

// uploadDataset registers a dataset from uploaded files: a multipart form
// with a "manifest" field (JSON) and one file part per table, named
// "table:NAME", whose file name ends in .parquet, .csv or .arrow. NAME must
// be a table of the manifest; the file is stored under a name the server
// makes, inside a fresh directory of the upload area that is removed when
// the registration ends, whatever its outcome.
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
	form, err := c.MultipartForm()
	if err != nil {
		s.refuse(c, p, "dataset.register", fault.Wrap(fault.Invalid, err, "send a multipart form"))
		return
	}
	// Every part is checked before anything is written.
	type part struct {
		table, ext string
		file       *multipart.FileHeader
	}
	var parts []part
	for field, files := range form.File {
		table, ok := strings.CutPrefix(field, "table:")
		if !ok {
			continue
		}
		if _, declared := m.Policy.Table(table); !catalog.IsIdentifier(table) || !declared {
			s.refuse(c, p, "dataset.register", fault.E(fault.Invalid, "file part %.80q names no table of the manifest; name parts table:NAME for each declared table", field))
			return
		}
		if len(files) != 1 {
			s.refuse(c, p, "dataset.register", fault.E(fault.Invalid, "send one file for table %s, not %d", table, len(files)))
			return
		}
		ext, err := catalog.UploadExt(files[0].Filename)
		if err != nil {
			s.refuse(c, p, "dataset.register", err)
			return
		}
		parts = append(parts, part{table, ext, files[0]})
	}
	tmp, err := s.cfg.Registrar.UploadArea()
	if err != nil {
		s.fail(c, err)
		return
	}
	defer os.RemoveAll(tmp)
	m.Files = map[string]string{}
	for i, pt := range parts {
		dst := filepath.Join(tmp, fmt.Sprintf("%d%s", i, pt.ext))
		if err := saveUpload(func() (multipartFile, error) { return pt.file.Open() }, dst); err != nil {
			s.fail(c, err)
			return
		}
		m.Files[pt.table] = dst
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
