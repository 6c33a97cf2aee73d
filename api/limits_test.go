package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/hospital/gateway/catalog"
)

// TestConcurrentQueryCap: a person with as many queries running as the cap
// allows is refused the next with 429 too_many_queries, others are not,
// and the place frees once a query answers.
func TestConcurrentQueryCap(t *testing.T) {
	s := New(Config{MaxConcurrentQueries: 2})
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	g := gin.New()
	g.POST("/q/:who", func(c *gin.Context) {
		c.Set(personKey, catalog.Person{ID: c.Param("who"), Roles: []catalog.PersonRole{catalog.Researcher}})
	}, s.limitQueries, func(c *gin.Context) {
		started <- struct{}{}
		<-release
		c.Status(200)
	})
	do := func(who string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest("POST", "/q/"+who, nil))
		return w
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { do("alice") })
		<-started
	}
	w := do("alice")
	var e errorBody
	json.Unmarshal(w.Body.Bytes(), &e)
	if w.Code != http.StatusTooManyRequests || e.Error.Code != "too_many_queries" {
		t.Fatalf("a third query: %d %s", w.Code, w.Body)
	}
	wg.Go(func() {
		if w := do("bob"); w.Code != 200 {
			t.Errorf("another person's query: %d", w.Code)
		}
	})
	<-started
	close(release)
	wg.Wait()
	if w := do("alice"); w.Code != 200 {
		t.Fatalf("after the queries answered: %d", w.Code)
	}
}
