package api

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/audit"
	"github.com/hospital/gateway/catalog"
	"github.com/hospital/gateway/fault"
	"github.com/hospital/gateway/ingest"
	"github.com/hospital/gateway/policy"
)

// postDataset registers (or reloads) a dataset from files on the server,
// named in a JSON manifest (the YAML manifest's fields). Only files inside
// the configured import directories can be named.
func (s *Server) postDataset(c *gin.Context) {
	p := person(c)
	var m ingest.Manifest
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
	var m ingest.Manifest
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
		if _, declared := m.Policy.Table(table); !policy.IsIdentifier(table) || !declared {
			s.refuse(c, p, "dataset.register", fault.E(fault.Invalid, "file part %.80q names no table of the manifest; name parts table:NAME for each declared table", field))
			return
		}
		if len(files) != 1 {
			s.refuse(c, p, "dataset.register", fault.E(fault.Invalid, "send one file for table %s, not %d", table, len(files)))
			return
		}
		ext, err := ingest.UploadExt(files[0].Filename)
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

func (s *Server) register(c *gin.Context, p catalog.Person, m ingest.Manifest) {
	if s.cfg.Registrar == nil {
		s.fail(c, fault.E(fault.NotFound, "this gateway does not register datasets over the API"))
		return
	}
	r, err := s.cfg.Registrar.Register(c.Request.Context(), m, p.ID, io.Discard)
	if err != nil {
		if fault.KindOf(err) == fault.Internal && catalog.Unavailable(err) == nil {
			err = fault.Wrap(fault.Invalid, err, "the dataset could not be registered: %v", err)
		}
		s.refuse(c, p, "dataset.register", err)
		return
	}
	if s.cfg.Quota != nil {
		s.cfg.Quota.Forget(m.Name)
	}
	fields := map[string]any{"rows": r.Dataset.Rows, "units": r.Dataset.Units, "bytes": r.Bytes, "needs_regrade": r.Dataset.NeedsRegrade}
	if r.Pending != nil {
		fields["pending_change_id"], fields["lowers"] = r.Pending.ID, r.Pending.Lowers
	}
	s.audit(c.Request.Context(), audit.Entry{Actor: p.ID, Role: roleText(p), Action: "dataset.register", Dataset: m.Name, Grade: string(r.Dataset.Grade), Outcome: "ok",
		Detail: detail(fields)})
	c.JSON(http.StatusCreated, r)
}

// propose files a steward's change of a dataset's protection: 200 with
// the dataset when it applied (it lowers nothing), 202 with the pending
// change when an approver must verify it first.
func (s *Server) propose(c *gin.Context, action, reason string, change func(catalog.Protection) (catalog.Protection, error)) {
	p := person(c)
	o, err := s.cfg.Store.ProposeProtection(c.Request.Context(), c.Param("name"), p.ID, reason, change, func(tx *sql.Tx, o catalog.ProtectionOutcome) error {
		return s.auditDataset(c, tx, action, o.Dataset, func() map[string]any {
			f := map[string]any{"reason": reason, "state": "applied", "grade": o.Dataset.Grade, "exact_answers": o.Dataset.ExactAnswers}
			if o.Change != nil {
				f["state"], f["change_id"], f["lowers"], f["proposed"] = o.Change.State, o.Change.ID, o.Change.Lowers, o.Change.Proposed
			}
			return f
		})
	})
	if err != nil {
		s.refuse(c, p, action, err)
		return
	}
	if o.Change != nil {
		c.JSON(http.StatusAccepted, o)
		return
	}
	c.JSON(http.StatusOK, o.Dataset)
}

// auditDataset writes the audit entry of a change to dataset d inside the
// change's transaction.
func (s *Server) auditDataset(c *gin.Context, tx *sql.Tx, action string, d catalog.Dataset, fields func() map[string]any) error {
	if s.cfg.Audit == nil {
		return nil
	}
	p := person(c)
	e := audit.Entry{Actor: p.ID, Role: roleText(p), Action: action, Dataset: d.Name, Grade: string(d.Grade), Outcome: "ok", Detail: detail(fields())}
	_, err := s.cfg.Audit.AppendTx(c.Request.Context(), tx, stamp(c.Request.Context(), e))
	return err
}

// confirmGrade is a steward's (re-)grading (Art. 7): a grade at least as
// high as the one in force applies at once and clears the re-grade flag; a
// lower one waits for an approver's verification.
func (s *Server) confirmGrade(c *gin.Context) {
	var body struct {
		Grade  policy.Grade `json:"grade"`
		Reason string       `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, person(c), "dataset.grade", badJSON(err))
		return
	}
	s.propose(c, "dataset.grade", body.Reason, func(p catalog.Protection) (catalog.Protection, error) {
		p.Grade = body.Grade
		return p, nil
	})
}

// postPolicy is a steward's change of a dataset's column policy over the
// same tables and columns: a stricter policy applies at once, a looser one
// waits for an approver's verification.
func (s *Server) postPolicy(c *gin.Context) {
	var body struct {
		Policy policy.Policy `json:"policy"`
		Reason string        `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, person(c), "dataset.policy", badJSON(err))
		return
	}
	s.propose(c, "dataset.policy", body.Reason, func(p catalog.Protection) (catalog.Protection, error) {
		if err := sameColumns(p.Policy, body.Policy); err != nil {
			return p, err
		}
		p.Policy = body.Policy
		return p, nil
	})
}

// sameColumns checks that a new policy declares exactly the tables and
// columns of the one in force: those are the files' columns, which only a
// reload changes.
func sameColumns(old, p policy.Policy) error {
	names := func(p policy.Policy) []string {
		var out []string
		for _, t := range p.Tables {
			for _, c := range t.Columns {
				out = append(out, strings.ToLower(t.Name+"."+c.Name))
			}
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(names(old), names(p)) {
		return fault.E(fault.Invalid, "the policy must declare the same tables and columns as the one in force; reload the files to change them")
	}
	return nil
}

// postExact is a steward's request to switch exact answers on or off for a
// dataset: off applies at once, on waits for an approver's verification
// (and the grade's rules must allow exact answers at all).
func (s *Server) postExact(c *gin.Context) {
	var body struct {
		Exact  bool   `json:"exact_answers"`
		Reason string `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, person(c), "dataset.exact", badJSON(err))
		return
	}
	s.propose(c, "dataset.exact", body.Reason, func(p catalog.Protection) (catalog.Protection, error) {
		p.Exact = body.Exact
		return p, nil
	})
}

func (s *Server) listProtectionChanges(c *gin.Context) {
	cs, err := s.cfg.Store.ProtectionChanges(c.Request.Context(), c.Query("dataset"))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changes": cs})
}

// verifyProtection is an approver's verification of a proposal that lowers
// a dataset's protection: it puts the proposal in force.
func (s *Server) verifyProtection(c *gin.Context) {
	p := person(c)
	ch, err := s.cfg.Store.VerifyProtection(c.Request.Context(), c.Param("id"), p.ID, func(tx *sql.Tx, ch catalog.ProtectionChange) error {
		return s.auditDataset(c, tx, "dataset.protection.verify", catalog.Dataset{Name: ch.Dataset, Grade: ch.Proposed.Grade}, func() map[string]any {
			return map[string]any{"change_id": ch.ID, "proposed_by": ch.ProposedBy, "lowers": ch.Lowers, "exact_answers": ch.Proposed.Exact}
		})
	})
	if err != nil {
		s.refuse(c, p, "dataset.protection.verify", err)
		return
	}
	if s.cfg.Quota != nil {
		s.cfg.Quota.Forget(ch.Dataset)
	}
	c.JSON(http.StatusOK, ch)
}

func (s *Server) rejectProtection(c *gin.Context) {
	p := person(c)
	var body struct {
		Reason string `json:"reason"`
	}
	if err := c.ShouldBindJSON(&body); err != nil {
		s.refuse(c, p, "dataset.protection.reject", badJSON(err))
		return
	}
	ch, err := s.cfg.Store.RejectProtection(c.Request.Context(), c.Param("id"), p.ID, body.Reason, func(tx *sql.Tx, ch catalog.ProtectionChange) error {
		return s.auditDataset(c, tx, "dataset.protection.reject", catalog.Dataset{Name: ch.Dataset}, func() map[string]any {
			return map[string]any{"change_id": ch.ID, "proposed_by": ch.ProposedBy, "reason": ch.Decision}
		})
	})
	if err != nil {
		s.refuse(c, p, "dataset.protection.reject", err)
		return
	}
	c.JSON(http.StatusOK, ch)
}

// getReport is the Article 6 catalog report, with each dataset's grade
// history and every proposal to change its protection.
func (s *Server) getReport(c *gin.Context) {
	rep, err := s.cfg.Store.Report(c.Request.Context())
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"datasets": rep})
}
