package ingest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hospital/gateway/fault"
)

// Where source files may come from. A registration over the API reads
// either files the steward uploaded, which the server writes under names of
// its own inside the upload area (DIR/uploads), or files already on the
// server, but only inside the import directories the configuration names.
// Nothing a caller sends ever becomes part of a path: table names are
// identifiers and upload file names are discarded.

// uploadExts are the source formats an upload may have, by extension.
var uploadExts = []string{".parquet", ".csv", ".arrow"}

// UploadExt returns the extension the server gives an uploaded file, taken
// from the name the client sent, or an error when it is not a source
// format. Only the extension is kept; the rest of the name is discarded.
func UploadExt(clientName string) (string, error) {
	ext := strings.ToLower(filepath.Ext(clientName))
	for _, e := range uploadExts {
		if ext == e {
			return e, nil
		}
	}
	return "", fault.E(fault.Invalid, "uploaded file %.64q must end in one of %v", clientName, uploadExts)
}

// UploadArea creates a fresh directory for one upload inside DIR/uploads
// and returns it; the caller removes it when the registration ends.
func (r *Registrar) UploadArea() (string, error) {
	root := filepath.Join(r.Dir, "uploads")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", fmt.Errorf("create upload area: %w", err)
	}
	dir, err := os.MkdirTemp(root, "upload-")
	if err != nil {
		return "", fmt.Errorf("create upload area: %w", err)
	}
	return dir, nil
}

// ImportPath resolves path, a source file named by a steward, to the real
// file it names, and refuses it unless that file lies inside one of the
// configured import directories (symbolic links are followed before the
// check, so a link cannot lead out). The resolved path is what must be read.
func (r *Registrar) ImportPath(path string) (string, error) {
	if len(r.ImportDirs) == 0 {
		return "", fault.E(fault.Forbidden, "this gateway names no import directories; upload the files with POST /v1/datasets/upload, or set import_dirs in the configuration")
	}
	if !filepath.IsAbs(path) {
		return "", fault.E(fault.Invalid, "source file %.200q must be an absolute path inside an import directory", path)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(path))
	if err != nil {
		return "", fault.E(fault.Invalid, "source file %.200q cannot be read; check that it exists inside an import directory", path)
	}
	for _, d := range r.ImportDirs {
		root, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue // a missing import directory holds nothing
		}
		if within(root, real) {
			st, err := os.Stat(real)
			if err != nil || !st.Mode().IsRegular() {
				return "", fault.E(fault.Invalid, "source file %.200q is not a regular file", path)
			}
			return real, nil
		}
	}
	return "", fault.E(fault.Forbidden, "source file %.200q is outside the import directories %v", path, r.ImportDirs)
}

// within reports whether path lies strictly inside dir; both are clean,
// absolute and free of symbolic links.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
