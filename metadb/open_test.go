package metadb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOpenTogether: gateways opening one new PostgreSQL database at the
// same moment all get their migrations table, none an error from
// PostgreSQL's CREATE TABLE IF NOT EXISTS racing itself.
func TestOpenTogether(t *testing.T) {
	dsn := os.Getenv("GATEWAY_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("GATEWAY_TEST_POSTGRES is not set")
	}
	ctx := context.Background()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	for round := range 5 {
		schema := fmt.Sprintf("open_%d_%d", time.Now().UnixNano(), round)
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := Open(ctx, dsn+sep+"search_path="+schema)
				if err != nil {
					t.Error(err)
					return
				}
				d.Close()
			}()
		}
		wg.Wait()
	}
}
