package audit

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"testing"
	"time"
)

func TestExport(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, SQLite)
	key := newKey(t)
	l := newLog(t, s.db, Config{Signer: key})
	fill(t, l, 6, func(i int) Entry {
		e := queryEntry(i)
		// HTML-sensitive characters get escaped on the way through most JSON
		// encoders; the export must still verify.
		e.Detail = json.RawMessage(`{"sql":"SELECT a FROM t WHERE x < 3 AND y > 4 & 1"}`)
		return e
	})
	exp, err := l.SignedReport(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(exp.Entries) != 6 {
		t.Fatalf("export has %d entries, want 6", len(exp.Entries))
	}
	asJSON, err := json.Marshal(exp)
	if err != nil {
		t.Fatal(err)
	}
	csvOut, err := l.CSV(exp)
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(t)
	tests := []struct {
		name   string
		verify func() error
		wantOK bool
	}{
		{"json as sent", func() error { return verifyJSON(asJSON, key) }, true},
		{"json with the wrong key", func() error { return verifyJSON(asJSON, other) }, false},
		{"json with an actor changed", func() error {
			return verifyJSON(bytes.Replace(asJSON, []byte(`"researcher"`), []byte(`"intruder"`), 1), key)
		}, false},
		{"json with an entry dropped", func() error {
			var e Export
			json.Unmarshal(asJSON, &e)
			e.Entries = append(e.Entries[:2], e.Entries[3:]...)
			return VerifyExport(e, &key.PublicKey)
		}, false},
		{"csv as sent", func() error { return VerifyCSV(csvOut, &key.PublicKey) }, true},
		{"csv with the wrong key", func() error { return VerifyCSV(csvOut, &other.PublicKey) }, false},
		{"csv with an outcome changed", func() error {
			return VerifyCSV(bytes.Replace(csvOut, []byte(",ok,"), []byte(",forbidden,"), 1), &key.PublicKey)
		}, false},
		{"csv without its signature", func() error {
			return VerifyCSV(csvOut[:bytes.LastIndex(csvOut, []byte("# signature"))], &key.PublicKey)
		}, false},
		{"no key", func() error { return VerifyCSV(csvOut, nil) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.verify(); (err == nil) != tt.wantOK {
				t.Fatalf("verification error %v, want OK %v", err, tt.wantOK)
			}
		})
	}
}

func verifyJSON(b []byte, key crypto.Signer) error {
	var e Export
	if err := json.Unmarshal(b, &e); err != nil {
		return err
	}
	return VerifyExport(e, key.Public())
}
