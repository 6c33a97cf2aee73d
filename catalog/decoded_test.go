package catalog_test

import (
	"context"
	"testing"
)

// TestDatasetReadsAreFreshAndOwn checks the memo of decoded datasets: a
// dataset whose policy was tightened is read with the new policy, and a
// caller changing the policy it was given changes nobody else's.
func TestDatasetReadsAreFreshAndOwn(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			seed(t, s)
			d, err := s.Dataset(ctx, "ds")
			if err != nil {
				t.Fatal(err)
			}
			d.Policy.K = 1
			*d.Policy.Tables[0].Columns[1].Max = 99
			d.Policy.Tables[0].Columns[1].Name = "changed"
			again, err := s.Dataset(ctx, "ds")
			if err != nil {
				t.Fatal(err)
			}
			v := again.Policy.Tables[0].Columns[1]
			if again.Policy.K != 5 || v.Name != "v" || *v.Max != 1 {
				t.Fatalf("a caller's change reached the next read: k %d, column %s, max %v", again.Policy.K, v.Name, *v.Max)
			}
			again.Policy.K = 7 // tighter: applied at once
			if err := s.PutDataset(ctx, again, "steward"); err != nil {
				t.Fatal(err)
			}
			now, err := s.Dataset(ctx, "ds")
			if err != nil {
				t.Fatal(err)
			}
			if now.Policy.K != 7 {
				t.Fatalf("k %d after the steward tightened it to 7", now.Policy.K)
			}
		})
	}
}
