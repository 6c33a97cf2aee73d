package metadb

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
)

// TestKeptStatements: a statement run again, with other arguments, gives
// the answers it would parsed afresh, also while its own rows are open on
// the same connection, and after the schema changed under it.
func TestKeptStatements(t *testing.T) {
	d, _ := open(t)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if err := d.Tx(ctx, insert(fmt.Sprint("k", i), i)); err != nil {
			t.Fatal(err)
		}
	}
	const q = `SELECT k, v FROM t WHERE v >= $1 ORDER BY v`
	err := d.Tx(ctx, func(tx *sql.Tx) error {
		outer, err := tx.Query(q, 3)
		if err != nil {
			return err
		}
		defer outer.Close()
		n := 0
		for outer.Next() {
			n++
			// The same text, while the outer rows are open.
			var c int
			if err := tx.QueryRow(`SELECT count(*) FROM (`+q+`)`, 0).Scan(&c); err != nil || c != 5 {
				return fmt.Errorf("inner count %d %v", c, err)
			}
			inner, err := tx.Query(q, 0)
			if err != nil {
				return err
			}
			m := 0
			for inner.Next() {
				m++
			}
			inner.Close()
			if m != 5 {
				return fmt.Errorf("inner query saw %d rows, want 5", m)
			}
		}
		if n != 2 {
			return fmt.Errorf("outer query saw %d rows, want 2", n)
		}
		return outer.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Writer().Exec(`ALTER TABLE t ADD COLUMN w INTEGER NOT NULL DEFAULT 7`); err != nil {
		t.Fatal(err)
	}
	var k string
	var v int
	if err := d.Writer().QueryRow(q, 4).Scan(&k, &v); err != nil || k != "k4" {
		t.Fatalf("after the schema changed: %s %d %v", k, v, err)
	}
	var w int
	if err := d.Writer().QueryRow(`SELECT w FROM t WHERE v >= $1`, 4).Scan(&w); err != nil || w != 7 {
		t.Fatalf("new column: %d %v", w, err)
	}
}
