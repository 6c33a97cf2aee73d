package api_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hospital/gateway/api/apitest"
)

// files lists every file and directory under root, relative to it.
func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// uploadParts sends a multipart registration with the given manifest and
// (field, file name) parts, each holding csv.
func uploadParts(t *testing.T, env *apitest.Env, manifest string, parts [][2]string, csv string) int {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	w.WriteField("manifest", manifest)
	for _, p := range parts {
		fw, err := w.CreateFormFile(p[0], p[1])
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(csv))
	}
	w.Close()
	req, _ := http.NewRequest("POST", env.URL+"/v1/datasets/upload", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+env.Tokens["steward"])
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestNoPathEscapes sends uploads and registrations whose table names, file
// names, dataset names and paths try to leave the upload area or the import
// directories, and checks that each is refused (or, for a harmless client
// file name, stored under the server's own name) and that no file appears
// or stays anywhere around the data directory.
func TestNoPathEscapes(t *testing.T) {
	env := apitest.New(t, apitest.Options{Patients: 100})
	// Everything a traversal of a few levels could reach from the upload
	// area lies under watch.
	watch := filepath.Dir(env.Dir)
	before := files(t, watch)
	csv := visitsCSV(50)
	escapeManifest := func(name, table string) string {
		m := strings.Replace(clinicManifest, `"name": "clinic"`, `"name": `+quote(name), 1)
		return strings.Replace(m, `"name": "visits"`, `"name": `+quote(table), 1)
	}
	uploads := []struct {
		name         string
		manifest     string
		field, file  string
		status       int
		registerName string
	}{
		{"table name climbs out", clinicManifest, "table:../../../x", "visits.csv", 400, ""},
		{"table name is absolute", clinicManifest, "table:/tmp/x", "visits.csv", 400, ""},
		{"table name has a slash", clinicManifest, "table:visits/../../x", "visits.csv", 400, ""},
		{"table name is dot-dot", clinicManifest, "table:..", "visits.csv", 400, ""},
		{"table name has a backslash", clinicManifest, `table:..\..\x`, "visits.csv", 400, ""},
		{"table name has a NUL", clinicManifest, "table:visits\x00", "visits.csv", 400, ""},
		{"table not in the manifest", clinicManifest, "table:other", "visits.csv", 400, ""},
		{"file of no source format", clinicManifest, "table:visits", "visits.sh", 400, ""},
		{"manifest table climbs out", escapeManifest("clinic", "../../../x"), "table:../../../x", "x.csv", 400, ""},
		{"manifest dataset climbs out", escapeManifest("../../x", "visits"), "table:visits", "visits.csv", 400, ""},
		{"manifest dataset is absolute", escapeManifest("/tmp/x", "visits"), "table:visits", "visits.csv", 400, ""},
		{"client file name climbs out, but is discarded", clinicManifest, "table:visits", "../../../../escaped.csv", 201, "clinic"},
	}
	for _, tc := range uploads {
		t.Run("upload/"+tc.name, func(t *testing.T) {
			if status := uploadParts(t, env, tc.manifest, [][2]string{{tc.field, tc.file}}, csv); status != tc.status {
				t.Fatalf("status %d, want %d", status, tc.status)
			}
			if left := files(t, filepath.Join(env.Dir, "uploads")); len(left) > 1 {
				t.Errorf("upload area not empty after the registration: %v", left)
			}
		})
	}

	inside := filepath.Join(env.ImportDir, "visits.csv")
	outside := filepath.Join(env.Dir, "secret.csv")
	for _, f := range []string{inside, outside} {
		if err := os.WriteFile(f, []byte(csv), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(env.ImportDir, "link.csv")); err != nil {
		t.Fatal(err)
	}
	before = append(before, files(t, watch)[len(before):]...)
	registrations := []struct {
		name   string
		path   string
		status int
	}{
		{"outside the import directories", outside, 403},
		{"relative path", "import/visits.csv", 400},
		{"climbs out of an import directory", filepath.Join(env.ImportDir, "..", "secret.csv"), 403},
		{"climbs out without cleaning", env.ImportDir + "/../secret.csv", 403},
		{"symbolic link leading out", filepath.Join(env.ImportDir, "link.csv"), 403},
		{"the import directory itself", env.ImportDir, 403},
		{"missing file", filepath.Join(env.ImportDir, "missing.csv"), 400},
		{"system file", "/etc/passwd", 403},
		{"inside an import directory", inside, 201},
	}
	for _, tc := range registrations {
		t.Run("register/"+tc.name, func(t *testing.T) {
			var m map[string]any
			json.Unmarshal([]byte(clinicManifest), &m)
			m["name"] = "by_path"
			m["files"] = map[string]string{"visits": tc.path}
			var out map[string]any
			if status, _ := env.Do("POST", "/v1/datasets", "steward", m, &out); status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, out)
			}
		})
	}

	after := files(t, watch)
	allowed := func(rel string) bool {
		// What a successful registration legitimately writes.
		return strings.HasPrefix(rel, filepath.Join(filepath.Base(env.Dir), "datasets")) ||
			strings.HasPrefix(rel, filepath.Join(filepath.Base(env.Dir), "uploads")) ||
			strings.HasPrefix(rel, filepath.Join(filepath.Base(env.Dir), "meta.db"))
	}
	old := map[string]bool{}
	for _, f := range before {
		old[f] = true
	}
	for _, f := range after {
		if !old[f] && !allowed(f) {
			t.Errorf("new file %s outside the dataset area", f)
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
