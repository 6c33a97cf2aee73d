package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	d, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.Writer().Exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return d, path
}

func insert(k string, v int) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO t (k, v) VALUES ($1, $2)`, k, v)
		return err
	}
}

func rows(t *testing.T, path string) map[string]int {
	t.Helper()
	// A database opened afresh sees only what was committed.
	d, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rs, err := d.Reader().Query(`SELECT k, v FROM t`)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[string]int{}
	for rs.Next() {
		var k string
		var v int
		if err := rs.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// TestGroupCommit: transactions that wait while a commit is in progress
// share the next commit; each one that failed or panicked is rolled back
// alone, one whose caller gave up before it began is not run, and every
// Tx that returned nil is durable.
func TestGroupCommit(t *testing.T) {
	d, path := open(t)
	ctx := context.Background()
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- d.Tx(ctx, func(tx *sql.Tx) error {
			close(held)
			<-hold
			return insert("first", 0)(tx)
		})
	}()
	<-held
	const n = 40
	errs := make([]error, n)
	var wg sync.WaitGroup
	cancelled, cancel := context.WithCancel(ctx)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn := insert(fmt.Sprint("k", i), i)
			switch {
			case i == 7: // fails after writing
				fn = func(tx *sql.Tx) error {
					if err := insert("k7", 7)(tx); err != nil {
						return err
					}
					return errors.New("refused")
				}
			case i == 8: // violates the key after an earlier write of its own
				fn = func(tx *sql.Tx) error {
					if err := insert("k8", 8)(tx); err != nil {
						return err
					}
					return insert("k8", 8)(tx)
				}
			case i == 9:
				defer func() { errs[i] = fmt.Errorf("panicked: %v", recover()) }()
				fn = func(tx *sql.Tx) error {
					insert("k9", 9)(tx)
					panic("boom")
				}
			case i == 10:
				errs[i] = d.Tx(cancelled, fn)
				return
			}
			errs[i] = d.Tx(ctx, fn)
		}()
	}
	// Let every caller queue behind the held commit.
	time.Sleep(200 * time.Millisecond)
	cancel()
	before := d.group.commits.Load()
	close(hold)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	got := rows(t, path)
	for i, err := range errs {
		k := fmt.Sprint("k", i)
		_, kept := got[k]
		switch i {
		case 7, 8, 9, 10:
			if err == nil || kept {
				t.Errorf("%s: error %v, kept %v; want an error and nothing kept", k, err, kept)
			}
		default:
			if err != nil || !kept {
				t.Errorf("%s: error %v, kept %v; want it committed", k, err, kept)
			}
		}
	}
	if _, ok := got["first"]; !ok {
		t.Error("the first transaction was not kept")
	}
	if c := d.group.commits.Load() - before; c > 3 {
		t.Errorf("%d transactions waiting together took %d commits; want them batched", n, c)
	}
}

// TestGroupCommitSeesEarlierTransactions: a transaction in a batch sees
// what the ones before it in the batch wrote, as it would in turn.
func TestGroupCommitSeesEarlierTransactions(t *testing.T) {
	d, path := open(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := d.Tx(ctx, func(tx *sql.Tx) error {
				_, err := tx.Exec(`INSERT INTO t (k, v) VALUES ('n', 1) ON CONFLICT (k) DO UPDATE SET v = t.v + 1`)
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := rows(t, path)["n"]; got != 50 {
		t.Errorf("50 increments left %d", got)
	}
}

func TestTxAfterClose(t *testing.T) {
	d, _ := open(t)
	d.Close()
	if err := d.Tx(context.Background(), insert("late", 1)); !errors.Is(err, errClosed) {
		t.Errorf("Tx after Close: %v", err)
	}
}

// TestTxDeferred: a deferred transaction commits like any other, alone or
// batched with transactions that wait for the disk, and leaves the
// connection syncing every commit for its other users.
func TestTxDeferred(t *testing.T) {
	d, path := open(t)
	ctx := context.Background()
	if err := d.TxDeferred(ctx, insert("alone", 1)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx := d.Tx
			if i%2 == 0 {
				tx = d.TxDeferred
			}
			if err := tx(ctx, insert(fmt.Sprint("k", i), i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := rows(t, path); len(got) != 21 {
		t.Errorf("%d rows committed, want 21", len(got))
	}
	var sync int
	if err := d.Writer().QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous is %d (%v) after deferred commits, want 2 (FULL)", sync, err)
	}
}
