package audit

import (
	"context"
	"testing"
)

// BenchmarkAppend measures durable appends to SQLite with synchronous=FULL,
// each in a transaction of its own, signing the head every 100 entries.
func BenchmarkAppend(b *testing.B) {
	tests := []struct {
		name     string
		hash     string
		parallel bool
	}{
		{name: "sm3", hash: HashSM3},
		{name: "sha256", hash: HashSHA256},
		{name: "sm3-parallel", hash: HashSM3, parallel: true},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			ctx := context.Background()
			s := newStore(b, SQLite)
			l := newLog(b, s.db, Config{Hash: tt.hash, Signer: newKey(b)})
			e := queryEntry(1)
			b.ReportAllocs()
			b.ResetTimer()
			if tt.parallel {
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := l.Append(ctx, e); err != nil {
							b.Error(err)
							return
						}
					}
				})
			} else {
				for b.Loop() {
					if _, err := l.Append(ctx, e); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
