package catalog

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/hospital/gateway/fault"
)

// A store that cannot write (a full disk, a read-only or failed volume, a
// PostgreSQL server that is down or out of space) is the operator's to
// fix, not the caller's fault nor a bug: Unavailable names it, and Probe
// is how /healthz finds out, by writing.

var healthMigrations = []string{
	`CREATE TABLE health_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL)`,
}

// Probe writes a row, as every change to the store does, and reports a
// store that cannot write as an error of kind fault.StoreUnavailable.
func (s *Store) Probe(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO health_probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, ts(s.now()))
	if err != nil {
		if u := Unavailable(err); u != nil {
			return u
		}
		return fault.Wrap(fault.StoreUnavailable, err, "the metadata store fails a test write; check the server log")
	}
	return nil
}

// Unavailable returns err as a fault.StoreUnavailable error with a message
// an operator can act on when it is the store failing to read or write,
// and nil otherwise.
func Unavailable(err error) error {
	if err == nil || fault.Is(err, fault.StoreUnavailable) {
		return nil
	}
	msg := ""
	var se *sqlite.Error
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		switch se.Code() & 0xff {
		case 13: // SQLITE_FULL
			msg = "the metadata store's disk is full; free space on the volume of the data directory"
		case 8: // SQLITE_READONLY
			msg = "the metadata store is read-only; check the permissions and mount of the data directory"
		case 10, 14: // SQLITE_IOERR, SQLITE_CANTOPEN
			msg = "the metadata store cannot read or write its file; check the data directory's volume"
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			msg = "the metadata store is locked by another process; stop whatever else has the database open"
		case 11, 26: // SQLITE_CORRUPT, SQLITE_NOTADB
			msg = "the metadata store's file is damaged; restore it from a backup"
		}
	case errors.As(err, &pe):
		switch {
		case pe.Code == "53100":
			msg = "the PostgreSQL server is out of disk space; free space on its volume"
		case pe.Code == "25006":
			msg = "the PostgreSQL server accepts no writes (a read-only standby?); point metadata: at the primary"
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "57"), strings.HasPrefix(pe.Code, "58"):
			msg = "the PostgreSQL server is unavailable (" + pe.Code + "); check it and the network to it"
		}
	case errors.Is(err, syscall.ENOSPC):
		msg = "the disk is full; free space on the volume of the data directory"
	case errors.Is(err, syscall.EROFS):
		msg = "the data directory's volume is read-only; remount it read-write"
	case errors.Is(err, sql.ErrConnDone), strings.Contains(err.Error(), "sql: database is closed"):
		msg = "the metadata store is closed; the gateway is shutting down"
	case errors.As(err, &ne), isConnect(err):
		msg = "the metadata store cannot be reached; check the PostgreSQL server and the network to it"
	}
	if msg == "" {
		return nil
	}
	return fault.Wrap(fault.StoreUnavailable, err, "%s", msg)
}

func isConnect(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// StoreError is what every store failure becomes for a caller: the
// operator's message when the store is unavailable, err unchanged
// otherwise.
func StoreError(err error) error {
	if u := Unavailable(err); u != nil {
		return u
	}
	return err
}
