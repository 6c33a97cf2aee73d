package catalog

import (
	"testing"
	"time"
)

// TestMemoKeepsOnlyReadsNoChangeOvertook: a read is kept unless the memo
// forgot, or its own key was updated, after the read began; another
// key's update does not matter, so one researcher's charges do not make
// another's reads miss.
func TestMemoKeepsOnlyReadsNoChangeOvertook(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name   string
		change func(c *memo[int])
		kept   bool
	}{
		{"nothing", func(*memo[int]) {}, true},
		{"another key updated", func(c *memo[int]) { c.update("b", func(*int) bool { return true }) }, true},
		{"its key updated", func(c *memo[int]) { c.update("a", func(*int) bool { return true }) }, false},
		{"forgotten", func(c *memo[int]) { c.forget() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newMemo(time.Minute, 10, func(v int) int { return v })
			st := c.stamp("a")
			tc.change(c)
			c.put("a", 1, st, now)
			if _, ok := c.get("a", now); ok != tc.kept {
				t.Errorf("kept %v, want %v", ok, tc.kept)
			}
		})
	}
	c := newMemo(time.Minute, 10, func(v int) int { return v })
	c.put("a", 1, c.stamp("a"), now)
	if _, ok := c.get("a", now.Add(2*time.Minute)); ok {
		t.Error("an entry older than its ttl was returned")
	}
	c.update("a", func(v *int) bool { *v = 2; return true })
	if v, _ := c.get("a", now); v != 2 {
		t.Errorf("updated entry %d, want 2", v)
	}
	c.update("a", func(*int) bool { return false })
	if _, ok := c.get("a", now); ok {
		t.Error("an entry its update did not fit was kept")
	}
}
